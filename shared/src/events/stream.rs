//! DynamoDB Streams records, as read with the SDK, in the shape of the event that Lambda's
//! event source mapping delivers, so that every path runs the same publisher.

use aws_lambda_events::dynamodb::Event;
use aws_sdk_dynamodbstreams::types::Record;
use serde_json::{Value, json};

/// The Lambda event that carries `records`.
pub fn lambda_event(records: &[Record]) -> Result<Event, serde_json::Error> {
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let change = r.dynamodb.clone().unwrap_or_else(|| aws_sdk_dynamodbstreams::types::StreamRecord::builder().build());
            let image = |i: Option<std::collections::HashMap<String, _>>| {
                i.map(serde_dynamo::Item::from).unwrap_or_default()
            };
            json!({
                "eventID": r.event_id,
                "eventName": r.event_name.as_ref().map(|n| n.as_str()),
                "eventVersion": r.event_version,
                "eventSource": r.event_source,
                "awsRegion": r.aws_region,
                "userIdentity": r.user_identity.as_ref().map(|u| json!({"type": u.r#type, "principalId": u.principal_id})),
                "dynamodb": {
                    "ApproximateCreationDateTime": change.approximate_creation_date_time.map(|t| t.secs() as f64),
                    "Keys": image(change.keys),
                    "NewImage": image(change.new_image),
                    "OldImage": image(change.old_image),
                    "SequenceNumber": change.sequence_number,
                    "SizeBytes": change.size_bytes.unwrap_or(0),
                    "StreamViewType": change.stream_view_type.as_ref().map(|v| v.as_str()),
                },
            })
        })
        .collect();
    serde_json::from_value(json!({"Records": records}))
}
