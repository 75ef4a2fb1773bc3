//! Delivering a rotated key's new secret to its rotation policy's secret, in the four steps
//! that the rotate route and scheduled rotation share, each safe to repeat:
//!
//! 1. [`stage`] stores the new secret as a pending version, which services do not read;
//! 2. the caller commits the rotation, whose new key records the pending delivery (this is
//!    what keeps the key due, so that a scheduled run finishes a delivery a crash cut short);
//! 3. [`finish`] makes the pending version current;
//! 4. and records the delivery, which clears it.
//!
//! A crash before step 2 leaves an unused pending version and nothing rotated. A crash after
//! it leaves the delivery pending, and the next scheduled run finishes it. The secret never
//! holds a key that is gone before its successor is there, as long as the old key's grace
//! outlasts steps 2 and 3 (or a run, after a crash).

use crate::domain::{
    Actor, Due, Key, KeyId, Mint, PendingDelivery, Rotated, Timestamp, delivery_failed,
    secret_delivered,
};
use crate::error_chain;
use crate::secrets::{SecretError, SecretSink, SecretValue};
use crate::store::{KeyStore, StoreError};

/// Why a delivery could not be finished; the cause is for the log.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The secret could not be written or made current.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Step 1: stores a rotation's new secret as the pending version of its policy's secret.
/// A rotation of a key without a policy has nothing to deliver.
pub async fn stage(
    sink: &dyn SecretSink,
    rotated: &Rotated,
    now: Timestamp,
) -> Result<(), SecretError> {
    let Some(pending) = &rotated.key.pending_delivery else {
        return Ok(());
    };
    let value = SecretValue::new(
        &rotated.key.id,
        &rotated.secret,
        &rotated.key.environment,
        now,
    );
    sink.put_pending(&pending.secret_id, &pending.version_id, &value)
        .await
}

/// Steps 3 and 4 for the key `id`, read again first: a key that someone rotated or revoked
/// meanwhile must never become what services read. Answers the key as delivered, or `None`
/// when there was nothing to deliver or another writer got there first. A version that cannot
/// be made current is recorded on the key, which puts off its next attempt.
pub async fn finish(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    id: &KeyId,
    actor: &Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Option<Key>, DeliveryError> {
    let Some(key) = store
        .key(id)
        .await?
        .filter(|k| k.due(now) == Some(Due::Delivery))
    else {
        return Ok(None);
    };
    let Some(pending) = key.pending_delivery.clone() else {
        return Ok(None);
    };
    if let Err(e) = sink.promote(&pending.secret_id, &pending.version_id).await {
        record_failure(store, &key, &pending.secret_id, actor, mint, now).await;
        return Err(e.into());
    }
    let Some((delivered, change)) = secret_delivered(&key, actor.clone(), mint, now) else {
        return Ok(None);
    };
    match store.apply(&change).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            restore_successor(store, sink, &key, &pending, now).await?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(key_id = %key.id, secret_id = %pending.secret_id, "secret delivered");
    Ok(Some(delivered))
}

/// How far [`restore_successor`] follows a chain of rotations.
const MAX_SUCCESSORS: usize = 8;

/// After `key`'s version was made current but its delivery could not be recorded: if `key`
/// was rotated meanwhile, a successor's version may have been made current before this one
/// took its place, and the secret would now hold a key that is in its grace. The newest
/// active successor that delivers to the same secret is made current again. Its version
/// exists, since every rotation stages its secret before it commits, and making it current
/// is what its own delivery does, so doing it twice is harmless.
async fn restore_successor(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    key: &Key,
    pending: &PendingDelivery,
    now: Timestamp,
) -> Result<(), DeliveryError> {
    let Some(mut newest) = store.key(&key.id).await? else {
        return Ok(());
    };
    for _ in 0..MAX_SUCCESSORS {
        let Some(next) = &newest.rotated_to else {
            break;
        };
        match store.key(next).await? {
            Some(successor) => newest = successor,
            None => return Ok(()),
        }
    }
    if newest.id != key.id && newest.delivers_to(pending.secret(), now) {
        sink.promote(
            &pending.secret_id,
            &PendingDelivery::version_id_for(&newest.id),
        )
        .await?;
        tracing::warn!(key_id = %key.id, successor = %newest.id, "a successor rotated meanwhile is current again");
    }
    Ok(())
}

/// Records that delivering `key`'s secret to `secret_id` failed, so that the schedule waits
/// before it tries again. Losing to another writer, or failing to write, is only logged: the
/// step has failed already, and the next run sees the key again.
pub async fn record_failure(
    store: &dyn KeyStore,
    key: &Key,
    secret_id: &str,
    actor: &Actor,
    mint: &Mint,
    now: Timestamp,
) {
    let change = delivery_failed(key, secret_id, actor.clone(), mint, now);
    if let Err(e) = store.apply(&change).await {
        tracing::warn!(key_id = %key.id, error = %error_chain(&e), "the failed delivery was not recorded");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{
        EnvName, GracePeriod, NewKey, Revocation, RotationPolicy, Setting, create_environment,
        create_key, revoke, rotate, set_rotation_policy,
    };
    use crate::store::SqliteStore;

    /// A sink that records each version it is asked to make current.
    #[derive(Default)]
    struct Promotions(Mutex<Vec<(String, String)>>);

    #[async_trait::async_trait]
    impl SecretSink for Promotions {
        async fn put_pending(
            &self,
            _: &str,
            _: &str,
            _: &SecretValue<'_>,
        ) -> Result<(), SecretError> {
            Ok(())
        }

        async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), SecretError> {
            let promoted = (secret_id.to_owned(), version_id.to_owned());
            self.0.lock().unwrap().push(promoted);
            Ok(())
        }
    }

    fn policy(secret_id: &str) -> Option<RotationPolicy> {
        let json =
            serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": secret_id});
        Some(RotationPolicy::from_json(&json).unwrap())
    }

    /// A key rotated by hand after its version was made current: its successor's version is
    /// made current again when the successor delivers to the same secret, named by its name
    /// or by its ARN (Secrets Manager's six characters after it), and not once the successor
    /// is revoked.
    #[tokio::test]
    async fn a_successor_is_made_current_again_only_while_it_delivers_to_that_secret() {
        let store = SqliteStore::in_memory().unwrap();
        let (mint, now, ops) = (crate::mint(), crate::now(), || Actor::operator("t"));
        let env = EnvName::parse("production").unwrap();
        let made = create_environment(&env, ops(), &mint, now);
        store.apply(&made.change).await.unwrap();
        let name = "keyward/production/billing";
        let input = NewKey {
            rotation_policy: policy(name),
            ..crate::testing::orders_key("billing")
        };
        let first = create_key(&env, input, ops(), &mint, now).unwrap();
        store.apply(&first.change).await.unwrap();
        let grace = GracePeriod::parse("24h").unwrap();
        let rotated = rotate(&first.key, grace, ops(), &mint, now).unwrap();
        store.apply(&rotated.change).await.unwrap();
        let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf");
        let Setting::Changed {
            key: successor,
            change,
        } = set_rotation_policy(&rotated.key, policy(&arn), ops(), &mint, now).unwrap()
        else {
            panic!("the policy names the secret another way")
        };
        store.apply(&change).await.unwrap();
        let pending = PendingDelivery {
            secret_id: name.to_owned(),
            version_id: PendingDelivery::version_id_for(&first.key.id),
        };
        let sink = Promotions::default();

        restore_successor(&store, &sink, &first.key, &pending, now)
            .await
            .unwrap();
        let again = (
            name.to_owned(),
            PendingDelivery::version_id_for(&successor.id),
        );
        assert_eq!(*sink.0.lock().unwrap(), std::slice::from_ref(&again));

        let Revocation::Revoked { change, .. } = revoke(&successor, ops(), &mint, now).unwrap()
        else {
            panic!("an active key is revoked")
        };
        store.apply(&change).await.unwrap();
        restore_successor(&store, &sink, &first.key, &pending, now)
            .await
            .unwrap();
        assert_eq!(
            *sink.0.lock().unwrap(),
            [again],
            "a revoked successor is never made current"
        );
    }
}
