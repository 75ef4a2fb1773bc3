//! `GET /v1/keys/{key_id}/usage`: a key's accepted and refused checks in each hour of the last
//! week, oldest first (scope `keys:read`), so that a rotation can be watched: the old key's
//! checks falling to zero while its successor's rise; and the addresses its accepted checks
//! came from that week, to build its `allowed_ips` from.

use keyward::domain::{Scope, Timestamp, USAGE_RETENTION, hour_of, seen_window, usage_window};
use keyward::http::{ApiError, Context, HandlerFuture, authorize_key, respond};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, usage(context, &req, now).await) })
}

#[tracing::instrument(name = "key_usage", skip_all, fields(caller, key_id))]
async fn usage(context: Context<'_>, req: &Request, now: Timestamp) -> Result<Value, ApiError> {
    let store = context.store;
    let (_, key) = authorize_key(context, req, now, Scope::KEYS_READ).await?;
    let since = hour_of(now) - USAGE_RETENTION;
    let (stored, seen) = tokio::try_join!(
        store.hourly_usage(&key.environment, &key.id, since),
        store.seen_addresses(&key.environment, &key.id, since)
    )?;
    Ok(json!({"hours": usage_window(&stored, now), "seen_ips": seen_window(&seen, now)}))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use keyward::domain::UsageTally;
    use keyward::store::UsageStore;
    use keyward::testing::{api_request, body_json, seeded};

    use super::*;

    #[tokio::test]
    async fn a_key_shows_a_week_of_hours_with_what_was_written_for_it() {
        let now: Timestamp = "2026-11-29T10:42:00Z".parse().unwrap();
        let s = seeded("production", now).await;
        let mut tally = UsageTally::new(s.environment.clone(), s.key.id.clone());
        for minutes in [0, 1, 2] {
            tally.count(true, now - TimeDelta::minutes(minutes));
        }
        tally.saw("203.0.113.9".parse().unwrap(), now);
        tally.saw("2001:db8::7".parse().unwrap(), now - TimeDelta::days(8));
        tally.count(false, now - TimeDelta::hours(2));
        tally.count(true, now - TimeDelta::days(8));
        s.store.add_usage(&tally).await.unwrap();

        let get =
            |id: &str, key: &str| api_request("GET", &[("key_id", id)], &[], key, Value::Null);
        // The caller's own check is not counted here: its write, started at once on another
        // task, would race this read of the same key's hour.
        let uncounted = Context {
            usage: &keyward::usage::NotCounted,
            ..s.context()
        };
        let response = handler(uncounted, get(s.key.id.as_str(), s.secret.expose()), now).await;
        assert_eq!(response.status(), 200);
        let hours = body_json(&response)["hours"].as_array().unwrap().clone();
        assert_eq!(hours.len(), 168);
        assert_eq!(
            hours[167],
            json!({"hour": "2026-11-29T10:00:00Z", "accepted": 3, "refused": 0})
        );
        assert_eq!(
            hours[165],
            json!({"hour": "2026-11-29T08:00:00Z", "accepted": 0, "refused": 1})
        );
        assert_eq!(hours[0]["hour"], "2026-11-22T11:00:00Z");
        let total: u64 = hours.iter().map(|h| h["accepted"].as_u64().unwrap()).sum();
        assert_eq!(total, 3, "the check eight days ago is outside the week");
        assert_eq!(
            body_json(&response)["seen_ips"],
            json!([{"address": "203.0.113.9", "last_seen_hour": "2026-11-29T10:00:00Z"}]),
            "an address seen eight days ago is outside the week too"
        );

        let unknown = handler(
            s.context(),
            get("key_0123456789abcdefghijkl", s.secret.expose()),
            now,
        )
        .await;
        assert_eq!(unknown.status(), 404);
        assert_eq!(body_json(&unknown)["error"]["code"], "key_not_found");
    }
}
