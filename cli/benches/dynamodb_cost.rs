//! The DynamoDB calls and capacity units of each API operation, counted from the requests
//! the SDK sends and the responses it gets, through the real handlers.
//!
//! `scripts/with-moto cargo bench -p keyward-cli --bench dynamodb_cost`
//!
//! moto's own ConsumedCapacity is not used: it reports none for transactions and half a unit
//! for strongly consistent reads. Units are computed from item sizes with DynamoDB's rules:
//! a strongly consistent read costs 1 RCU per 4 KB (half for eventually consistent), a
//! query is charged on the total size it returns, and a transactional write costs 2 WCU per
//! 1 KB of each item. Sizes follow DynamoDB's item-size rules (names plus values).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use keyward::domain::{Actor, EnvName, create_environment};
use keyward::http::{Context, Handler, Settings};
use keyward::secrets::SecretsManagerSink;
use keyward::store::DynamoStore;
use keyward::testing::api_request as request;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Call {
    operation: String,
    request: Value,
    response: Value,
}

#[derive(Debug, Default, Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "capacity-recorder"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = ctx.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let body = request
            .body()
            .bytes()
            .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        self.calls.lock().unwrap().push(Call {
            operation,
            request: body,
            response: Value::Null,
        });
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let as_json = |item: &HashMap<String, AttributeValue>| {
            serde_json::to_value(serde_dynamo::Item::from(item.clone())).unwrap()
        };
        let output = ctx.output_or_error().ok();
        let response = if let Some(get) = output.and_then(|o| o.downcast_ref::<GetItemOutput>()) {
            json!({"Item": get.item.as_ref().map(as_json)})
        } else if let Some(query) = output.and_then(|o| o.downcast_ref::<QueryOutput>()) {
            json!({"Items": query.items().iter().map(as_json).collect::<Vec<_>>()})
        } else {
            Value::Null
        };
        if let Some(last) = self.calls.lock().unwrap().last_mut() {
            last.response = response;
        }
        Ok(())
    }
}

/// The size of one attribute value under DynamoDB's rules.
fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, |n| {
            n.trim_start_matches('-').replace('.', "").len().div_ceil(2) + 1
        }),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "BOOL" | "NULL" => 1,
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |l| l.iter().map(|e| 1 + value_size(e)).sum())
        }
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum()
            })
        }
        _ => inner.as_array().map_or(0, |l| {
            l.iter().map(|e| e.as_str().map_or(0, str::len)).sum()
        }),
    }
}

fn item_size(item: &Value) -> usize {
    item.as_object()
        .map_or(0, |m| m.iter().map(|(k, v)| k.len() + value_size(v)).sum())
}

/// Read and write capacity units of one call.
fn capacity(call: &Call) -> (f64, f64) {
    match call.operation.as_str() {
        "GetItem" => {
            let size = item_size(&call.response["Item"]);
            let units = size.div_ceil(4096).max(1) as f64;
            let consistent = call.request["ConsistentRead"].as_bool().unwrap_or(false);
            (if consistent { units } else { units / 2.0 }, 0.0)
        }
        "Query" => {
            let size: usize = call.response["Items"]
                .as_array()
                .map_or(0, |items| items.iter().map(item_size).sum());
            let units = size.div_ceil(4096).max(1) as f64;
            let consistent = call.request["ConsistentRead"].as_bool().unwrap_or(false);
            (if consistent { units } else { units / 2.0 }, 0.0)
        }
        // Charged per key asked for, found or not, as a GetItem of each; the items read here
        // (last use) are far under 4 KB.
        "BatchGetItem" => {
            let asked = call.request["RequestItems"]
                .as_object()
                .map_or(0.0, |tables| {
                    tables
                        .values()
                        .map(|t| {
                            let keys = t["Keys"].as_array().map_or(0, Vec::len) as f64;
                            let consistent = t["ConsistentRead"].as_bool().unwrap_or(false);
                            if consistent { keys } else { keys / 2.0 }
                        })
                        .sum()
                });
            (asked, 0.0)
        }
        "TransactWriteItems" => {
            let items = call.request["TransactItems"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let wcu: usize = items
                .iter()
                .map(|item| match item.get("Put") {
                    Some(put) => 2 * item_size(&put["Item"]).div_ceil(1024).max(1),
                    // The only update is the environment item's default pointer, well under 1 KB.
                    None => 2,
                })
                .sum();
            (0.0, wcu as f64)
        }
        _ => (0.0, 0.0),
    }
}

/// Runs one request through its handler and returns the answer and the calls it made.
async fn measure(
    store: &DynamoStore,
    recorder: &Recorder,
    handler: Handler,
    req: lambda_http::Request,
) -> (Value, Vec<Call>) {
    recorder.calls.lock().unwrap().clear();
    let settings = Settings::default();
    let secrets = SecretsManagerSink::from_config(&keyward::aws::config().await.unwrap());
    let mint = keyward::mint();
    let context = Context {
        store,
        settings: &settings,
        secrets: &secrets,
        mint: &mint,
        usage: &keyward::usage::NotCounted,
        people: &keyward::http::NoPeople,
    };
    let response = handler(context, req, keyward::now()).await;
    assert!(response.status().is_success(), "{}", response.status());
    let answer = serde_json::from_slice(response.body().as_ref()).unwrap();
    (answer, recorder.calls.lock().unwrap().clone())
}

#[tokio::main]
async fn main() {
    let mint = keyward::mint();
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "run this through scripts/with-moto"
    );
    let recorder = Recorder::default();
    let aws = aws_config::load_from_env().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&aws)
        .interceptor(recorder.clone())
        .build();
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        &format!("cost-{}", std::process::id()),
    );
    store.create_table().await.expect("a table");
    let env = create_environment(
        &EnvName::parse("production").unwrap(),
        Actor::operator("bench"),
        &mint,
        keyward::now(),
    );
    keyward::store::KeyStore::apply(&store, &env.change)
        .await
        .unwrap();
    let admin = env.secret.expose().to_owned();

    let mut rows: Vec<(&str, Vec<Call>)> = Vec::new();
    let mut last = Value::Null;
    for i in 0..25 {
        let body =
            json!({"name": format!("worker {i}"), "scopes": ["orders:read", "orders:write"]});
        let (answer, calls) = measure(
            &store,
            &recorder,
            create_key::handler,
            request("POST", &[("env", "production")], &[], &admin, body),
        )
        .await;
        if i == 0 {
            rows.push(("create", calls));
        }
        last = answer;
    }
    let id = last["key"]["id"].as_str().unwrap().to_owned();
    let secret = last["secret"].as_str().unwrap().to_owned();
    let key = [("key_id", id.as_str())];
    let default_key = [("key_id", env.key.id.as_str())];
    let policy =
        json!({"every": "P30D", "grace_period": "24h", "secret_id": "keyward/production/cost"});
    let (with_policy, _) = measure(
        &store,
        &recorder,
        create_key::handler,
        request(
            "POST",
            &[("env", "production")],
            &[],
            &admin,
            json!({"name": "with a policy", "scopes": ["orders:read"], "rotation_policy": policy}),
        ),
    )
    .await;
    let policy_key = [("key_id", with_policy["key"]["id"].as_str().unwrap())];
    let steps: Vec<(&str, Handler, lambda_http::Request)> = vec![
        (
            "verify",
            verify_key::handler,
            request("POST", &[], &[], &admin, json!({"key": secret})),
        ),
        (
            "rotate",
            rotate_key::handler,
            request("POST", &key, &[], &admin, json!({"grace_period": "24h"})),
        ),
        (
            "rotate a key with a policy (its secret delivered)",
            rotate_key::handler,
            request(
                "POST",
                &policy_key,
                &[],
                &admin,
                json!({"grace_period": "24h"}),
            ),
        ),
        (
            "rotate the default key",
            rotate_key::handler,
            request(
                "POST",
                &default_key,
                &[],
                &admin,
                json!({"grace_period": "1h"}),
            ),
        ),
        (
            "change grace",
            change_grace_period::handler,
            request("PUT", &key, &[], &admin, json!({"grace_period": "1h"})),
        ),
        (
            "revoke",
            revoke_key::handler,
            request("POST", &key, &[], &admin, json!({})),
        ),
        (
            "get key",
            get_key::handler,
            request("GET", &key, &[], &admin, json!({})),
        ),
        (
            "list keys, a page of 20",
            list_keys::handler,
            request(
                "GET",
                &[("env", "production")],
                &[("limit", "20")],
                &admin,
                json!({}),
            ),
        ),
        (
            "environment activity, a page of 20",
            environment_activity::handler,
            request(
                "GET",
                &[("env", "production")],
                &[("limit", "20")],
                &admin,
                json!({}),
            ),
        ),
        (
            "key activity, 3 entries",
            key_activity::handler,
            request("GET", &key, &[], &admin, json!({})),
        ),
    ];
    for (name, handler, req) in steps {
        rows.push((name, measure(&store, &recorder, handler, req).await.1));
    }

    let sizes: Vec<usize> = rows
        .iter()
        .flat_map(|(_, calls)| calls)
        .filter_map(|c| {
            c.response["Item"]
                .as_object()
                .map(|_| item_size(&c.response["Item"]))
        })
        .collect();
    println!(
        "items read by GetItem: {} to {} bytes",
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0)
    );
    println!("| operation | DynamoDB calls | read units | write units |");
    println!("|---|---|---|---|");
    for (name, calls) in &rows {
        let names: Vec<String> = calls
            .iter()
            .map(|c| match c.operation.as_str() {
                "TransactWriteItems" => format!(
                    "TransactWriteItems ({} items)",
                    c.request["TransactItems"].as_array().map_or(0, Vec::len)
                ),
                "GetItem" if c.request["ConsistentRead"] == true => {
                    "GetItem (consistent)".to_owned()
                }
                "Query" if c.request["ConsistentRead"] == true => "Query (consistent)".to_owned(),
                "Query" => format!(
                    "Query ({})",
                    c.request["IndexName"].as_str().unwrap_or("table")
                ),
                other => other.to_owned(),
            })
            .collect();
        let (rcu, wcu) = calls
            .iter()
            .map(capacity)
            .fold((0.0, 0.0), |(r, w), (cr, cw)| (r + cr, w + cw));
        println!("| {name} | {} | {rcu} | {wcu} |", names.join(" + "));
    }
}
