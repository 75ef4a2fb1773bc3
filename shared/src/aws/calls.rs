//! A record of every AWS call keyward's functions make, for the IAM check (`tests/iam`).
//!
//! moto does not enforce IAM, so a call that a function's role in `infra/template.yaml` would
//! deny passes every local test. When [`VAR`] names a folder, each client that a store, bus or
//! secrets sink builds carries [`CallLog`], which appends one JSON line per call to a file of
//! this process's in that folder:
//!
//! ```text
//! {"function":"CreateKey","action":"dynamodb:GetItem","resource":"arn:aws:dynamodb:us-east-1::table/t","context":{"dynamodb:LeadingKeys":["HASH#..."]}}
//! ```
//!
//! - `action` is what IAM authorizes: a transaction is one action per item (`PutItem`,
//!   `UpdateItem`, `DeleteItem`, `ConditionCheckItem`), as IAM checks it.
//! - `resource` is the ARN IAM evaluates, with the index for a query on one. The account field
//!   is empty, because a client does not know its account; the check fills in the template's.
//! - `context` holds the condition keys IAM evaluates: `dynamodb:LeadingKeys`, the partition
//!   keys the call touches.
//! - `function` is the template's name for the function that made the call: the one that
//!   [`acting_as`] names around a handler (as `keyward serve` does for each route), or else
//!   `AWS_LAMBDA_FUNCTION_NAME`, which the tests' stand-in for Lambda sets to the template's
//!   name (on Lambda itself it is the deployed name, but nothing records there); `null` for a
//!   call a test makes outside any function.
//!
//! Only names, keys and hashes are written, never an item's other attributes or a secret's
//! value. Without the variable no client carries the interceptor, and nothing is written.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

/// The variable that turns the record on: a folder for this process's file of calls.
pub const VAR: &str = "KEYWARD_AWS_CALL_LOG";

/// The partition key attributes of keyward's table and its indexes, whose values in a query's
/// key condition are the `dynamodb:LeadingKeys` IAM sees (checked against the adapter's schema
/// in its tests).
pub const PARTITION_KEYS: [&str; 3] = ["pk", "gsi1pk", "gsi2pk"];

tokio::task_local! {
    static FUNCTION: &'static str;
}

/// Runs `work` as the function named `function` in the template, so that the calls it makes
/// are recorded as that function's (see the module's documentation).
pub async fn acting_as<F: Future>(function: &'static str, work: F) -> F::Output {
    FUNCTION.scope(function, work).await
}

/// [`acting_as`] when `function` names one, or else `work` as it is.
pub async fn acting_as_if<F: Future>(function: Option<&'static str>, work: F) -> F::Output {
    match function {
        Some(function) => acting_as(function, work).await,
        None => work.await,
    }
}

/// The interceptor that writes the record: one per process, shared by every client.
#[derive(Debug, Clone)]
pub struct CallLog {
    file: Arc<Mutex<std::fs::File>>,
    lambda: Option<String>,
}

/// The process's log, opened on first use when [`VAR`] is set; `None` when it is not, or when
/// the folder cannot be written (which is said once on standard error).
pub fn call_log() -> Option<CallLog> {
    static LOG: OnceLock<Option<CallLog>> = OnceLock::new();
    LOG.get_or_init(|| {
        let folder = PathBuf::from(std::env::var_os(VAR)?);
        let path = folder.join(format!("calls-{}.jsonl", std::process::id()));
        let opened = std::fs::create_dir_all(&folder).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        });
        match opened {
            Ok(file) => Some(CallLog {
                file: Arc::new(Mutex::new(file)),
                lambda: std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
            }),
            Err(e) => {
                eprintln!("{VAR}: cannot write {}: {e}", path.display());
                None
            }
        }
    })
    .clone()
}

impl CallLog {
    fn function(&self) -> Option<String> {
        FUNCTION
            .try_with(|name| (*name).to_owned())
            .ok()
            .or_else(|| self.lambda.clone())
    }

    fn write(&self, calls: &[Call]) {
        let function = self.function();
        let mut lines = String::new();
        for call in calls {
            let line = json!({
                "function": function,
                "action": call.action,
                "resource": call.resource,
                "context": call.context,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(lines.as_bytes());
        }
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let headers = request.headers();
        let target = headers.get("x-amz-target").unwrap_or_default();
        let region = headers
            .get("authorization")
            .and_then(region_of_signature)
            .unwrap_or_default();
        let body: Value = request
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or(Value::Null);
        self.write(&calls(target, region, &body));
        Ok(())
    }
}

/// The region of a SigV4 `Authorization` header's credential scope
/// (`Credential=<key id>/<date>/<region>/<service>/aws4_request`).
fn region_of_signature(authorization: &str) -> Option<&str> {
    let scope = authorization.split("Credential=").nth(1)?;
    scope.split('/').nth(2)
}

/// One authorization IAM makes for a request.
#[derive(Debug)]
struct Call {
    action: String,
    resource: String,
    context: Value,
}

/// The authorizations behind one request, from its `X-Amz-Target` (`DynamoDB_20120810.GetItem`,
/// `secretsmanager.PutSecretValue`, `AWSEvents.PutEvents`) and its JSON body.
fn calls(target: &str, region: &str, body: &Value) -> Vec<Call> {
    let (service, operation) = target.split_once('.').unwrap_or(("", target));
    match service {
        "DynamoDB_20120810" => dynamodb_calls(operation, region, body),
        "secretsmanager" => {
            let name = body["SecretId"].as_str().or(body["Name"].as_str());
            vec![Call {
                action: format!("secretsmanager:{operation}"),
                resource: name.map_or_else(|| "*".to_owned(), |n| secret_arn(region, n)),
                context: json!({}),
            }]
        }
        "AWSEvents" => {
            let mut buses: Vec<&str> = body["Entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| entry["EventBusName"].as_str().unwrap_or("default"))
                .collect();
            buses.sort_unstable();
            buses.dedup();
            buses
                .into_iter()
                .map(|bus| Call {
                    action: format!("events:{operation}"),
                    resource: arn_or(bus, || format!("arn:aws:events:{region}::event-bus/{bus}")),
                    context: json!({}),
                })
                .collect()
        }
        _ => vec![Call {
            action: format!("{service}:{operation}"),
            resource: "*".to_owned(),
            context: json!({}),
        }],
    }
}

/// `name` itself when it is already an ARN, or else the ARN `make` builds.
fn arn_or(name: &str, make: impl FnOnce() -> String) -> String {
    if name.starts_with("arn:") {
        name.to_owned()
    } else {
        make()
    }
}

/// A secret's ARN from its name: Secrets Manager ends each with six characters of its own,
/// which `AbCdEf` stands for.
fn secret_arn(region: &str, name: &str) -> String {
    arn_or(name, || {
        format!("arn:aws:secretsmanager:{region}::secret:{name}-AbCdEf")
    })
}

fn table_arn(region: &str, table: &str, index: Option<&str>) -> String {
    let table = arn_or(table, || {
        format!("arn:aws:dynamodb:{region}::table/{table}")
    });
    match index {
        Some(index) => format!("{table}/index/{index}"),
        None => table,
    }
}

/// The `dynamodb:LeadingKeys` context of partition key values, or none when there is none:
/// the IAM check refuses an item-level call without it, rather than let a `ForAllValues`
/// condition hold on an empty set.
fn leading_keys_context(mut values: Vec<&str>) -> Value {
    values.sort_unstable();
    values.dedup();
    if values.is_empty() {
        json!({})
    } else {
        json!({ "dynamodb:LeadingKeys": values })
    }
}

fn leading_keys<'a>(keys: impl IntoIterator<Item = &'a Value>) -> Value {
    leading_keys_context(
        keys.into_iter()
            .filter_map(|key| key[PARTITION_KEYS[0]]["S"].as_str())
            .collect(),
    )
}

fn dynamodb_calls(operation: &str, region: &str, body: &Value) -> Vec<Call> {
    let action = |name: &str| format!("dynamodb:{name}");
    let table = body["TableName"].as_str().unwrap_or_default();
    match operation {
        "GetItem" | "PutItem" | "UpdateItem" | "DeleteItem" => {
            let key = if operation == "PutItem" {
                &body["Item"]
            } else {
                &body["Key"]
            };
            vec![Call {
                action: action(operation),
                resource: table_arn(region, table, None),
                context: leading_keys([key]),
            }]
        }
        "Query" => vec![Call {
            action: action(operation),
            resource: table_arn(region, table, body["IndexName"].as_str()),
            context: leading_keys_context(query_partition(body).into_iter().collect()),
        }],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let (kind, part) = item.as_object()?.iter().next()?;
                let (name, key) = match kind.as_str() {
                    "Put" => ("PutItem", &part["Item"]),
                    "Update" => ("UpdateItem", &part["Key"]),
                    "Delete" => ("DeleteItem", &part["Key"]),
                    "ConditionCheck" => ("ConditionCheckItem", &part["Key"]),
                    _ => return None,
                };
                Some(Call {
                    action: action(name),
                    resource: table_arn(region, part["TableName"].as_str()?, None),
                    context: leading_keys([key]),
                })
            })
            .collect(),
        "BatchGetItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(table, requests)| Call {
                action: action(operation),
                resource: table_arn(region, table, None),
                context: leading_keys(requests["Keys"].as_array().into_iter().flatten()),
            })
            .collect(),
        _ => vec![Call {
            action: action(operation),
            resource: if table.is_empty() {
                "*".to_owned()
            } else {
                table_arn(region, table, None)
            },
            context: json!({}),
        }],
    }
}

/// The partition key value of a query: the value its key condition sets one of
/// [`PARTITION_KEYS`] equal to (`pk = :pk`, or `#pk = :pk` through the names it declares).
fn query_partition(body: &Value) -> Option<&str> {
    let condition = body["KeyConditionExpression"].as_str()?;
    let condition = condition.replace(['(', ')'], " ");
    condition
        .split_whitespace()
        .collect::<Vec<_>>()
        .split(|word| word.eq_ignore_ascii_case("and"))
        .find_map(|clause| {
            let clause = clause.join(" ");
            let (name, value) = clause.split_once('=')?;
            let (name, value) = (name.trim(), value.trim());
            let name = if name.starts_with('#') {
                body["ExpressionAttributeNames"][name].as_str()?
            } else {
                name
            };
            PARTITION_KEYS.contains(&name).then_some(())?;
            body["ExpressionAttributeValues"][value]["S"].as_str()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(target: &str, body: Value) -> Vec<(String, String, Value)> {
        calls(target, "eu-west-1", &body)
            .into_iter()
            .map(|c| (c.action, c.resource, c.context))
            .collect()
    }

    #[test]
    fn a_transaction_is_one_authorization_per_item_with_its_partition_key() {
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "KEY#key_1"}, "sk": {"S": "KEY"}, "name": {"S": "x"}}}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "ENV#dev"}, "sk": {"S": "ENV"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "CLAIM#dev#s"}, "sk": {"S": "CLAIM"}}}},
            {"Delete": {"TableName": "arn:aws:dynamodb:eu-west-1:1:table/u", "Key": {"pk": {"S": "HASH#00"}}}}
        ]});
        let arn = "arn:aws:dynamodb:eu-west-1::table/t";
        let keys = |k: &str| json!({"dynamodb:LeadingKeys": [k]});
        assert_eq!(
            one("DynamoDB_20120810.TransactWriteItems", body),
            [
                ("dynamodb:PutItem".into(), arn.into(), keys("KEY#key_1")),
                ("dynamodb:UpdateItem".into(), arn.into(), keys("ENV#dev")),
                (
                    "dynamodb:ConditionCheckItem".into(),
                    arn.into(),
                    keys("CLAIM#dev#s")
                ),
                (
                    "dynamodb:DeleteItem".into(),
                    "arn:aws:dynamodb:eu-west-1:1:table/u".into(),
                    keys("HASH#00")
                ),
            ]
        );
    }

    #[test]
    fn a_query_names_its_index_and_the_partition_its_key_condition_sets() {
        let body = json!({
            "TableName": "t", "IndexName": "gsi1",
            "KeyConditionExpression": "#p = :p AND begins_with(gsi1sk, :s)",
            "ExpressionAttributeNames": {"#p": "gsi1pk"},
            "ExpressionAttributeValues": {":p": {"S": "ENV#dev"}, ":s": {"S": "key_"}}
        });
        assert_eq!(
            one("DynamoDB_20120810.Query", body),
            [(
                "dynamodb:Query".into(),
                "arn:aws:dynamodb:eu-west-1::table/t/index/gsi1".into(),
                json!({"dynamodb:LeadingKeys": ["ENV#dev"]})
            )]
        );
        let on_table = json!({
            "TableName": "t", "KeyConditionExpression": "(sk = :sk) and (pk = :pk)",
            "ExpressionAttributeValues": {":pk": {"S": "USAGE#key_1"}, ":sk": {"S": "H#1"}}
        });
        assert_eq!(
            one("DynamoDB_20120810.Query", on_table)[0].2,
            json!({"dynamodb:LeadingKeys": ["USAGE#key_1"]})
        );
    }

    #[test]
    fn an_item_call_without_a_partition_key_carries_no_leading_keys_at_all() {
        let unparsed = json!({"TableName": "t", "KeyConditionExpression": "begins_with(sk, :s)"});
        assert_eq!(one("DynamoDB_20120810.Query", unparsed)[0].2, json!({}));
        let keyless = json!({"TableName": "t", "Key": {"id": {"S": "x"}}});
        assert_eq!(one("DynamoDB_20120810.GetItem", keyless)[0].2, json!({}));
    }

    #[test]
    fn a_batch_read_is_one_authorization_per_table_with_every_partition_key() {
        let body = json!({"RequestItems": {"t": {"Keys": [
            {"pk": {"S": "KEY#b"}, "sk": {"S": "KEY"}},
            {"pk": {"S": "KEY#a"}, "sk": {"S": "KEY"}},
            {"pk": {"S": "KEY#a"}, "sk": {"S": "KEY"}}
        ]}}});
        assert_eq!(
            one("DynamoDB_20120810.BatchGetItem", body),
            [(
                "dynamodb:BatchGetItem".into(),
                "arn:aws:dynamodb:eu-west-1::table/t".into(),
                json!({"dynamodb:LeadingKeys": ["KEY#a", "KEY#b"]})
            )]
        );
    }

    #[test]
    fn secrets_and_buses_are_named_by_their_arns_and_no_value_is_kept() {
        let put = json!({"SecretId": "keyward/dev/app", "SecretString": "kw_sk_dev_secret", "ClientRequestToken": "t"});
        let recorded = one("secretsmanager.PutSecretValue", put);
        assert_eq!(
            recorded,
            [(
                "secretsmanager:PutSecretValue".into(),
                "arn:aws:secretsmanager:eu-west-1::secret:keyward/dev/app-AbCdEf".into(),
                json!({})
            )]
        );
        assert!(!format!("{recorded:?}").contains("kw_sk_dev_secret"));
        let create = json!({"Name": "keyward/dev/new", "SecretString": "s"});
        assert_eq!(
            one("secretsmanager.CreateSecret", create)[0].1,
            "arn:aws:secretsmanager:eu-west-1::secret:keyward/dev/new-AbCdEf"
        );
        let events = json!({"Entries": [{"EventBusName": "bus", "Detail": "{}"}, {"EventBusName": "bus"}, {"Detail": "{}"}]});
        let buses: Vec<String> = one("AWSEvents.PutEvents", events)
            .into_iter()
            .map(|c| c.1)
            .collect();
        assert_eq!(
            buses,
            [
                "arn:aws:events:eu-west-1::event-bus/bus",
                "arn:aws:events:eu-west-1::event-bus/default"
            ]
        );
    }

    #[test]
    fn the_region_comes_from_the_signatures_credential_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=ASIA/20261206/eu-central-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(region_of_signature(header), Some("eu-central-1"));
        assert_eq!(region_of_signature("Bearer x"), None);
    }

    #[tokio::test]
    async fn a_call_is_the_named_functions_inside_acting_as_and_the_lambdas_outside() {
        let log = CallLog {
            file: Arc::new(Mutex::new(tempfile())),
            lambda: Some("FromLambda".to_owned()),
        };
        assert_eq!(log.function().as_deref(), Some("FromLambda"));
        let inside = acting_as("CreateKey", async { log.function() }).await;
        assert_eq!(inside.as_deref(), Some("CreateKey"));
        let nobody = CallLog {
            lambda: None,
            ..log.clone()
        };
        assert_eq!(nobody.function(), None);
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("keyward-calls-test-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }
}
