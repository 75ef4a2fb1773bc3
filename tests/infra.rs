//! The SAM template and the code agree: one function per crate (two of the authorizer), the
//! variables each function reads are set, the table is the one the DynamoDB adapter uses, the
//! authorizer's cache is off, the exported authorizer fails closed and other accounts' APIs
//! may invoke it, the gateway responses are answers openapi.yaml documents, the routes are
//! `keyward serve`'s, every failure sets off an alarm, scheduled runs never overlap, and no
//! policy grants every action. And each function's dependency tree holds only the adapters it
//! uses, and the domain's nothing that does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keyward::aws::TlsRoots;
use keyward::events::EventsConfig;
use keyward::http::Settings;
use keyward::store::StoreConfig;
use keyward::store::dynamodb::table;
use keyward::usage::WRITE_EVERY_VAR;
use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    serde_norway::from_str(&text).expect("the template is YAML")
}

fn resources(template: &Value) -> &serde_norway::Mapping {
    template["Resources"].as_mapping().unwrap()
}

/// The template's functions, by their resource name.
fn functions(template: &Value) -> BTreeMap<String, &Value> {
    resources(template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(name, r)| (name.as_str().unwrap().to_owned(), r))
        .collect()
}

/// The function crates: folder name, and the source of their `main.rs`.
fn crates() -> BTreeMap<String, String> {
    std::fs::read_dir(root().join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("Cargo.toml").exists())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
            let main = std::fs::read_to_string(dir.join("src/main.rs")).unwrap();
            (name, main)
        })
        .collect()
}

/// The function crate whose zip a function resource deploys: its `CodeUri` is the zip that
/// `scripts/package` writes, `../target/lambda/<crate>/bootstrap.zip` from `infra/`.
fn binary<'a>(resource: &str, function: &'a Value) -> &'a str {
    function["Properties"]["CodeUri"]
        .as_str()
        .and_then(|uri| uri.strip_prefix("../target/lambda/"))
        .and_then(|rest| rest.strip_suffix("/bootstrap.zip"))
        .filter(|name| !name.contains('/'))
        .unwrap_or_else(|| panic!("{resource}: CodeUri is not a zip that scripts/package writes"))
}

/// A tagged scalar such as `!Ref Table` or `!GetAtt Table.Arn`, as `(tag, text)`.
fn tagged(value: &Value) -> Option<(String, String)> {
    match value {
        Value::Tagged(t) => Some((t.tag.to_string(), t.value.as_str()?.to_owned())),
        _ => None,
    }
}

/// The crate that brings in each of keyward's adapters.
const ADAPTER_CRATES: [&str; 5] = [
    "rusqlite",
    "aws-sdk-dynamodb",
    "aws-sdk-dynamodbstreams",
    "aws-sdk-eventbridge",
    "aws-sdk-secretsmanager",
];

/// The crates in `package`'s normal dependency tree, resolved as a build of it alone resolves
/// its features, which is how `scripts/package` builds each function.
fn dependencies(package: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args(["--package", package])
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_function_links_only_the_adapters_it_uses() {
    let everything = dependencies("keyward-cli");
    assert_eq!(
        ADAPTER_CRATES.map(|c| everything.contains(c)),
        [true; 5],
        "keyward serve has every adapter, so each name here is a crate that can be found"
    );
    for function in crates().keys() {
        let uses: &[&str] = match function.as_str() {
            "hello" | "console" => &[],
            "activity-publisher" => &["aws-sdk-dynamodb", "aws-sdk-eventbridge"],
            "rotate-key" | "scheduled-rotation" | "report-leak" => {
                &["aws-sdk-dynamodb", "aws-sdk-secretsmanager"]
            }
            _ => &["aws-sdk-dynamodb"],
        };
        let tree = dependencies(function);
        let linked: Vec<&str> = ADAPTER_CRATES
            .into_iter()
            .filter(|c| tree.contains(*c))
            .collect();
        assert_eq!(linked, uses, "{function}");
    }
}

#[test]
fn the_domain_depends_on_nothing_that_does_io() {
    let io = [
        "tokio",
        "mio",
        "hyper",
        "getrandom",
        "rand",
        "libsqlite3-sys",
        "aws-config",
        "aws-smithy-runtime",
        "lambda_runtime",
        "lambda_http",
    ];
    let everything = dependencies("keyward-cli");
    let domain = dependencies("keyward-domain");
    for name in io {
        assert!(
            everything.contains(name),
            "{name} is a crate keyward serve uses"
        );
        assert!(!domain.contains(name), "the domain depends on {name}");
    }
}

#[test]
fn every_function_crate_has_exactly_one_function_resource_and_every_resource_a_crate() {
    let template = template();
    let crates = crates();
    let mut built: Vec<String> = Vec::new();
    for (name, function) in functions(&template) {
        let binary = binary(&name, function);
        assert!(
            crates.contains_key(binary),
            "{name} deploys {binary}, which is no crate in functions/"
        );
        built.push(binary.to_owned());
    }
    built.sort();
    let mut twice = built.clone();
    built.dedup();
    for once in &built {
        let at = twice.iter().position(|b| b == once).unwrap();
        twice.remove(at);
    }
    assert_eq!(
        twice,
        ["authorizer"],
        "only the authorizer runs twice: for keyward's API, and exported for other APIs"
    );
    let expected: Vec<String> = crates.keys().cloned().collect();
    assert_eq!(
        built, expected,
        "a function resource for every crate, no other"
    );
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    assert_eq!(
        tagged(&globals["Architectures"][0]),
        Some(("!Ref".to_owned(), "Architecture".to_owned()))
    );
    assert_eq!(template["Parameters"]["Architecture"]["Default"], "arm64");
}

/// The variables a function's `main` makes it read, from the calls that read them.
fn variables_read(main: &str) -> BTreeSet<&'static str> {
    let people: &[&'static str] = &[
        keyward::http::ISSUER_VAR,
        keyward::http::CLIENT_ID_VAR,
        keyward::http::GROUPS_CLAIM_VAR,
        keyward::http::ROLES_VAR,
    ];
    let readers: [(&str, &[&'static str]); 15] = [
        // The API's functions take people's tokens; verify-key (run_counting) checks only the
        // key in its body.
        ("keyward::http::run(", people),
        ("keyward::http::run_delivering(", people),
        ("config.people()", people),
        // The console signs people in.
        ("keyward::http::people_from_env(", people),
        (
            "keyward::http::run",
            &[
                StoreConfig::VAR,
                Settings::SECRET_PREFIX_VAR,
                keyward::KEY_PREFIX_VAR,
                TlsRoots::VAR,
            ],
        ),
        ("keyward::http::run_counting", &[WRITE_EVERY_VAR]),
        ("Usage::from_env", &[WRITE_EVERY_VAR]),
        ("keyward::aws::config", &[TlsRoots::VAR]),
        ("DynamoStore::table_from_env", &[StoreConfig::VAR]),
        (
            "Settings::from_env",
            &[Settings::SECRET_PREFIX_VAR, keyward::KEY_PREFIX_VAR],
        ),
        ("key_prefix_from_env", &[keyward::KEY_PREFIX_VAR]),
        (
            "GithubKeys::from_env",
            &[keyward::leak::github::KEYS_URL_VAR],
        ),
        ("GitlabToken::from_env", &[keyward::leak::gitlab::TOKEN_VAR]),
        (
            "EventsConfig::from_env",
            &[EventsConfig::BUS_VAR, EventsConfig::SOURCE_VAR],
        ),
        (
            "Config::from_env",
            &[
                authorizer::Config::ENVIRONMENT_VAR,
                authorizer::Config::ROUTE_SCOPES_VAR,
                authorizer::Config::UNLISTED_ROUTES_VAR,
                keyward::KEY_PREFIX_VAR,
            ],
        ),
    ];
    let calls = |call: &str| {
        main.match_indices(call)
            .any(|(at, _)| !main[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
    };
    readers
        .iter()
        .filter(|(call, _)| calls(call))
        .flat_map(|(_, vars)| vars.iter().copied())
        .collect()
}

/// Every `KEYWARD_*` name in the source of the crates that run on Lambda.
fn variables_named_in_code() -> BTreeSet<String> {
    let mut files = vec![root().join("shared/src")];
    files.extend(
        crates()
            .keys()
            .map(|c| root().join("functions").join(c).join("src")),
    );
    let mut names = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices("KEYWARD_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_variable_a_function_reads_is_set_for_it_and_no_other() {
    let known: BTreeSet<&str> = [
        StoreConfig::VAR,
        EventsConfig::BUS_VAR,
        EventsConfig::SOURCE_VAR,
        authorizer::Config::ENVIRONMENT_VAR,
        authorizer::Config::ROUTE_SCOPES_VAR,
        authorizer::Config::UNLISTED_ROUTES_VAR,
        Settings::SECRET_PREFIX_VAR,
        keyward::KEY_PREFIX_VAR,
        TlsRoots::VAR,
        WRITE_EVERY_VAR,
        keyward::leak::github::KEYS_URL_VAR,
        keyward::leak::gitlab::TOKEN_VAR,
        keyward::http::ISSUER_VAR,
        keyward::http::CLIENT_ID_VAR,
        keyward::http::GROUPS_CLAIM_VAR,
        keyward::http::ROLES_VAR,
        // Read only by the tests' OpenID provider (keyward::testing), which no function runs.
        keyward::testing::PROVIDER_VAR,
        // Read by every function that builds an AWS client, set only by ./scripts/test: the
        // record of AWS calls for the IAM check. `set == needed` below keeps it out of the
        // template.
        keyward::aws::calls::VAR,
    ]
    .into();
    for name in variables_named_in_code() {
        assert!(
            known.contains(name.as_str()),
            "{name} is named in the code but this test does not know who reads it"
        );
    }
    let template = template();
    let crates = crates();
    for (resource, function) in functions(&template) {
        let needed = variables_read(&crates[binary(&resource, function)]);
        let set: BTreeSet<&str> = function["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .map(|vars| vars.keys().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            set, needed,
            "{resource}: the variables set are exactly those its code reads"
        );
        let variables = &function["Properties"]["Environment"]["Variables"];
        if needed.contains(TlsRoots::VAR) {
            assert_eq!(
                tagged(&variables[TlsRoots::VAR]),
                Some(("!Ref".to_owned(), "TlsRoots".to_owned())),
                "{resource}"
            );
        }
        if needed.contains(WRITE_EVERY_VAR) {
            assert_eq!(
                tagged(&variables[WRITE_EVERY_VAR]),
                Some(("!Ref".to_owned(), "UsageWriteEvery".to_owned())),
                "{resource}"
            );
        }
        if needed.contains(StoreConfig::VAR) {
            assert_eq!(
                tagged(&variables[StoreConfig::VAR]),
                Some(("!Sub".to_owned(), "dynamodb:${Table}".to_owned())),
                "{resource}"
            );
        }
        if needed.contains(keyward::http::ISSUER_VAR) {
            let parameters = [
                (keyward::http::ISSUER_VAR, "OidcIssuer"),
                (keyward::http::CLIENT_ID_VAR, "OidcClientId"),
                (keyward::http::GROUPS_CLAIM_VAR, "OidcGroupsClaim"),
                (keyward::http::ROLES_VAR, "OidcRoles"),
            ];
            for (var, parameter) in parameters {
                if resource == "Authorizer" {
                    assert_eq!(
                        variables[var], "",
                        "the authorizer other teams attach takes no people's tokens"
                    );
                } else {
                    assert_eq!(
                        tagged(&variables[var]),
                        Some(("!Ref".to_owned(), parameter.to_owned())),
                        "{resource}: {var}"
                    );
                }
            }
        }
        if needed.contains(Settings::SECRET_PREFIX_VAR) {
            assert_eq!(
                tagged(&variables[Settings::SECRET_PREFIX_VAR]),
                Some(("!Ref".to_owned(), "SecretNamePrefix".to_owned())),
                "{resource}: the prefix that policies are held to is the one IAM allows"
            );
        }
    }
}

#[test]
fn the_table_is_the_one_the_dynamodb_adapter_uses() {
    let template = template();
    let t = &resources(&template)["Table"]["Properties"];
    let key_schema = |schema: &Value| -> Vec<(String, String)> {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap().to_owned(),
                    k["KeyType"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |pk: &str, sk: &str| {
        vec![
            (pk.to_owned(), "HASH".to_owned()),
            (sk.to_owned(), "RANGE".to_owned()),
        ]
    };
    assert_eq!(key_schema(&t["KeySchema"]), pair(table::PK, table::SK));
    let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = t["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["IndexName"].as_str().unwrap().to_owned(),
                (
                    key_schema(&i["KeySchema"]),
                    i["Projection"]["ProjectionType"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
            )
        })
        .collect();
    let expected = BTreeMap::from([
        (
            table::GSI1.to_owned(),
            (pair(table::GSI1_PK, table::GSI1_SK), "ALL".to_owned()),
        ),
        (
            table::GSI2.to_owned(),
            (pair(table::GSI2_PK, table::GSI2_SK), "KEYS_ONLY".to_owned()),
        ),
    ]);
    assert_eq!(indexes, expected);
    let defined: BTreeSet<(&str, &str)> = t["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().unwrap(),
                a["AttributeType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        defined,
        table::KEY_ATTRIBUTES.iter().map(|k| (*k, "S")).collect()
    );
    assert_eq!(t["TimeToLiveSpecification"]["AttributeName"], table::TTL);
    assert_eq!(t["TimeToLiveSpecification"]["Enabled"], true);
    assert_eq!(
        t["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    assert_eq!(t["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        t["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(t["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(
        tagged(&t["DeletionProtectionEnabled"]),
        Some(("!Ref".to_owned(), "DeletionProtection".to_owned()))
    );
}

#[test]
fn the_api_authorizer_caches_nothing_and_the_routes_are_serves_routes() {
    let template = template();
    let api = &resources(&template)["Api"]["Properties"];
    let authorizers = api["Auth"]["Authorizers"].as_mapping().unwrap();
    assert_eq!(authorizers.len(), 1);
    let (name, authorizer) = authorizers.iter().next().unwrap();
    assert_eq!(api["Auth"]["DefaultAuthorizer"], *name);
    assert_eq!(authorizer["Identity"]["ReauthorizeEvery"], 0);
    assert_eq!(
        tagged(&authorizer["FunctionArn"]),
        Some(("!GetAtt".to_owned(), "ApiAuthorizer.Arn".to_owned())),
        "keyward's API uses its own authorizer, not the exported one"
    );
    for (status, code) in [("UNAUTHORIZED", 401), ("ACCESS_DENIED", 403)] {
        assert_eq!(api["GatewayResponses"][status]["StatusCode"], code);
    }

    let mut routes = BTreeSet::new();
    for (resource, function) in functions(&template) {
        let Some(events) = function["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for event in events.values().filter(|e| e["Type"] == "Api") {
            let p = &event["Properties"];
            let route = (
                p["Method"].as_str().unwrap().to_owned(),
                p["Path"].as_str().unwrap().to_owned(),
            );
            let public = p["Auth"]["Authorizer"] == "NONE";
            routes.insert((route.0.clone(), route.1.clone(), resource.clone()));
            assert_eq!(
                public,
                [
                    "/v1/verify",
                    "/v1/leaks/report",
                    "/v1/leaks/github",
                    "/v1/leaks/gitlab/revocable_token_types",
                    "/v1/leaks/gitlab/revoke_tokens",
                    "/v1/openapi.json",
                    "/v1/token-format",
                    "/v1/session",
                    "/",
                    "/console/{asset}"
                ]
                .contains(&route.1.as_str()),
                "{resource}: only /v1/verify, the leak report, the API's description, the key format, the console's session and the console's files skip the authorizer"
            );
        }
    }
    // serve records each route's AWS calls as the function's that serves it here.
    let mut expected: BTreeSet<(String, String, String)> = keyward_cli::ROUTES
        .iter()
        .chain(keyward_cli::CONSOLE_ROUTES)
        .map(|(method, path, _, function)| {
            (
                method.to_string(),
                (*path).to_owned(),
                (*function).to_owned(),
            )
        })
        .collect();
    expected.insert(("GET".to_owned(), "/hello".to_owned(), "Hello".to_owned()));
    assert_eq!(routes, expected);
}

/// Every `Action` in the template's policies.
fn actions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if key == "Action" {
                    match value {
                        Value::Sequence(list) => {
                            found.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
                        }
                        other => found.push(other.as_str().unwrap_or("?").to_owned()),
                    }
                } else {
                    actions(value, found);
                }
            }
        }
        Value::Sequence(list) => list.iter().for_each(|v| actions(v, found)),
        Value::Tagged(t) => actions(&t.value, found),
        _ => {}
    }
}

#[test]
fn no_policy_grants_every_action_and_the_checking_functions_write_only_usage() {
    let template = template();
    let mut found = Vec::new();
    actions(&template["Resources"], &mut found);
    assert!(found.len() > 20, "the policies are found: {found:?}");
    for action in &found {
        assert!(
            action != "*" && !action.ends_with(":*") && action.contains(':'),
            "{action} grants too much"
        );
    }
    for name in ["Authorizer", "ApiAuthorizer", "VerifyKey"] {
        let statements = resources(&template)[name]["Properties"]["Policies"][0]["Statement"]
            .as_sequence()
            .expect("one policy of statements");
        let mut seen: Vec<(Vec<String>, Value)> = Vec::new();
        for statement in statements {
            let mut found = Vec::new();
            actions(statement, &mut found);
            seen.push((found, statement["Condition"].clone()));
        }
        // The exported authorizer checks one environment's keys, so it writes only that
        // environment's usage; keyward's own checkers write every environment's.
        let partitions = match name {
            "Authorizer" => r#"[!Sub "USAGE#${AuthorizerEnvironment}#*"]"#,
            _ => r#"["USAGE#*#*"]"#,
        };
        let usage_only: Value = serde_norway::from_str(&format!(
            r#"{{"ForAllValues:StringLike": {{"dynamodb:LeadingKeys": {partitions}}}}}"#
        ))
        .unwrap();
        assert_eq!(
            seen,
            [
                (vec!["dynamodb:GetItem".to_owned()], Value::Null),
                (vec!["dynamodb:UpdateItem".to_owned()], usage_only),
            ],
            "{name} reads items and writes only usage items, whose keys start {}<env>#",
            table::USAGE_PREFIX
        );
    }
    let mut hello = Vec::new();
    actions(&resources(&template)["Hello"], &mut hello);
    assert!(hello.is_empty(), "the example backend needs nothing");
}

/// Every code a `code` schema's `enum` lists under `value`.
fn enumerated_codes(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if key == "code" {
                    let codes = value["enum"].as_sequence().into_iter().flatten();
                    found.extend(codes.filter_map(Value::as_str).map(str::to_owned));
                }
                enumerated_codes(value, found);
            }
        }
        Value::Sequence(list) => list.iter().for_each(|v| enumerated_codes(v, found)),
        _ => {}
    }
}

/// Every (status, code) that openapi.yaml documents: each operation's responses, through
/// their `$ref`, with the codes their schemas list, and each `` `NNN code` `` its description
/// names (the router's own answers and API Gateway's).
fn documented_errors() -> BTreeSet<(u64, String)> {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    let document: Value = serde_norway::from_str(&text).unwrap();
    let mut pairs = BTreeSet::new();
    let operations = document["paths"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(Value::as_mapping)
        .flat_map(|item| item.values());
    for operation in operations {
        for (status, response) in operation["responses"].as_mapping().into_iter().flatten() {
            let Some(status) = status.as_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let response = match response["$ref"].as_str() {
                Some(at) => &document["components"]["responses"][at.rsplit('/').next().unwrap()],
                None => response,
            };
            let mut codes = Vec::new();
            enumerated_codes(response, &mut codes);
            pairs.extend(codes.into_iter().map(|code| (status, code)));
        }
    }
    let description = document["info"]["description"].as_str().unwrap();
    for named in description.split('`').skip(1).step_by(2) {
        if let Some((status, code)) = named.split_once(' ')
            && let Ok(status) = status.parse::<u64>()
            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            pairs.insert((status, code.to_owned()));
        }
    }
    pairs
}

/// The answers API Gateway makes itself are the API's: each has its own status, is the error
/// shape with a status and code that openapi.yaml documents, carries the API's headers (no
/// cache keeps it, no browser sniffs it), and carries nothing of the request (no `$` variable
/// at all: `$context.error.messageString` repeats request text, a pasted key among it). Each
/// type the API can meet is answered explicitly.
#[test]
fn every_gateway_response_is_one_the_api_documents_and_holds_no_request_text() {
    let template = template();
    let responses = resources(&template)["Api"]["Properties"]["GatewayResponses"]
        .as_mapping()
        .unwrap();
    let documented = documented_errors();
    assert!(
        documented.contains(&(404, "route_not_found".to_owned()))
            && documented.contains(&(401, "invalid_api_key".to_owned())),
        "the document's pairs are read: {documented:?}"
    );
    for (name, response) in responses {
        let body = response["ResponseTemplates"]["application/json"]
            .as_str()
            .unwrap();
        assert!(!body.contains('$'), "{name:?} carries a variable: {body}");
        let headers = &response["ResponseParameters"]["Headers"];
        for (header, value) in [
            ("Content-Type", "'application/json'"),
            ("Cache-Control", "'no-store'"),
            ("X-Content-Type-Options", "'nosniff'"),
        ] {
            assert_eq!(headers[header], value, "{name:?}: {header}");
        }
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{name:?} is not JSON: {e}: {body}"));
        assert!(json["error"]["message"].is_string(), "{name:?}: {body}");
        let status = response["StatusCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name:?} keeps API Gateway's own status"));
        let code = json["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            documented.contains(&(status, code.clone())),
            "{name:?} answers {status} {code}, which openapi.yaml does not list"
        );
    }
    let answered: BTreeSet<&str> = responses.keys().filter_map(Value::as_str).collect();
    for kind in [
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "MISSING_AUTHENTICATION_TOKEN",
        "RESOURCE_NOT_FOUND",
        "THROTTLED",
        "QUOTA_EXCEEDED",
        "REQUEST_TOO_LARGE",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    ] {
        assert!(answered.contains(kind), "no gateway response for {kind}");
    }
}

#[test]
fn the_exported_authorizer_serves_one_named_environment_and_closes_unlisted_routes() {
    let template = template();
    let parameters = &template["Parameters"];
    let environment = &parameters["AuthorizerEnvironment"];
    assert!(
        environment.get("Default").is_none(),
        "a deployer must name the environment: {environment:?}"
    );
    assert_eq!(
        environment["AllowedPattern"], "^[a-z0-9-]{1,32}$",
        "an environment name, never *"
    );
    assert_eq!(parameters["AuthorizerUnlistedRoutes"]["Default"], "deny");
    let exported = &resources(&template)["Authorizer"];
    let variables = &exported["Properties"]["Environment"]["Variables"];
    assert_eq!(
        tagged(&variables[authorizer::Config::ENVIRONMENT_VAR]),
        Some(("!Ref".to_owned(), "AuthorizerEnvironment".to_owned()))
    );
    assert_eq!(
        tagged(&variables[authorizer::Config::UNLISTED_ROUTES_VAR]),
        Some(("!Ref".to_owned(), "AuthorizerUnlistedRoutes".to_owned()))
    );
    let output = &template["Outputs"]["AuthorizerArn"]["Value"];
    assert_eq!(
        tagged(output),
        Some(("!GetAtt".to_owned(), "Authorizer.Arn".to_owned())),
        "the export is the authorizer that serves one environment"
    );
    let own = &resources(&template)["ApiAuthorizer"]["Properties"]["Environment"]["Variables"];
    assert_eq!(own[authorizer::Config::ENVIRONMENT_VAR], "*");
    assert_eq!(own[authorizer::Config::UNLISTED_ROUTES_VAR], "allow");
    let samconfig = std::fs::read_to_string(root().join("infra/samconfig.toml")).unwrap();
    assert!(
        !samconfig.contains("AuthorizerEnvironment=*"),
        "samconfig.toml must not hand * to the exported authorizer"
    );
}

/// The Secrets Manager actions a delivery takes (`keyward::secrets::SecretsManagerSink`).
const DELIVERY_ACTIONS: [&str; 4] = [
    "secretsmanager:CreateSecret",
    "secretsmanager:DescribeSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
];

#[test]
fn only_the_functions_that_rotate_may_write_secrets_and_only_under_the_prefix_and_one_reads_gitlabs_token()
 {
    let template = template();
    let mut writers = BTreeMap::new();
    let mut readers = Vec::new();
    for (resource, function) in functions(&template) {
        let Some(policies) = function["Properties"]["Policies"].as_sequence() else {
            continue;
        };
        for policy in policies.iter().filter(|p| p["Statement"].is_null()) {
            let text = serde_norway::to_string(policy).unwrap().to_lowercase();
            assert!(
                !text.contains("secret"),
                "{resource}: secrets are granted only in a statement this test reads: {text}"
            );
        }
        for statement in policies
            .iter()
            .filter_map(|p| p["Statement"].as_sequence())
            .flatten()
        {
            let actions: Vec<&str> = match &statement["Action"] {
                Value::Sequence(list) => list.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            if actions == ["secretsmanager:GetSecretValue"] {
                readers.push((resource.clone(), tagged(&statement["Resource"])));
            } else if actions.iter().any(|a| a.starts_with("secretsmanager:")) {
                let granted =
                    writers.insert(resource.clone(), (actions, tagged(&statement["Resource"])));
                assert!(
                    granted.is_none(),
                    "{resource}: one statement grants secrets"
                );
            }
        }
    }
    let expected_resource = Some((
        "!Sub".to_owned(),
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretNamePrefix}*".to_owned(),
    ));
    assert_eq!(
        writers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ReportLeak", "RotateKey", "ScheduledRotation"],
        "the three functions that rotate keys with a policy (a leaked default key's too) deliver their secrets"
    );
    for (resource, (actions, granted_on)) in writers {
        assert_eq!(actions, DELIVERY_ACTIONS, "{resource}");
        assert_eq!(granted_on, expected_resource, "{resource}");
    }
    assert_eq!(
        readers,
        [(
            "ReportLeak".to_owned(),
            Some((
                "!Sub".to_owned(),
                "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}-gitlab-revocation-token-??????".to_owned()
            ))
        )],
        "only the leak routes read a secret: the one token shared with GitLab, which the stack makes"
    );
}

#[test]
fn failures_that_lose_work_set_off_an_alarm() {
    let template = template();
    let resources = resources(&template);
    let alarms: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| &r["Properties"])
        .collect();
    let scheduled = alarms
        .iter()
        .find(|a| a["MetricName"] == scheduled_rotation::FAILED_METRIC)
        .expect("an alarm on the scheduled run's failures");
    assert_eq!(
        scheduled["Namespace"],
        scheduled_rotation::METRICS_NAMESPACE
    );
    assert_eq!(
        scheduled["Dimensions"][0]["Name"],
        scheduled_rotation::FUNCTION_DIMENSION
    );
    assert_eq!(
        tagged(&scheduled["Dimensions"][0]["Value"]),
        Some(("!Ref".to_owned(), "ScheduledRotation".to_owned()))
    );
    let queue = alarms
        .iter()
        .find(|a| a["Namespace"] == "AWS/SQS")
        .expect("an alarm on the stream's on-failure queue");
    assert_eq!(
        tagged(&queue["Dimensions"][0]["Value"]),
        Some(("!GetAtt".to_owned(), "StreamFailures.QueueName".to_owned()))
    );
    for alarm in [scheduled, queue] {
        assert_eq!(alarm["Threshold"], 0);
        assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    }
}

#[test]
fn the_checks_dashboard_and_the_refusal_alarm_name_the_metrics_the_checks_publish() {
    use keyward::metrics::{CHECK_LATENCY, CHECKS, FUNCTION_DIMENSION, NAMESPACE, REFUSED};
    let template = template();
    let resources = resources(&template);
    let checking = ["Authorizer", "ApiAuthorizer", "VerifyKey"];

    let alarm = &resources["RefusalSurgeAlarm"]["Properties"];
    let stats: Vec<&Value> = alarm["Metrics"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("MetricStat"))
        .collect();
    let mut watched: Vec<String> = Vec::new();
    for stat in &stats {
        let metric = &stat["Metric"];
        assert_eq!(metric["Namespace"], NAMESPACE);
        assert_eq!(metric["MetricName"], REFUSED);
        assert_eq!(metric["Dimensions"][0]["Name"], FUNCTION_DIMENSION);
        let (tag, function) = tagged(&metric["Dimensions"][0]["Value"]).unwrap();
        assert_eq!(tag, "!Ref");
        watched.push(function);
    }
    assert_eq!(watched, checking, "every function that checks keys");
    assert_eq!(
        tagged(&alarm["Threshold"]),
        Some(("!Ref".to_owned(), "RefusalAlarmThreshold".to_owned()))
    );

    let (tag, body) = tagged(&resources["ChecksDashboard"]["Properties"]["DashboardBody"]).unwrap();
    assert_eq!(tag, "!Sub");
    let mut substituted = body.clone();
    for (name, value) in [
        ("${AWS::Region}", "\"us-east-1\""),
        ("${RefusalAlarmThreshold}", "1000"),
    ] {
        substituted = substituted
            .replace(&format!("\"{name}\""), value)
            .replace(name, value);
    }
    for function in checking {
        substituted = substituted.replace(&format!("${{{function}}}"), function);
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&substituted).expect("the dashboard is JSON");
    let text = dashboard.to_string();
    for metric in [CHECKS, CHECK_LATENCY, REFUSED] {
        assert!(
            text.contains(&format!(
                "\"{NAMESPACE}\",\"{metric}\",\"{FUNCTION_DIMENSION}\""
            )) || text.contains(&format!("MetricName=\\\"{metric}\\\"")),
            "{metric} is on the dashboard"
        );
    }
    for function in checking {
        assert!(
            text.contains(&format!("\"{function}\"")),
            "{function} is on the dashboard"
        );
    }
    assert!(
        !text.contains("${"),
        "every variable is substituted: {text}"
    );
}

/// A `Fn::ForEach::<name>` block of the template: its collection and the one fragment it
/// repeats, as `(the identifier, the collection, the fragment's logical id, the fragment)`.
fn for_each<'a>(template: &'a Value, name: &str) -> (&'a str, &'a Value, &'a str, &'a Value) {
    let block = &resources(template)[format!("Fn::ForEach::{name}").as_str()];
    let identifier = block[0].as_str().expect("an identifier");
    let fragment = block[2].as_mapping().expect("a fragment");
    assert_eq!(fragment.len(), 1, "{name} repeats one resource");
    let (id, resource) = fragment.iter().next().unwrap();
    (identifier, &block[1], id.as_str().unwrap(), resource)
}

/// The names a `Fn::ForEach` collection lists.
fn listed(collection: &Value) -> BTreeSet<String> {
    collection
        .as_sequence()
        .expect("a literal list")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_function_has_a_log_group_with_a_retention_and_an_alarm_on_its_failures() {
    let template = template();
    let every: BTreeSet<String> = functions(&template).keys().cloned().collect();

    let (identifier, collection, id, logs) = for_each(&template, "FunctionLogs");
    assert_eq!(listed(collection), every, "one log group per function");
    assert_eq!(id, format!("${{{identifier}}}Logs"));
    assert_eq!(logs["Type"], "AWS::Logs::LogGroup");
    assert_eq!(logs["DeletionPolicy"], "Delete");
    assert_eq!(
        tagged(&logs["Properties"]["RetentionInDays"]),
        Some(("!Ref".to_owned(), "LogRetentionDays".to_owned()))
    );
    for (name, function) in functions(&template) {
        assert_eq!(
            tagged(&function["Properties"]["LoggingConfig"]["LogGroup"]),
            Some(("!Ref".to_owned(), format!("{name}Logs"))),
            "{name} logs to its own group"
        );
    }

    let authorizers: BTreeSet<String> = ["ApiAuthorizer", "Authorizer"].map(str::to_owned).into();
    let (identifier, collection, id, alarm) = for_each(&template, "FunctionErrors");
    let plain: BTreeSet<String> = every.difference(&authorizers).cloned().collect();
    assert_eq!(
        listed(collection),
        plain,
        "every function but the authorizers"
    );
    assert_eq!(id, format!("${{{identifier}}}ErrorsAlarm"));
    let p = &alarm["Properties"];
    assert_eq!(
        (&p["Namespace"], &p["MetricName"]),
        (&"AWS/Lambda".into(), &"Errors".into())
    );
    assert_eq!(
        tagged(&p["Dimensions"][0]["Value"]),
        Some(("!Sub".to_owned(), format!("${{${{{identifier}}}}}")))
    );
    assert_eq!(
        (&p["Threshold"], &p["ComparisonOperator"]),
        (&0.into(), &"GreaterThanThreshold".into())
    );

    // An authorizer's Unauthorized is an error to Lambda, so its alarm counts invocations
    // that made no check: the metric every check writes, by function.
    let (identifier, collection, _, alarm) = for_each(&template, "AuthorizerFailures");
    assert_eq!(listed(collection), authorizers);
    let metrics = alarm["Properties"]["Metrics"].as_sequence().unwrap();
    let stat = |id: &str| &metrics.iter().find(|m| m["Id"] == id).unwrap()["MetricStat"]["Metric"];
    assert_eq!(stat("invocations")["MetricName"], "Invocations");
    assert_eq!(stat("checks")["Namespace"], keyward::metrics::NAMESPACE);
    assert_eq!(stat("checks")["MetricName"], keyward::metrics::CHECKS);
    for id in ["invocations", "checks"] {
        assert_eq!(
            tagged(&stat(id)["Dimensions"][0]["Value"]),
            Some(("!Sub".to_owned(), format!("${{${{{identifier}}}}}")))
        );
    }
    assert_eq!(
        metrics[0]["Expression"],
        "invocations - FILL(checks, 0) + FILL(errors, 0)"
    );
    let p = &alarm["Properties"];
    assert_eq!(
        (&p["EvaluationPeriods"], &p["DatapointsToAlarm"]),
        (&3.into(), &2.into()),
        "the two metrics arrive apart: one late period alone is not an alarm"
    );
    let errors = stat("errors");
    assert_eq!(errors["MetricName"], keyward::metrics::CHECKS);
    assert_eq!(errors["Dimensions"][1]["Name"], "Outcome");
    assert_eq!(
        errors["Dimensions"][1]["Value"], "error",
        "the outcome of a store failure"
    );
}

#[test]
fn a_schedule_that_stopped_a_lagging_stream_and_server_errors_each_set_off_an_alarm() {
    let template = template();
    let resources = resources(&template);
    let heartbeat = &resources["ScheduledRotationHeartbeatAlarm"]["Properties"];
    assert_eq!(heartbeat["MetricName"], "Invocations");
    assert_eq!(
        tagged(&heartbeat["Dimensions"][0]["Value"]),
        Some(("!Ref".to_owned(), "ScheduledRotation".to_owned()))
    );
    assert_eq!(heartbeat["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(heartbeat["Threshold"], 1);
    assert_eq!(
        heartbeat["TreatMissingData"], "breaching",
        "a schedule that never fires writes no data at all"
    );
    assert_eq!(
        template["Parameters"]["RotationHeartbeatSeconds"]["Default"],
        900
    );

    let lag = &resources["StreamIteratorAgeAlarm"]["Properties"];
    assert_eq!(lag["MetricName"], "IteratorAge");
    assert_eq!(
        tagged(&lag["Dimensions"][0]["Value"]),
        Some(("!Ref".to_owned(), "ActivityPublisher".to_owned()))
    );

    let api = &resources["Api"]["Properties"];
    let server = &resources["ApiServerErrorsAlarm"]["Properties"];
    assert_eq!(
        (&server["Namespace"], &server["MetricName"]),
        (&"AWS/ApiGateway".into(), &"5XXError".into())
    );
    assert_eq!(
        tagged(&server["Dimensions"][0]["Value"]),
        tagged(&api["Name"])
    );
    assert_eq!(
        tagged(&server["Dimensions"][1]["Value"]),
        Some(("!Ref".to_owned(), "StageName".to_owned()))
    );
}

#[test]
fn scheduled_runs_are_never_retried_and_end_before_the_next_one() {
    let template = template();
    let function = &resources(&template)["ScheduledRotation"]["Properties"];
    assert_eq!(function["EventInvokeConfig"]["MaximumRetryAttempts"], 0);
    assert_eq!(
        function["EventInvokeConfig"]["MaximumEventAgeInSeconds"], 60,
        "an invocation Lambda could not start soon is dropped, not run late"
    );
    let schedule = &function["Events"]["Schedule"]["Properties"];
    assert_eq!(schedule["RetryPolicy"]["MaximumRetryAttempts"], 0);
    let timeout = function["Timeout"].as_u64().unwrap();
    assert!(
        timeout < 300,
        "below the default schedule's period of five minutes"
    );
    assert!(
        scheduled_rotation::STOP_TAKING_KEYS_BEFORE.as_secs() < timeout,
        "a run takes keys for a while before it stops"
    );
    assert_eq!(
        template["Parameters"]["RotationSchedule"]["Default"],
        "rate(5 minutes)"
    );
}

#[test]
fn consumers_in_any_account_may_invoke_the_exported_authorizer_and_nothing_is_imported() {
    let template = template();
    let (identifier, collection, id, permission) = for_each(&template, "AuthorizerConsumer");
    assert_eq!(
        tagged(collection),
        Some(("!Ref".to_owned(), "AuthorizerConsumers".to_owned()))
    );
    let consumers = &template["Parameters"]["AuthorizerConsumers"];
    assert_eq!(consumers["Type"], "CommaDelimitedList");
    let pattern = consumers["AllowedPattern"].as_str().unwrap();
    for (source, allowed) in [
        ("", true),
        (
            "arn:aws:execute-api:eu-west-1:222233334444:a1b2c3d4e5/authorizers/*",
            true,
        ),
        ("arn:aws:execute-api:*:222233334444:*/authorizers/*", true),
        ("arn:aws:execute-api:*:*:*", false),
        ("arn:aws:execute-api:*:*:*/authorizers/*", false),
        (
            "arn:aws:execute-api:eu-west-1:222233334444:a1b2c3d4e5/*",
            false,
        ),
    ] {
        assert_eq!(fully_matches(pattern, source), allowed, "{source}");
    }
    assert_eq!(id, format!("AuthorizerInvokedBy&{{{identifier}}}"));
    assert_eq!(permission["Type"], "AWS::Lambda::Permission");
    assert_eq!(permission["Condition"], "HasAuthorizerConsumers");
    let p = &permission["Properties"];
    assert_eq!(p["Principal"], "apigateway.amazonaws.com");
    assert_eq!(p["Action"], "lambda:InvokeFunction");
    assert_eq!(
        tagged(&p["FunctionName"]),
        Some(("!GetAtt".to_owned(), "Authorizer.Arn".to_owned())),
        "only the exported authorizer, never keyward's own"
    );
    assert_eq!(
        tagged(&p["SourceArn"]),
        Some(("!Ref".to_owned(), identifier.to_owned()))
    );
    let outputs = template["Outputs"].as_mapping().unwrap();
    assert!(
        outputs["AuthorizerArn"]["Export"].is_null(),
        "an import would block updates"
    );
}

#[test]
fn the_api_has_one_stage_and_throttles_the_routes_that_take_no_key_on_their_own() {
    let template = template();
    let api = &resources(&template)["Api"]["Properties"];
    assert!(
        api["OpenApiVersion"].is_string(),
        "without it SAM adds a stage named Stage"
    );
    let settings = api["MethodSettings"].as_sequence().unwrap();
    let throttled: BTreeSet<(String, String)> = settings
        .iter()
        .filter(|s| !s["ThrottlingRateLimit"].is_null())
        .map(|s| {
            let path = s["ResourcePath"].as_str().unwrap().replace("~1", "/");
            let path = path
                .strip_prefix('/')
                .filter(|p| !p.is_empty())
                .unwrap_or("/");
            (
                s["HttpMethod"].as_str().unwrap().to_owned(),
                path.to_owned(),
            )
        })
        .collect();
    assert!(
        throttled.contains(&("*".to_owned(), "*".to_owned())),
        "{throttled:?}"
    );
    for function in functions(&template).values() {
        for event in function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(_, e)| e)
        {
            let p = &event["Properties"];
            if event["Type"] == "Api" && p["Auth"]["Authorizer"] == "NONE" {
                let route = (
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_owned(),
                );
                assert!(
                    throttled.contains(&route),
                    "{route:?} has no throttle of its own: {throttled:?}"
                );
            }
        }
    }
}

/// Whether `text` matches `pattern` whole, as CloudFormation applies an `AllowedPattern`:
/// Python's `re.fullmatch`, which reads the same syntax.
fn fully_matches(pattern: &str, text: &str) -> bool {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import re, sys; sys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2]) else 1)",
        ])
        .args([pattern, text])
        .status()
        .expect("python3 runs")
        .success()
}
