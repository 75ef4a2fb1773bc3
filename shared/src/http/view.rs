//! What the API shows of a key: the stored record with its status, and never its hash.

use serde::Serialize;

use crate::domain::{
    DeliveryFailures, EnvName, Key, KeyId, KeyName, Kind, PendingDelivery, RotationPolicy, Scopes,
    Status, Timestamp,
};

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
}

impl<'a> KeyView<'a> {
    /// The key as seen at `now`.
    pub fn new(key: &'a Key, now: Timestamp) -> Self {
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
        }
    }
}
