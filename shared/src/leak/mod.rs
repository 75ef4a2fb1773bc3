//! Answering reports that secrets leaked. Each string of a report is checked for the
//! deployment's key format and checksum first, so that a string that is not one of its secret
//! keys costs no read; a key that is found is taken through the domain's [`leak_step`]s under
//! its environment's leak policy: its leak is recorded once, then it is revoked, rotated with
//! no grace, or, under `notify`, left working.

#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "secrets-manager")]
pub mod gitlab;

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use crate::delivery;
use crate::domain::{
    Actor, EnvName, Key, KeyHash, KeyPrefix, KeyWrite, Kind, LeakDetails, LeakPolicy, LeakSource,
    LeakStep, Mint, PresentedKey, Status, Timestamp, leak_step,
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

/// What one string of a report came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Not a secret key of this deployment (format or checksum): not read.
    NotAKey,
    /// A publishable key, which is meant to be public: not read, and left alone.
    Publishable,
    /// A well-formed secret key that no stored key has.
    Unknown,
    /// A stored key, answered under its environment's leak policy, or ended before.
    Key,
}

/// A string that a report says leaked, with where it was seen.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The string.
    pub secret: String,
    /// Where it was seen, as the reporter said.
    pub details: LeakDetails,
}

impl Reported {
    /// Each of `secrets`, all seen where `details` says.
    pub fn all(secrets: &[String], details: &LeakDetails) -> Vec<Self> {
        secrets
            .iter()
            .map(|secret| Self {
                secret: secret.clone(),
                details: details.clone(),
            })
            .collect()
    }
}

/// How many strings of a report came to each [`Finding`], for the log: never which strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// [`Finding::NotAKey`].
    pub not_keys: usize,
    /// [`Finding::Publishable`].
    pub publishable: usize,
    /// [`Finding::Unknown`].
    pub unknown: usize,
    /// [`Finding::Key`].
    pub keys: usize,
}

impl Findings {
    /// The count of each finding.
    pub fn of(found: &[Finding]) -> Self {
        let mut findings = Self::default();
        for finding in found {
            match finding {
                Finding::NotAKey => findings.not_keys += 1,
                Finding::Publishable => findings.publishable += 1,
                Finding::Unknown => findings.unknown += 1,
                Finding::Key => findings.keys += 1,
            }
        }
        findings
    }
}

/// The leak policies of the environments a report touched, each read once.
type Policies = std::sync::Mutex<HashMap<EnvName, LeakPolicy>>;

/// Where a report's keys are answered: the store, where a rotated key's policy delivers its
/// successor, and where ids and secrets come from.
#[derive(Clone, Copy)]
pub struct Responder<'a> {
    /// Where keys are read and changed.
    pub store: &'a dyn KeyStore,
    /// Where a rotated key's successor is delivered.
    pub secrets: &'a dyn SecretSink,
    /// Where new ids and secrets come from.
    pub mint: &'a Mint,
    /// The deployment's key prefix: a string with another is not one of its keys.
    pub prefix: &'a KeyPrefix,
}

impl Responder<'_> {
    /// Answers every secret key of this deployment among `reported` (the same key twice is
    /// answered once, with the details it came with first), as reported by `source`, and says
    /// what each string came to, in order. A key whose answer fails is left for a report again
    /// to finish, since every step is safe to repeat; the first failure is the error, after
    /// every other key was answered.
    pub async fn report(
        &self,
        reported: &[Reported],
        source: LeakSource,
        now: Timestamp,
    ) -> Result<Vec<Finding>, StoreError> {
        let actor = Actor::system(source.as_str());
        let policies = Policies::default();
        let mut found = vec![Finding::NotAKey; reported.len()];
        // Each string's hash, if it is a secret key of this deployment: parsed once, read once.
        let mut hashes = vec![None; reported.len()];
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for (at, item) in reported.iter().enumerate() {
            match PresentedKey::parse(&item.secret, self.prefix) {
                Err(_) => {}
                Ok(presented) if presented.kind == Kind::Publishable => {
                    found[at] = Finding::Publishable;
                }
                Ok(presented) => {
                    if seen.insert(presented.hash.clone()) {
                        keys.push((presented.hash.clone(), at));
                    }
                    hashes[at] = Some(presented.hash);
                }
            }
        }
        let answers: Vec<_> = stream::iter(keys)
            .map(|(hash, at)| {
                let (actor, policies) = (&actor, &policies);
                async move {
                    let details = &reported[at].details;
                    let answer = self.answer(&hash, actor, details, policies, now).await;
                    (hash, answer)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut failure = None;
        let mut by_hash = HashMap::new();
        for (hash, answer) in answers {
            match answer {
                Ok(true) => {
                    by_hash.insert(hash, Finding::Key);
                }
                Ok(false) => {
                    by_hash.insert(hash, Finding::Unknown);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for (finding, hash) in found.iter_mut().zip(&hashes) {
            if let Some(answered) = hash.as_ref().and_then(|hash| by_hash.get(hash)) {
                *finding = *answered;
            }
        }
        Ok(found)
    }

    /// Takes the key with this hash, if one is stored, through every step of its answer;
    /// says whether there was such a key. Only the store failing is an error, since that is
    /// not about the string; a step that cannot be taken (the successor of a default key
    /// that cannot be staged, a secret claimed elsewhere, a key that keeps changing) is
    /// logged and left for a report again, the key refused by every check meanwhile if its
    /// leak was recorded.
    async fn answer(
        &self,
        hash: &KeyHash,
        actor: &Actor,
        details: &LeakDetails,
        policies: &Policies,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(mut key) = self.store.key_by_hash(hash).await? else {
            return Ok(false);
        };
        if matches!(key.status(now), Status::Revoked | Status::Expired) {
            return Ok(true);
        }
        let policy = self.policy_of(&key.environment, policies).await?;
        let unfinished = |key: &Key, why: &str| {
            tracing::error!(key_id = %key.id, environment = %key.environment, why, "a leaked key's answer is unfinished; a report again finishes it");
            Ok(true)
        };
        for _ in 0..MAX_STEPS {
            let step = match leak_step(&key, policy, actor, details, self.mint, now) {
                Ok(step) => step,
                Err(e) => return unfinished(&key, &e.to_string()),
            };
            let (next, change) = match step {
                LeakStep::Ended => return Ok(true),
                LeakStep::Record { key, change } => (key, *change),
                LeakStep::Revoke { key, change } => (key, *change),
                LeakStep::Rotate(rotated) => {
                    if let Err(e) = delivery::stage(self.secrets, &rotated, now).await {
                        let why = format!("its successor could not be staged: {}", error_chain(&e));
                        return unfinished(&key, &why);
                    }
                    (rotated.previous.clone(), rotated.change.clone())
                }
            };
            match self.store.apply(&change).await {
                Ok(()) => {
                    if next.leaked_at.is_some() && key.leaked_at.is_none() {
                        tracing::warn!(key_id = %key.id, environment = %key.environment, "key reported leaked");
                    }
                    self.finish_delivery(&change.keys, actor, now).await;
                    key = next;
                }
                Err(StoreError::Conflict) => match self.store.key(&key.id).await? {
                    Some(fresh) => key = fresh,
                    None => return unfinished(&key, "it is gone"),
                },
                Err(StoreError::SecretClaimed) => {
                    return unfinished(&key, "another key holds its policy's secret");
                }
                Err(e) => return Err(e),
            }
        }
        unfinished(&key, "it kept changing")
    }

    /// The leak policy of `environment`, read once per report.
    async fn policy_of(
        &self,
        environment: &EnvName,
        policies: &Policies,
    ) -> Result<LeakPolicy, StoreError> {
        let kept = policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(environment)
            .copied();
        if let Some(policy) = kept {
            return Ok(policy);
        }
        let policy = self
            .store
            .environment(environment)
            .await?
            .map(|env| env.leak_policy)
            .unwrap_or_default();
        policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(environment.clone(), policy);
        Ok(policy)
    }

    /// Makes a rotated key's successor current in its policy's secret, if the rotation
    /// made one with a pending delivery. A failure is left to scheduled rotation, which
    /// finishes every pending delivery; the leaked key is gone either way.
    async fn finish_delivery(&self, written: &[KeyWrite], actor: &Actor, now: Timestamp) {
        let pending = written.iter().find_map(|write| match write {
            KeyWrite::Insert(key) if key.pending_delivery.is_some() => Some(key),
            _ => None,
        });
        let Some(successor) = pending else {
            return;
        };
        if let Err(e) = delivery::finish(
            self.store,
            self.secrets,
            &successor.id,
            actor,
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
