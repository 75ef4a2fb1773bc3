//! Reading the API: which environment a command means, a key's routes, and lists page by page.

use hyper::Method;
use keyward::domain::{EnvName, KeyId, PresentedKey};
use serde_json::Value;

use crate::api::{Api, CallerKey, Failure, encode};

/// The environment named, or else the one that the caller's key names in its prefix.
pub(super) fn environment(named: Option<EnvName>, api: &Api) -> Result<EnvName, Failure> {
    if let Some(env) = named {
        return Ok(env);
    }
    let key = api.key().map(CallerKey::expose).unwrap_or("");
    PresentedKey::parse(key, &api.key_prefix())
        .map(|presented| presented.environment)
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot tell the environment from the key you act with ({e}); pass --env"
            ))
        })
}

/// One page's URL: `path` with its filters, the page's size, and where it starts.
pub(super) fn page_url(path: &str, size: usize, cursor: Option<&str>) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{separator}limit={size}");
    if let Some(cursor) = cursor {
        url.push_str(&format!("&cursor={}", encode(cursor)));
    }
    url
}

/// Reads pages of a list until `want` items (or every page), and answers them with the last
/// page's `next_cursor`.
pub(super) async fn pages(
    api: &Api,
    path: &str,
    field: &str,
    want: Option<usize>,
) -> Result<(Vec<Value>, Value), Failure> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let size = want.map_or(100, |w| (w - items.len()).min(100));
        let url = page_url(path, size, cursor.as_deref());
        let page = api.send(Method::GET, &url, None).await?;
        let Some(found) = page[field].as_array() else {
            return Err(not_keyward(field));
        };
        items.extend(found.iter().cloned());
        let full = want.is_some_and(|w| items.len() >= w);
        match page["next_cursor"].as_str() {
            Some(next) if !full => cursor = Some(next.to_owned()),
            _ => return Ok((items, page["next_cursor"].clone())),
        }
    }
}

/// An answer that lacks what keyward's API always sends.
pub(super) fn not_keyward(field: &str) -> Failure {
    Failure::Unreachable(format!(
        "the answer has no `{field}`: the URL does not lead to keyward's API"
    ))
}

/// Sends a request to one key's route: `/v1/keys/{key_id}` followed by `route`.
pub(super) async fn on_key(
    api: &Api,
    method: Method,
    key_id: &KeyId,
    route: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    api.send(method, &format!("/v1/keys/{key_id}{route}"), body.as_ref())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_comes_from_the_option_or_else_from_the_key() {
        let production = EnvName::parse("production").unwrap();
        let key = keyward::domain::Secret::generate(
            &keyward::mint(),
            keyward::domain::Kind::Secret,
            &EnvName::parse("eu-west").unwrap(),
        );
        let api = |text: &str| {
            Api::new(
                "http://127.0.0.1:1",
                Some(CallerKey::new(text, "KEYWARD_API_KEY").unwrap()),
                false,
            )
            .unwrap()
        };
        let with_key = api(key.expose());
        assert_eq!(
            environment(Some(production.clone()), &with_key),
            Ok(production)
        );
        assert_eq!(
            environment(None, &with_key).map(|e| e.to_string()),
            Ok("eu-west".to_owned())
        );
        let acme = keyward::domain::Secret::generate(
            &keyward::mint().with_key_prefix(keyward::domain::KeyPrefix::parse("acme").unwrap()),
            keyward::domain::Kind::Secret,
            &EnvName::parse("eu-west").unwrap(),
        );
        assert_eq!(
            environment(None, &api(acme.expose())).map(|e| e.to_string()),
            Ok("eu-west".to_owned()),
            "a deployment with its own prefix: the caller's key names it"
        );
        let failure = environment(None, &api("not-a-key")).unwrap_err();
        assert_eq!(failure.exit_status(), 2);
        assert!(failure.to_string().contains("--env"), "{failure}");
        assert!(!failure.to_string().contains("not-a-key"), "{failure}");
    }
}
