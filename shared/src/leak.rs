//! Answering reports that secrets leaked. Each string of a report is checked for the
//! deployment's key format and checksum first, so that a string that is not one of its secret
//! keys costs no read; a key that is found is taken through the domain's [`leak_step`]s: its
//! leak is recorded once, then it is revoked (or, as its environment's default key, rotated
//! with no grace).

use std::collections::HashSet;

use futures_util::stream::{self, StreamExt};

use crate::delivery;
use crate::domain::{
    Actor, KeyHash, KeyPrefix, KeyWrite, Kind, LeakDetails, LeakSource, LeakStep, Mint,
    PresentedKey, Timestamp, leak_step,
};
use crate::error_chain;
use crate::secrets::SecretSink;
use crate::store::{KeyStore, StoreError};

/// The most strings one report may hold.
pub const MAX_SECRETS: usize = 1000;

/// The largest leak report body accepted: [`MAX_SECRETS`] of the longest keys (85 characters)
/// with a `url` fit, though they would not fit the API's other routes' limit.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// How many of a report's keys are answered at once: a batch of [`MAX_SECRETS`] must finish
/// within API Gateway's 29 s and a scanner's timeout, which one read and two writes per key
/// in turn, 3,000 round trips, might not on DynamoDB (`BENCHMARKS.md`).
const CONCURRENCY: usize = 16;

/// How many steps one key may take, with the re-reads of steps that lost to another writer:
/// a report needs at most two (record, then revoke or rotate).
const MAX_STEPS: usize = 6;

/// What the strings of a report came to, for the log: never which strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// Strings that are not a secret key of this deployment (format or checksum): not read.
    pub not_keys: usize,
    /// Publishable keys, which are meant to be public: not read, and left alone.
    pub publishable: usize,
    /// Well-formed secret keys that no stored key has.
    pub unknown: usize,
    /// Stored keys, each answered: recorded and ended now, or ended before.
    pub keys: usize,
}

/// Where a report's keys are answered: the store, where a rotated default key's policy
/// delivers its successor, and where ids and secrets come from.
#[derive(Clone, Copy)]
pub struct Responder<'a> {
    /// Where keys are read and changed.
    pub store: &'a dyn KeyStore,
    /// Where a rotated default key's successor is delivered, if it has a rotation policy.
    pub secrets: &'a dyn SecretSink,
    /// Where new ids and secrets come from.
    pub mint: &'a Mint,
    /// The deployment's key prefix: a string with another is not one of its keys.
    pub prefix: &'a KeyPrefix,
}

impl Responder<'_> {
    /// Answers every secret key of this deployment among `secrets` (at most [`MAX_SECRETS`];
    /// the same key twice is answered once), as reported by `source` with `details`. A key
    /// whose answer fails is left for a report again to finish, since every step is safe to
    /// repeat; the first failure is the error, after every other key was answered.
    pub async fn report(
        &self,
        secrets: &[String],
        source: LeakSource,
        details: &LeakDetails,
        now: Timestamp,
    ) -> Result<Findings, StoreError> {
        let mut findings = Findings::default();
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for secret in secrets {
            match PresentedKey::parse(secret, self.prefix) {
                Err(_) => findings.not_keys += 1,
                Ok(presented) if presented.kind == Kind::Publishable => findings.publishable += 1,
                Ok(presented) => {
                    if seen.insert(presented.hash.clone()) {
                        keys.push(presented.hash);
                    }
                }
            }
        }
        let answers: Vec<_> = stream::iter(keys)
            .map(|hash| self.answer(hash, source, details, now))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut failure = None;
        for answer in answers {
            match answer {
                Ok(true) => findings.keys += 1,
                Ok(false) => findings.unknown += 1,
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(findings), Err)
    }

    /// Takes the key with this hash, if one is stored, through every step of its answer;
    /// says whether there was such a key.
    async fn answer(
        &self,
        hash: KeyHash,
        source: LeakSource,
        details: &LeakDetails,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(mut key) = self.store.key_by_hash(&hash).await? else {
            return Ok(false);
        };
        for _ in 0..MAX_STEPS {
            let step = leak_step(&key, source, details, self.mint, now)
                .map_err(|e| StoreError::Backend(format!("a leak step was refused: {e}").into()))?;
            let (next, change) = match step {
                LeakStep::Ended | LeakStep::Public => return Ok(true),
                LeakStep::Record { key, change } => {
                    tracing::warn!(key_id = %key.id, environment = %key.environment, "key reported leaked");
                    (key, *change)
                }
                LeakStep::Revoke { key, change } => (key, *change),
                LeakStep::Rotate(rotated) => {
                    delivery::stage(self.secrets, &rotated, now)
                        .await
                        .map_err(|e| StoreError::Backend(e.into()))?;
                    (rotated.previous.clone(), rotated.change.clone())
                }
            };
            match self.store.apply(&change).await {
                Ok(()) => {
                    self.finish_delivery(&change.keys, source, now).await;
                    key = next;
                }
                Err(StoreError::Conflict) => match self.store.key(&key.id).await? {
                    Some(fresh) => key = fresh,
                    None => return Err(StoreError::Conflict),
                },
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Makes a rotated default key's successor current in its policy's secret, if the rotation
    /// made one with a pending delivery. A failure is left to scheduled rotation, which
    /// finishes every pending delivery; the leaked key is gone either way.
    async fn finish_delivery(&self, written: &[KeyWrite], source: LeakSource, now: Timestamp) {
        let pending = written.iter().find_map(|write| match write {
            KeyWrite::Insert(key) if key.pending_delivery.is_some() => Some(key),
            _ => None,
        });
        let Some(successor) = pending else {
            return;
        };
        let actor = Actor::system(source.as_str());
        if let Err(e) = delivery::finish(
            self.store,
            self.secrets,
            &successor.id,
            &actor,
            self.mint,
            now,
        )
        .await
        {
            tracing::warn!(
                error = %error_chain(&e),
                key_id = %successor.id,
                "the leaked key is rotated; scheduled rotation finishes its successor's delivery"
            );
        }
    }
}
