//! `PUT /v1/keys/{key_id}/allowed-ips`: replaces the networks a key is accepted from (scope
//! `keys:write`); an empty list lets every address in. Sending the ranges the key already has
//! changes nothing and records nothing. A caller held to networks changes only keys within
//! them, into lists within them; the caller's own key, its successor and the default key are
//! never held away from the address of the request that changes them.

use keyward::domain::{AllowedIps, Key, Timestamp, set_allowed_ips};
use keyward::http::{
    ApiError, Context, HandlerFuture, KeyView, apply_setting, authorize_change, json_body,
    last_use_after_change, respond, source_ip,
};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const SHAPE: &str =
    r#"{"allowed_ips": [IPv4 or IPv6 address or CIDR range], empty for every address}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworksBody {
    allowed_ips: Vec<String>,
}

/// The Lambda handler.
pub fn handler(context: Context<'_>, req: Request, now: Timestamp) -> HandlerFuture<'_> {
    Box::pin(async move { respond(StatusCode::OK, set_networks(context, &req, now).await) })
}

#[tracing::instrument(name = "set_allowed_ips", skip_all, fields(caller, key_id))]
async fn set_networks(
    context: Context<'_>,
    req: &Request,
    now: Timestamp,
) -> Result<Value, ApiError> {
    let store = context.store;
    let (caller, key) = authorize_change(context, req, now).await?;
    let body: NetworksBody = json_body(req, SHAPE)?;
    let networks = AllowedIps::parse(&body.allowed_ips)?;
    let decide =
        |key: &Key| set_allowed_ips(key, networks.clone(), caller.actor(), context.mint, now);
    let allow = |before: &Key, after: &Key| {
        // A caller held to networks reaches only keys within them, and keeps them there: it
        // can neither open a key nor move an open one into its range.
        caller.require_networks(&before.allowed_ips)?;
        caller.require_networks(&after.allowed_ips)?;
        caller.require_reachable(after, source_ip(req))
    };
    let (key, changed) = apply_setting(store, key, decide, allow).await?;
    if changed {
        let networks = key.allowed_ips.iter().count();
        tracing::info!(networks, "allowed networks changed");
    }
    let last = last_use_after_change(store, &key).await;
    Ok(json!({"key": KeyView::new(&key, last, now)}))
}

#[cfg(test)]
mod tests {
    use keyward::domain::{Action, Actor, NewKey, Scopes, revoke};
    use keyward::store::{ActivityFilter, KeyStore, PageRequest};
    use keyward::testing::{Seeded, body_json, event, orders_key, seeded, stored_key};

    use super::*;

    const REST: &str = include_str!("../fixtures/rest.json");
    const HTTP: &str = include_str!("../fixtures/http.json");

    async fn entries(s: &Seeded, key: &Key) -> Vec<Value> {
        let filter = ActivityFilter {
            action: Some(Action::AllowedIpsChanged),
            key_id: Some(key.id.clone()),
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        s.store
            .environment_activity(&s.environment, &filter, &page)
            .await
            .unwrap()
            .items
            .iter()
            .map(|entry| serde_json::to_value(&entry.event).unwrap())
            .collect()
    }

    fn put(fixture: &str, key: &Key, secret: &str, body: &str) -> Request {
        event(
            fixture,
            &[("KEY_ID", key.id.as_str()), ("KEY", secret), ("BODY", body)],
        )
    }

    #[tokio::test]
    async fn a_list_is_set_through_either_api_shape_recorded_before_and_after_then_cleared() {
        for fixture in [REST, HTTP] {
            let now = keyward::now();
            let s = seeded("production", now).await;
            let worker = s.worker_key(now).await.key;
            let secret = s.secret.expose();
            let set = r#"{\"allowed_ips\": [\"203.0.113.9\", \"::ffff:198.51.100.0/120\"]}"#;
            let response = handler(s.context(), put(fixture, &worker, secret, set), now).await;
            assert_eq!(response.status(), 200, "{:?}", body_json(&response));
            assert_eq!(
                body_json(&response)["key"]["allowed_ips"],
                json!(["203.0.113.9", "198.51.100.0/24"])
            );
            let stored = s.store.key(&worker.id).await.unwrap().unwrap();
            assert_eq!(stored.allowed_ips.iter().count(), 2);
            let again = handler(s.context(), put(fixture, &worker, secret, set), now).await;
            assert_eq!(again.status(), 200);
            assert_eq!(
                entries(&s, &worker).await.len(),
                1,
                "the same list again records nothing"
            );
            let clear = r#"{\"allowed_ips\": []}"#;
            let cleared = handler(s.context(), put(fixture, &worker, secret, clear), now).await;
            assert_eq!(cleared.status(), 200);
            assert_eq!(body_json(&cleared)["key"]["allowed_ips"], json!([]));
            let recorded = entries(&s, &worker).await;
            assert_eq!(recorded.len(), 2);
            assert_eq!(
                recorded[0],
                json!({"action": "key.allowed_ips_changed",
                       "previous": ["203.0.113.9", "198.51.100.0/24"], "allowed_ips": []})
            );
            assert_eq!(
                recorded[1],
                json!({"action": "key.allowed_ips_changed",
                       "previous": [], "allowed_ips": ["203.0.113.9", "198.51.100.0/24"]})
            );
        }
    }

    /// The REST fixture's caller is at 192.168.196.186. A caller held to its /24 reaches only
    /// keys held within it, and keeps them there: it cannot move an open key into its range,
    /// clear a list or widen one. A revoked key answers as such before the networks are judged.
    #[tokio::test]
    async fn a_caller_held_to_networks_changes_only_keys_within_them_into_lists_within_them() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let open = s.worker_key(now).await.key;
        let held = |name: &str, networks: &[&str]| NewKey {
            scopes: Scopes::parse(&["keys:write", "orders:read"]).unwrap(),
            allowed_ips: AllowedIps::parse(networks).unwrap(),
            ..orders_key(name)
        };
        let caller = stored_key(
            &s.store,
            &s.environment,
            held("ci", &["192.168.196.0/24"]),
            &s.mint,
            now,
        )
        .await;
        let within = stored_key(
            &s.store,
            &s.environment,
            held("job", &["192.168.196.0/25"]),
            &s.mint,
            now,
        )
        .await
        .key;
        let secret = caller.secret.expose();
        let inside = r#"{\"allowed_ips\": [\"192.168.196.128/25\"]}"#;
        for (target, body) in [
            (&open, inside),
            (&within, r#"{\"allowed_ips\": []}"#),
            (&within, r#"{\"allowed_ips\": [\"192.168.0.0/16\"]}"#),
            (
                &within,
                r#"{\"allowed_ips\": [\"192.168.196.7\", \"10.0.0.1\"]}"#,
            ),
        ] {
            let response = handler(s.context(), put(REST, target, secret, body), now).await;
            assert_eq!(response.status(), 403, "{} {body}", target.id);
            assert_eq!(
                body_json(&response)["error"]["code"],
                "network_escalation",
                "{} {body}",
                target.id
            );
            assert!(entries(&s, target).await.is_empty());
        }
        let response = handler(s.context(), put(REST, &within, secret, inside), now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        assert_eq!(entries(&s, &within).await.len(), 1);

        let keyward::domain::Revocation::Revoked { change, .. } =
            revoke(&open, Actor::operator("t"), &s.mint, now).unwrap()
        else {
            panic!("not revoked")
        };
        s.store.apply(&change).await.unwrap();
        let response = handler(s.context(), put(REST, &open, secret, inside), now).await;
        assert_eq!(
            body_json(&response)["error"]["code"],
            "key_ended",
            "the key's state is judged before the caller's networks"
        );
    }

    /// A key that would hold itself to networks that leave out where it is calling from is
    /// refused, since it could not change itself back; from inside them, or for another key,
    /// the change is made. The HTTP fixture's caller is at 1.2.3.4.
    #[tokio::test]
    async fn a_key_cannot_hold_itself_away_from_where_it_calls() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let secret = s.secret.expose();
        let away = r#"{\"allowed_ips\": [\"203.0.113.0/24\"]}"#;
        let response = handler(s.context(), put(HTTP, &s.key, secret, away), now).await;
        assert_eq!(response.status(), 409);
        assert_eq!(body_json(&response)["error"]["code"], "would_lock_out");
        assert!(
            s.store
                .key(&s.key.id)
                .await
                .unwrap()
                .unwrap()
                .allowed_ips
                .is_empty()
        );
        let worker = s.worker_key(now).await.key;
        let response = handler(s.context(), put(HTTP, &worker, secret, away), now).await;
        assert_eq!(response.status(), 200, "another key may be held anywhere");
        let full = NewKey {
            scopes: Scopes::parse(&["*"]).unwrap(),
            ..orders_key("ops")
        };
        let ops = stored_key(&s.store, &s.environment, full, &s.mint, now).await;
        let response = handler(
            s.context(),
            put(HTTP, &s.key, ops.secret.expose(), away),
            now,
        )
        .await;
        assert_eq!(
            body_json(&response)["error"]["code"],
            "would_lock_out",
            "nor is the default key, by another key that may expire or be revoked"
        );
        let rotated = keyward::domain::rotate(
            &ops.key,
            keyward::domain::GracePeriod::parse("1h").unwrap(),
            Actor::operator("t"),
            &s.mint,
            now,
        )
        .unwrap();
        s.store.apply(&rotated.change).await.unwrap();
        let response = handler(
            s.context(),
            put(HTTP, &rotated.key, ops.secret.expose(), away),
            now,
        )
        .await;
        assert_eq!(
            body_json(&response)["error"]["code"],
            "would_lock_out",
            "nor is the successor of the key that makes the change, in its grace"
        );
        let here = r#"{\"allowed_ips\": [\"1.2.3.0/24\", \"203.0.113.0/24\"]}"#;
        let nowhere = REST.replace(r#""sourceIp": "192.168.196.186""#, r#""sourceIp": null"#);
        assert_ne!(nowhere, REST);
        let response = handler(s.context(), put(&nowhere, &s.key, secret, here), now).await;
        assert_eq!(
            body_json(&response)["error"]["code"],
            "would_lock_out",
            "a request with no address cannot show that the key still lets it in"
        );
        let response = handler(s.context(), put(HTTP, &s.key, secret, here), now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        let response = handler(s.context(), put(HTTP, &s.key, secret, away), now).await;
        assert_eq!(
            body_json(&response)["error"]["code"],
            "would_lock_out",
            "nor can it narrow itself away once held"
        );
    }

    /// An expiry notice recorded between the handler's read and its write changes the key's
    /// version but not the decision: the list is decided again and set, not answered `409`.
    #[tokio::test]
    async fn a_background_write_meanwhile_is_decided_again_not_a_conflict() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let expiring = s.expiring_key(now).await.key;
        let store = keyward::testing::Interfering::new(&s);
        let body = r#"{\"allowed_ips\": [\"198.51.100.0/24\"]}"#;
        let request = put(REST, &expiring, s.secret.expose(), body);
        let response = handler(s.context_on(&store), request, now).await;
        assert_eq!(response.status(), 200, "{:?}", body_json(&response));
        assert_eq!(
            s.actions(&expiring.id).await,
            ["key.allowed_ips_changed", "key.expiring", "key.created"]
        );
    }

    #[tokio::test]
    async fn bad_bodies_and_keys_that_ended_get_clear_errors_and_change_nothing() {
        let now = keyward::now();
        let s = seeded("production", now).await;
        let worker = s.worker_key(now).await.key;
        let secret = s.secret.expose();
        for (body, status, code) in [
            (r#"{}"#, 400, "missing_field"),
            (r#"{\"allowed_ips\": null}"#, 400, "invalid_field"),
            (r#"{\"allowed_ips\": \"10.0.0.0/8\"}"#, 400, "invalid_field"),
            (
                r#"{\"allowed_ips\": [\"10.0.0.1/8\"]}"#,
                400,
                "invalid_allowed_ips",
            ),
            (
                r#"{\"allowed_ips\": [\"example.com\"]}"#,
                400,
                "invalid_allowed_ips",
            ),
            (
                r#"{\"allowed_ips\": [], \"extra\": 1}"#,
                400,
                "unknown_field",
            ),
            (r#"[]"#, 400, "invalid_json"),
        ] {
            let response = handler(s.context(), put(REST, &worker, secret, body), now).await;
            assert_eq!(response.status(), status, "{body}");
            assert_eq!(body_json(&response)["error"]["code"], code, "{body}");
        }
        assert!(entries(&s, &worker).await.is_empty());
        let keyward::domain::Revocation::Revoked { change, .. } =
            revoke(&worker, Actor::operator("t"), &s.mint, now).unwrap()
        else {
            panic!("not revoked")
        };
        s.store.apply(&change).await.unwrap();
        let body = r#"{\"allowed_ips\": [\"10.0.0.0/8\"]}"#;
        let response = handler(s.context(), put(REST, &worker, secret, body), now).await;
        assert_eq!(response.status(), 409);
        assert_eq!(body_json(&response)["error"]["code"], "key_ended");
        let stored = s.store.key(&worker.id).await.unwrap().unwrap();
        assert!(stored.allowed_ips.is_empty());
    }
}
