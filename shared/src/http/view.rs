//! What the API shows of a key: the stored record with its status and its last use, and
//! never its hash.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::ApiError;
use crate::domain::{
    AllowedIps, DeliveryFailures, EnvName, Key, KeyId, KeyName, Kind, LastUse, LeakPolicy,
    PendingDelivery, RotationPolicy, Scopes, Status, Timestamp,
};
use crate::store::UsageStore;

/// The API's `Key` object.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView<'a> {
    id: &'a KeyId,
    environment: &'a EnvName,
    name: &'a KeyName,
    kind: Kind,
    scopes: &'a Scopes,
    default: bool,
    status: Status,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    rotated_from: Option<&'a KeyId>,
    rotated_to: Option<&'a KeyId>,
    hint: &'a str,
    rotation_policy: Option<&'a RotationPolicy>,
    pending_delivery: Option<&'a PendingDelivery>,
    delivery_failures: Option<&'a DeliveryFailures>,
    allowed_ips: &'a AllowedIps,
    leaked_at: Option<Timestamp>,
    leak_policy: Option<LeakPolicy>,
    #[serde(flatten)]
    last_use: LastUse,
}

impl<'a> KeyView<'a> {
    /// The key as seen at `now`, last used as `last_use` says.
    pub fn new(key: &'a Key, last_use: LastUse, now: Timestamp) -> Self {
        Self {
            id: &key.id,
            environment: &key.environment,
            name: &key.name,
            kind: key.kind,
            scopes: &key.scopes,
            default: key.default,
            status: key.status(now),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            rotated_from: key.rotated_from.as_ref(),
            rotated_to: key.rotated_to.as_ref(),
            hint: &key.hint,
            rotation_policy: key.rotation_policy.as_ref(),
            pending_delivery: key.pending_delivery.as_ref(),
            delivery_failures: key.delivery_failures.as_ref(),
            allowed_ips: &key.allowed_ips,
            leaked_at: key.leaked_at,
            leak_policy: key.leak_policy,
            last_use,
        }
    }

    /// The keys as seen at `now`, with their last use read from `store` in one call.
    pub async fn read_all(
        store: &dyn UsageStore,
        keys: &'a [Key],
        now: Timestamp,
    ) -> Result<Vec<Self>, ApiError> {
        let mut by_environment: BTreeMap<&EnvName, Vec<&KeyId>> = BTreeMap::new();
        for key in keys {
            by_environment
                .entry(&key.environment)
                .or_default()
                .push(&key.id);
        }
        let mut last = HashMap::new();
        for (environment, ids) in by_environment {
            last.extend(store.last_use(environment, &ids).await?);
        }
        Ok(keys
            .iter()
            .map(|k| Self::new(k, last.remove(&k.id).unwrap_or_default(), now))
            .collect())
    }
}

/// A key's last use, for a read of the key.
pub async fn last_use_of(store: &dyn UsageStore, key: &Key) -> Result<LastUse, ApiError> {
    let found = store.last_use(&key.environment, &[&key.id]).await?;
    Ok(found.get(&key.id).copied().unwrap_or_default())
}

/// A key's last use, for the answer of a change already made: a read that fails is logged and
/// shown as none, so that it can never fail an answer that a client needs (a revocation's, or
/// a rotation's, whose secret is shown only once).
pub async fn last_use_after_change(store: &dyn UsageStore, key: &Key) -> LastUse {
    match store.last_use(&key.environment, &[&key.id]).await {
        Ok(found) => found.get(&key.id).copied().unwrap_or_default(),
        Err(e) => {
            tracing::warn!(key_id = %key.id, error = %crate::error_chain(&e), "the key's last use could not be read for the answer");
            LastUse::default()
        }
    }
}
