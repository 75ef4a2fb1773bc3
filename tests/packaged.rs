//! Every packaged function runs as deployed: the `bootstrap` unpacked from each zip that
//! `scripts/package` builds, under a stand-in for Lambda's Runtime and Extensions APIs, with
//! exactly the variables `infra/template.yaml` gives that function (and those Lambda itself
//! sets), against moto, answering the events the template routes to it: one API Gateway
//! request per route, a REQUEST authorizer event to each authorizer, a DynamoDB Streams batch
//! to the publisher and the schedule's event to scheduled rotation.
//!
//! This catches what the in-process tests cannot: a variable the template forgot, a cargo
//! feature a function was built without, a panic at start-up. With `KEYWARD_AWS_CALL_LOG`
//! set, each function's calls are recorded under its template name for the IAM check.
//!
//! It needs the zips, so `cargo test` skips it; `./scripts/test` packages the functions for
//! this machine and then runs it with `--ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::TimeDelta;
use keyward::domain::{Actor, EnvName, NewKey, RotationPolicy, create_environment, create_key};
use keyward::store::{DynamoStore, KeyStore};
use keyward::testing::orders_key;
use keyward::testing::{LambdaProcess, Provider};
use keyward::testing::{MotoTable, moto_table};
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const ENVIRONMENT: &str = "production";

/// keyward's client id at the OpenID provider.
const PEOPLE_CLIENT: &str = "keyward-console";

/// What the stack is deployed with where a parameter has no default, or where the default
/// leaves the exported authorizer nothing to allow (every route is closed unless listed).
const PARAMETERS: [(&str, &str); 3] = [
    ("AuthorizerEnvironment", ENVIRONMENT),
    ("AuthorizerRouteScopes", r#"{"GET /orders": "orders:read"}"#),
    ("KeyPrefix", KEY_PREFIX),
];

/// The stack's key prefix here: not the default, so that a function that did not read it
/// would make or refuse keys that the others take.
const KEY_PREFIX: &str = "acme";

/// A mint whose keys carry the stack's prefix, as every function's does.
fn mint() -> keyward::domain::Mint {
    keyward::mint().with_key_prefix(keyward::domain::KeyPrefix::parse(KEY_PREFIX).unwrap())
}

/// The template's functions: each one's crate and its variables, resolved.
struct Stack {
    functions: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

impl Stack {
    /// Reads the template, resolving `!Ref` and `!Sub` against the parameters' defaults (and
    /// [`PARAMETERS`]), this test's stack name, table and bus. Anything else is refused, so that a
    /// variable is never guessed.
    fn read(stack_name: &str, table: &str, bus: &str, deployed_with: &[(&str, &str)]) -> Self {
        let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
        let template: Yaml = serde_norway::from_str(&text).unwrap();
        assert!(
            template["Globals"]["Function"]["Environment"].is_null(),
            "the template gives every function variables in Globals, which this test does not add"
        );
        let mut names: BTreeMap<String, String> = template["Parameters"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter_map(|(name, p)| Some((name.as_str()?.to_owned(), scalar(&p["Default"])?)))
            .collect();
        for (name, value) in PARAMETERS.iter().chain(deployed_with) {
            names.insert((*name).to_owned(), (*value).to_owned());
        }
        names.insert("AWS::StackName".to_owned(), stack_name.to_owned());
        names.insert("Table".to_owned(), table.to_owned());
        names.insert("EventBus".to_owned(), bus.to_owned());
        let functions = template["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
            .map(|(name, r)| {
                let name = name.as_str().unwrap().to_owned();
                let uri = r["Properties"]["CodeUri"].as_str().unwrap();
                let krate = uri
                    .trim_start_matches("../target/lambda/")
                    .trim_end_matches("/bootstrap.zip")
                    .to_owned();
                let variables = r["Properties"]["Environment"]["Variables"]
                    .as_mapping()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let k = k.as_str().unwrap().to_owned();
                        let v = resolve(v, &names).unwrap_or_else(|| panic!("{name}: {k}"));
                        (k, v)
                    })
                    .collect();
                (name, (krate, variables))
            })
            .collect();
        Self { functions }
    }
}

fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn resolve(value: &Yaml, names: &BTreeMap<String, String>) -> Option<String> {
    let Yaml::Tagged(tagged) = value else {
        return scalar(value);
    };
    let text = tagged.value.as_str()?;
    match tagged.tag.to_string().as_str() {
        "!Ref" => names.get(text).cloned(),
        "!Sub" => {
            let mut out = String::new();
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                let end = start + rest[start..].find('}')?;
                out.push_str(&rest[..start]);
                out.push_str(names.get(&rest[start + 2..end])?);
                rest = &rest[end + 1..];
            }
            out.push_str(rest);
            Some(out)
        }
        _ => None,
    }
}

/// Unpacks `crate`'s zip as Lambda does (the file's mode kept) and answers its `bootstrap`.
/// The zips are where `KEYWARD_PACKAGED` says (`scripts/package --into`), by default where
/// the template's `CodeUri` finds them.
fn unpack(krate: &str, into: &Path) -> PathBuf {
    let folder = std::env::var("KEYWARD_PACKAGED").unwrap_or_else(|_| "target/lambda".to_owned());
    let zip = root().join(folder).join(krate).join("bootstrap.zip");
    assert!(
        zip.exists(),
        "{} is missing: run scripts/package first (./scripts/test does)",
        zip.display()
    );
    let folder = into.join(krate);
    let script = "import os, sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        for info in z.infolist():\n\
        \x20   path = z.extract(info, sys.argv[2])\n\
        \x20   os.chmod(path, (info.external_attr >> 16) & 0o777)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .arg(&folder)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "{krate}: the zip unpacks");
    folder.join("bootstrap")
}

/// Variables Lambda sets itself, beside the template's and those of the Runtime API that
/// `LambdaProcess` sets, and the stand-ins for AWS.
fn lambda_variables() -> Vec<(String, String)> {
    let mut vars = vec![
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        // Lambda hands a function its role's credentials in these three.
        ("AWS_ACCESS_KEY_ID", "ASIAPACKAGEDEXAMPLE0".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "packaged-example".to_owned()),
        ("AWS_SESSION_TOKEN", "packaged-example-token".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin".to_owned()),
    ];
    for name in ["AWS_ENDPOINT_URL", keyward::aws::calls::VAR] {
        if let Ok(value) = std::env::var(name) {
            vars.push((name, value));
        }
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// One running function of the stack.
struct Deployed<'a> {
    stack: &'a Stack,
    dir: &'a Path,
}

impl Deployed<'_> {
    /// Starts `function` as Lambda would: the template's variables and Lambda's, and nothing
    /// of this process's environment.
    fn start(&self, function: &str) -> LambdaProcess {
        let (krate, variables) = &self.stack.functions[function];
        let bootstrap = unpack(krate, self.dir);
        let mut vars = variables.clone();
        vars.extend(lambda_variables());
        LambdaProcess::start(function, bootstrap.to_str().unwrap(), |command| {
            command.env_clear().envs(&vars);
        })
    }

    /// Hands `function` each event, then stops it as Lambda shuts an environment down
    /// (`SIGTERM`, so that what it holds is written), and answers what it answered.
    fn invoke(&self, function: &str, events: &[String]) -> Vec<Value> {
        let mut lambda = self.start(function);
        let answers: Vec<Value> = events
            .iter()
            .map(|event| {
                let answer = lambda.invoke(event).unwrap_or_else(|| {
                    panic!("{function} never answered; its log:\n{}", lambda.log())
                });
                serde_json::from_str(&answer).unwrap_or_else(|_| {
                    panic!("{function} answered {answer}; its log:\n{}", lambda.log())
                })
            })
            .collect();
        // Lambda sends SIGTERM only to a function with an extension, and the functions that
        // count checks register one (which then waits for events, as Lambda's init needs) so
        // that they write their counts and exit; the others have none and simply end.
        let flushes = ["Authorizer", "ApiAuthorizer", "VerifyKey"].contains(&function);
        assert_eq!(lambda.extension_waits(), flushes, "{function}'s extension");
        lambda.signal("TERM");
        let ended = lambda.wait(std::time::Duration::from_secs(10));
        assert!(
            ended.is_some_and(|status| status.success() || !flushes),
            "{function} ends on SIGTERM ({ended:?}); its log:\n{}",
            lambda.log()
        );
        answers
    }

    /// A route's one answer, whose status must be `status`: its body as JSON.
    fn answer(&self, function: &str, event: String, status: u64) -> Value {
        let answer = self.invoke(function, &[event]).remove(0);
        assert_eq!(answer["statusCode"], status, "{function}: {answer}");
        let body = answer["body"].as_str().unwrap_or_default();
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

/// An API Gateway REST API request to `resource` (with its `{param}`s filled from `params`),
/// carrying `key` and `body`: the create-key fixture with its route changed.
fn rest(method: &str, resource: &str, params: &[(&str, &str)], key: &str, body: Value) -> String {
    let mut event: Value =
        serde_json::from_str(include_str!("../functions/create-key/fixtures/rest.json")).unwrap();
    let path = params
        .iter()
        .fold(resource.to_owned(), |path, (name, value)| {
            path.replace(&format!("{{{name}}}"), value)
        });
    event["resource"] = json!(resource);
    event["path"] = json!(path);
    event["httpMethod"] = json!(method);
    event["requestContext"]["resourcePath"] = json!(resource);
    event["requestContext"]["httpMethod"] = json!(method);
    event["requestContext"]["path"] = json!(format!("/prod{path}"));
    event["pathParameters"] = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let authorization = format!("Bearer {key}");
    event["headers"]["Authorization"] = json!(authorization);
    event["multiValueHeaders"]["Authorization"] = json!([authorization]);
    event["body"] = if body.is_null() {
        Value::Null
    } else {
        json!(body.to_string())
    };
    event.to_string()
}

/// `event` (a REST request or a REQUEST authorizer event) as the console sends it for a
/// signed-in person: no key of its own, the session's cookie, and the console's header.
fn from_console(event: &str, token: &str) -> String {
    let mut event: Value = serde_json::from_str(event).unwrap();
    let cookie = format!("{}={token}", keyward::http::SESSION_COOKIE);
    for headers in ["headers", "multiValueHeaders"] {
        if let Some(headers) = event[headers].as_object_mut() {
            headers.retain(|name, _| !name.eq_ignore_ascii_case("authorization"));
        }
    }
    event["headers"]["Cookie"] = json!(cookie);
    event["headers"][keyward::http::CONSOLE_HEADER] = json!("1");
    if event["multiValueHeaders"].is_object() {
        event["multiValueHeaders"]["Cookie"] = json!([cookie]);
        event["multiValueHeaders"][keyward::http::CONSOLE_HEADER] = json!(["1"]);
    }
    event.to_string()
}

/// A REQUEST authorizer event for `method path` carrying `key`.
fn authorizer_request(method: &str, path: &str, key: &str) -> String {
    include_str!("../functions/authorizer/fixtures/request.json")
        .replace("{{METHOD}}", method)
        .replace("{{PATH}}", path)
        .replace("{{HEADER}}", "Authorization")
        .replace("{{VALUE}}", &format!("Bearer {key}"))
}

fn policy(secret: &str) -> Value {
    json!({"every": "P30D", "grace_period": "24h", "secret_id": format!("keyward/{ENVIRONMENT}/{secret}")})
}

/// A key named `name` whose policy delivers to `secret`, stored as it was `days` ago (so that
/// after 30 its rotation is due), with no claim on its secret, as a key written before
/// claims were.
async fn legacy_policy_key(
    store: &DynamoStore,
    name: &str,
    secret: &str,
    days: i64,
) -> keyward::domain::Issued {
    let input = NewKey {
        rotation_policy: Some(RotationPolicy::from_json(&policy(secret)).unwrap()),
        ..orders_key(name)
    };
    let env = EnvName::parse(ENVIRONMENT).unwrap();
    let then = keyward::now() - TimeDelta::days(days);
    let mut issued = create_key(&env, input, Actor::operator("t"), &mint(), then).unwrap();
    issued.change.secret_claim = None;
    store.apply(&issued.change).await.unwrap();
    issued
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the zips of scripts/package; ./scripts/test packages them, then runs this"]
async fn every_packaged_function_starts_and_answers_as_the_template_wires_it() {
    let aws = keyward::testing::moto_config().await;
    let MotoTable {
        store, name: table, ..
    } = moto_table("packaged").await;
    let bus = format!("packaged-{}", std::process::id());
    aws_sdk_eventbridge::Client::new(&aws)
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .unwrap();
    let env = EnvName::parse(ENVIRONMENT).unwrap();
    let root_key = create_environment(&env, Actor::operator("t"), &mint(), keyward::now());
    store.apply(&root_key.change).await.unwrap();
    let admin = root_key.secret.expose().to_owned();
    let unclaimed = legacy_policy_key(&store, "unclaimed", "unclaimed", 1)
        .await
        .key;
    legacy_policy_key(&store, "scheduled", "scheduled", 40).await;

    // The stack makes the token it shares with GitLab; here it is made by hand, on moto.
    let stack_name = format!("packaged-{}", std::process::id());
    let gitlab_token = "shared-with-gitlab-packaged";
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(format!("{stack_name}-gitlab-revocation-token"))
        .secret_string(gitlab_token)
        .send()
        .await
        .unwrap();
    // People sign in through a real OpenID provider on loopback, as the stack's parameters
    // name it.
    let provider = Provider::start(&[]);
    let stack = Stack::read(
        &stack_name,
        &table,
        &bus,
        &[
            ("OidcIssuer", &provider.issuer),
            ("OidcClientId", PEOPLE_CLIENT),
            ("OidcRoles", r#"{"platform-admins": {"*": ["*"]}}"#),
        ],
    );
    let ada = provider.token(
        PEOPLE_CLIENT,
        "ada",
        &json!({"email": "ada@example.com", "email_verified": true, "groups": ["platform-admins"]}),
    );
    let dir = std::env::temp_dir().join(format!("keyward-packaged-{}", std::process::id()));
    let deployed = Deployed {
        stack: &stack,
        dir: &dir,
    };
    let mut tested = Vec::new();
    let mut ran = |function: &str| tested.push(function.to_owned());

    // keyward's own API, behind its authorizer.
    let allowed = deployed.invoke(
        "ApiAuthorizer",
        &[authorizer_request("GET", "/v1/keys/key_x", &admin)],
    );
    assert_eq!(
        allowed[0]["policyDocument"]["Statement"][0]["Effect"], "Allow",
        "{}",
        allowed[0]
    );
    // A key of the default prefix, well formed and stored, is no key of this stack's.
    let other = create_key(
        &env,
        orders_key("other prefix"),
        Actor::operator("t"),
        &keyward::mint(),
        keyward::now(),
    )
    .unwrap();
    store.apply(&other.change).await.unwrap();
    let refused = deployed.invoke(
        "ApiAuthorizer",
        &[authorizer_request(
            "GET",
            "/v1/keys/key_x",
            other.secret.expose(),
        )],
    );
    assert_eq!(refused[0]["errorMessage"], "Unauthorized", "{}", refused[0]);
    let person = deployed.invoke(
        "ApiAuthorizer",
        &[
            authorizer_request("POST", "/v1/environments/production/keys", &ada),
            authorizer_request("GET", "/v1/keys/key_x", &format!("{ada}x")),
        ],
    );
    assert_eq!(
        (
            &person[0]["policyDocument"]["Statement"][0]["Effect"],
            &person[0]["context"]["person"]
        ),
        (&json!("Allow"), &json!("ada")),
        "{}",
        person[0]
    );
    assert_eq!(person[1]["errorMessage"], "Unauthorized", "{}", person[1]);
    // The console's session: the cookie alone, beside the console's header.
    let session = deployed.invoke(
        "ApiAuthorizer",
        &[from_console(
            &authorizer_request("POST", "/v1/environments/production/keys", "unused"),
            &ada,
        )],
    );
    assert_eq!(session[0]["context"]["person"], "ada", "{}", session[0]);
    ran("ApiAuthorizer");

    let keys = "/v1/environments/{env}/keys";
    let env_param = [("env", ENVIRONMENT)];
    let created = deployed.answer(
        "CreateKey",
        rest("POST", keys, &env_param, &admin, json!({"name": "billing", "scopes": ["orders:read"], "rotation_policy": policy("billing")})),
        201,
    );
    let billing = created["key"]["id"].as_str().unwrap().to_owned();
    let billing_secret = created["secret"].as_str().unwrap().to_owned();
    assert!(billing_secret.starts_with("acme_sk_"), "the stack's prefix");
    ran("CreateKey");

    let listed = deployed.answer(
        "ListKeys",
        rest("GET", keys, &env_param, &admin, Value::Null),
        200,
    );
    assert!(listed["keys"].as_array().unwrap().len() >= 3, "{listed}");
    ran("ListKeys");

    let id = [("key_id", billing.as_str())];
    let got = deployed.answer(
        "GetKey",
        rest("GET", "/v1/keys/{key_id}", &id, &admin, Value::Null),
        200,
    );
    assert_eq!(got["key"]["id"], billing);
    ran("GetKey");

    let verified = deployed.answer(
        "VerifyKey",
        rest(
            "POST",
            "/v1/verify",
            &[],
            &admin,
            json!({"key": billing_secret, "scopes": ["orders:read"]}),
        ),
        200,
    );
    assert_eq!(verified["valid"], true, "{verified}");
    ran("VerifyKey");

    let orders = deployed.invoke(
        "Authorizer",
        &[authorizer_request("GET", "/orders", &billing_secret)],
    );
    assert_eq!(
        orders[0]["policyDocument"]["Statement"][0]["Effect"], "Allow",
        "{}",
        orders[0]
    );
    ran("Authorizer");

    // A rotation delivers the new secret into Secrets Manager; the key whose policy was
    // stored before claims existed reads its environment's keys first.
    let rotate = "/v1/keys/{key_id}/rotate";
    let rotated = deployed.answer(
        "RotateKey",
        rest("POST", rotate, &id, &admin, json!({"grace_period": "1h"})),
        201,
    );
    let successor = rotated["key"]["id"].as_str().unwrap().to_owned();
    let by_hand = [("key_id", unclaimed.id.as_str())];
    deployed.answer(
        "RotateKey",
        rest(
            "POST",
            rotate,
            &by_hand,
            &admin,
            json!({"grace_period": "now"}),
        ),
        201,
    );
    ran("RotateKey");

    let grace = deployed.answer(
        "ChangeGracePeriod",
        rest(
            "PUT",
            "/v1/keys/{key_id}/grace-period",
            &id,
            &admin,
            json!({"grace_period": "24h"}),
        ),
        200,
    );
    assert_eq!(grace["key"]["status"], "in_grace", "{grace}");
    ran("ChangeGracePeriod");

    // The successor holds the secret's claim; once it is revoked, a key created with a
    // policy on that secret, and then a policy set on another key, each take the claim over,
    // on the condition that the key they take it from is unchanged.
    let revoke = "/v1/keys/{key_id}/revoke";
    let successor_id = [("key_id", successor.as_str())];
    let revoked = deployed.answer(
        "RevokeKey",
        rest("POST", revoke, &successor_id, &admin, Value::Null),
        200,
    );
    assert_eq!(revoked["key"]["status"], "revoked", "{revoked}");
    let worker = deployed.answer(
        "CreateKey",
        rest("POST", keys, &env_param, &admin, json!({"name": "worker", "scopes": ["orders:read"], "rotation_policy": policy("billing")})),
        201,
    );
    let worker_id = [("key_id", worker["key"]["id"].as_str().unwrap())];
    deployed.answer(
        "RevokeKey",
        rest("POST", revoke, &worker_id, &admin, Value::Null),
        200,
    );
    ran("RevokeKey");
    let spare = deployed.answer(
        "CreateKey",
        rest(
            "POST",
            keys,
            &env_param,
            &admin,
            json!({"name": "spare", "scopes": ["orders:read"]}),
        ),
        201,
    );
    let spare_id = [("key_id", spare["key"]["id"].as_str().unwrap())];
    let set_policy = "/v1/keys/{key_id}/rotation-policy";
    let taken = deployed.answer(
        "SetRotationPolicy",
        rest(
            "PUT",
            set_policy,
            &spare_id,
            &admin,
            json!({"rotation_policy": policy("billing")}),
        ),
        200,
    );
    assert_eq!(
        taken["key"]["rotation_policy"]["secret_id"], "keyward/production/billing",
        "{taken}"
    );
    ran("SetRotationPolicy");

    let pinned = deployed.answer(
        "SetAllowedIps",
        rest(
            "PUT",
            "/v1/keys/{key_id}/allowed-ips",
            &spare_id,
            &admin,
            json!({"allowed_ips": ["198.51.100.0/24"]}),
        ),
        200,
    );
    assert_eq!(
        pinned["key"]["allowed_ips"],
        json!(["198.51.100.0/24"]),
        "{pinned}"
    );
    ran("SetAllowedIps");

    // A rotation by hand of a key whose policy was stored before claims, on the secret whose
    // claim a revoked key holds, takes the claim over on the same condition.
    deployed.answer(
        "RevokeKey",
        rest("POST", revoke, &spare_id, &admin, Value::Null),
        200,
    );
    let legacy = legacy_policy_key(&store, "legacy", "billing", 0).await.key;
    let legacy_id = [("key_id", legacy.id.as_str())];
    let legacy_rotated = deployed.answer(
        "RotateKey",
        rest(
            "POST",
            rotate,
            &legacy_id,
            &admin,
            json!({"grace_period": "now"}),
        ),
        201,
    );

    let activity = deployed.answer(
        "KeyActivity",
        rest(
            "GET",
            "/v1/keys/{key_id}/activity",
            &id,
            &admin,
            Value::Null,
        ),
        200,
    );
    assert!(
        !activity["entries"].as_array().unwrap().is_empty(),
        "{activity}"
    );
    // A person makes a key through the deployed function, and is its actor.
    let made = deployed.answer(
        "CreateKey",
        rest("POST", keys, &env_param, &ada, json!({"name": "ada's"})),
        201,
    );
    let made = made["key"]["id"].as_str().unwrap();
    let activity = deployed.answer(
        "KeyActivity",
        rest(
            "GET",
            "/v1/keys/{key_id}/activity",
            &[("key_id", made)],
            &ada,
            Value::Null,
        ),
        200,
    );
    assert_eq!(
        activity["entries"][0]["actor"],
        json!({"type": "user", "id": "ada", "name": "ada@example.com"})
    );
    // The same from the console: the function reads the session's cookie.
    deployed.answer(
        "CreateKey",
        from_console(
            &rest(
                "POST",
                keys,
                &env_param,
                "",
                json!({"name": "ada's, from the console"}),
            ),
            &ada,
        ),
        201,
    );
    ran("KeyActivity");
    deployed.answer(
        "EnvironmentActivity",
        rest(
            "GET",
            "/v1/environments/{env}/activity",
            &env_param,
            &admin,
            Value::Null,
        ),
        200,
    );
    ran("EnvironmentActivity");
    deployed.answer(
        "KeyUsage",
        rest("GET", "/v1/keys/{key_id}/usage", &id, &admin, Value::Null),
        200,
    );
    ran("KeyUsage");

    let leaked = deployed.answer(
        "CreateKey",
        rest(
            "POST",
            keys,
            &env_param,
            &admin,
            json!({"name": "leaked", "scopes": ["orders:read"]}),
        ),
        201,
    );
    let leaked_secret = leaked["secret"].as_str().unwrap().to_owned();
    let leaked_id = [("key_id", leaked["key"]["id"].as_str().unwrap())];
    deployed.answer(
        "ReportLeak",
        rest(
            "POST",
            "/v1/leaks/report",
            &[],
            "",
            json!({"secrets": [leaked_secret], "source": "commit"}),
        ),
        202,
    );
    let ended = deployed.answer(
        "GetKey",
        rest("GET", "/v1/keys/{key_id}", &leaked_id, &admin, Value::Null),
        200,
    );
    assert_eq!(ended["key"]["status"], "revoked", "{ended}");
    let unsigned = deployed.answer(
        "ReportLeak",
        rest(
            "POST",
            "/v1/leaks/github",
            &[],
            "",
            json!([{"token": leaked_secret, "type": "t"}]),
        ),
        401,
    );
    assert_eq!(unsigned["error"]["code"], "invalid_signature", "{unsigned}");
    let types = deployed.answer(
        "ReportLeak",
        rest(
            "GET",
            "/v1/leaks/gitlab/revocable_token_types",
            &[],
            gitlab_token,
            Value::Null,
        ),
        200,
    );
    assert_eq!(
        types["types"],
        json!(["gitleaks_rule_id_keyward_secret_key"]),
        "{types}"
    );
    // Under the leak policy rotate, a leaked key whose policy was stored before claims is
    // rotated as a rotation by hand is: one on a secret nobody has claimed reads its
    // environment's keys first; one on the secret whose claim a revoked key holds takes the
    // claim over, on the condition that that key is unchanged.
    let leak_policy = "/v1/environments/{env}/leak-policy";
    let set_leak_policy = |policy: &str| {
        deployed.answer(
            "ReportLeak",
            rest(
                "PUT",
                leak_policy,
                &env_param,
                &admin,
                json!({"leak_policy": policy}),
            ),
            200,
        )
    };
    let rotating = set_leak_policy("rotate");
    assert_eq!(rotating["leak_policy"], "rotate", "{rotating}");
    let holder = [("key_id", legacy_rotated["key"]["id"].as_str().unwrap())];
    deployed.answer(
        "RevokeKey",
        rest("POST", revoke, &holder, &admin, Value::Null),
        200,
    );
    let fresh = legacy_policy_key(&store, "leaked fresh", "leaked-fresh", 0).await;
    let taken_over = legacy_policy_key(&store, "leaked billing", "billing", 0).await;
    deployed.answer(
        "ReportLeak",
        rest(
            "POST",
            "/v1/leaks/report",
            &[],
            "",
            json!({"secrets": [fresh.secret.expose(), taken_over.secret.expose()]}),
        ),
        202,
    );
    for leaked in [&fresh.key, &taken_over.key] {
        let got = deployed.answer(
            "GetKey",
            rest(
                "GET",
                "/v1/keys/{key_id}",
                &[("key_id", leaked.id.as_str())],
                &admin,
                Value::Null,
            ),
            200,
        );
        assert_eq!(
            got["key"]["status"], "expired",
            "rotated with no grace: {got}"
        );
        assert!(got["key"]["rotated_to"].is_string(), "{got}");
    }
    let set = set_leak_policy("notify");
    assert_eq!(set["leak_policy"], "notify", "{set}");
    let read = deployed.answer(
        "ReportLeak",
        rest("GET", leak_policy, &env_param, &admin, Value::Null),
        200,
    );
    assert_eq!(read["leak_policy"], "notify", "{read}");
    ran("ReportLeak");

    for (resource, params) in [
        ("/", vec![]),
        ("/console/{asset}", vec![("asset", "console.js")]),
        ("/v1/openapi.json", vec![]),
        ("/v1/token-format", vec![]),
    ] {
        let answer = deployed.invoke(
            "Console",
            &[rest("GET", resource, &params, "", Value::Null)],
        );
        assert_eq!(answer[0]["statusCode"], 200, "{resource}");
    }
    let format = deployed.invoke(
        "Console",
        &[rest("GET", "/v1/token-format", &[], "", Value::Null)],
    );
    let format: Value = serde_json::from_str(format[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        format["prefix"], KEY_PREFIX,
        "the template's KeyPrefix, as the function reads it: {format}"
    );
    // People sign in to the console through the stack's issuer, and back to its stage.
    let session = deployed.answer(
        "Console",
        from_console(&rest("GET", "/v1/session", &[], "", Value::Null), &ada),
        200,
    );
    assert_eq!(session["person"]["id"], "ada", "{session}");
    let sign_in = deployed.invoke(
        "Console",
        &[rest(
            "GET",
            "/console/{asset}",
            &[("asset", "sign-in")],
            "",
            Value::Null,
        )],
    );
    assert_eq!(sign_in[0]["statusCode"], 302, "{}", sign_in[0]);
    let location = sign_in[0]["multiValueHeaders"]["location"][0]
        .as_str()
        .or(sign_in[0]["headers"]["location"].as_str())
        .unwrap_or_default();
    assert!(
        location.starts_with(&format!("{}/oauth2/authorize?", provider.issuer))
            && location.contains("%2Fprod%2Fconsole%2Fcallback"),
        "{}",
        sign_in[0]
    );
    ran("Console");
    let hello = deployed.invoke(
        "Hello",
        &[include_str!("../functions/hello/fixtures/rest.json").to_owned()],
    );
    assert_eq!(hello[0]["statusCode"], 200, "{}", hello[0]);
    ran("Hello");

    let report = deployed.invoke(
        "ScheduledRotation",
        &[
            include_str!("../functions/scheduled-rotation/fixtures/scheduled-event.json")
                .to_owned(),
        ],
    );
    assert_eq!(
        report[0]["rotated"], 1,
        "the key due 40 days ago: {}",
        report[0]
    );
    assert_eq!(report[0]["failed"], 0, "{}", report[0]);
    ran("ScheduledRotation");

    let published = deployed.invoke(
        "ActivityPublisher",
        &[include_str!("../functions/activity-publisher/fixtures/stream-batch.json").to_owned()],
    );
    assert_eq!(published[0], json!({"batchItemFailures": []}));
    ran("ActivityPublisher");

    tested.sort();
    tested.dedup();
    let deployed_functions: Vec<String> = stack.functions.keys().cloned().collect();
    assert_eq!(
        tested, deployed_functions,
        "every function of the template ran"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
