//! The `scheduled-rotation` Lambda, invoked by an EventBridge schedule rule. One run finds the
//! keys that are due with one index query and, for each: rotates it by its policy and delivers
//! the new secret, finishes a delivery that an earlier run did not, or records the expiry
//! notice that is due (`key.expiring` within 24 hours and within an hour, then `key.expired`),
//! or looks whether a key in its grace has gone quiet while its successor is used, and records
//! `key.grace_idle` once when it has.
//!
//! A rotation delivers its new secret in the four steps of `keyward::delivery`, each safe to
//! repeat; a crash before the commit leaves the key due, so the next run rotates it, and a
//! crash after it leaves a key whose pending delivery the next run finishes. Overlapping runs
//! cannot both commit. One key's failure is logged and counted, and does not stop the others;
//! a secret that cannot be written is recorded on its key, which then waits before the next
//! attempt (`keyward::domain::DeliveryFailures`), so failing keys never crowd out the rest.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use futures_util::StreamExt;
use keyward::delivery::{self, DeliveryError};
use keyward::domain::{
    Actor, Due, ExpiryStage, GRACE_WATCH_EVERY, GraceWatch, Key, Mint, Seen, Status, Timestamp,
    expiry_notice, scheduled_rotation, watch_grace,
};
use keyward::error_chain;
use keyward::secrets::SecretSink;
use keyward::store::{KeyStore, StoreError};
use lambda_http::lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;

/// The most keys one run handles; any more are due still, and the next run takes them.
pub const MAX_KEYS_PER_RUN: usize = 1000;

/// How many keys one run handles at a time.
const CONCURRENCY: usize = 8;

/// How long before its deadline a run stops taking keys: room for the keys it has started
/// (each a few calls) and for its report, so that Lambda never cuts a run off mid-key.
pub const STOP_TAKING_KEYS_BEFORE: Duration = Duration::from_secs(30);

/// What one run did, as the function answers and logs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Keys rotated, with their new secret delivered.
    pub rotated: usize,
    /// Deliveries of earlier rotations finished.
    pub delivered: usize,
    /// `key.expiring` entries recorded.
    pub expiring: usize,
    /// `key.expired` entries recorded.
    pub expired: usize,
    /// `key.grace_idle` entries recorded.
    pub grace_idle: usize,
    /// Keys in their grace that were looked at and are not quiet yet.
    pub watched: usize,
    /// Keys that another writer changed first, left for the next run to look at again.
    pub skipped: usize,
    /// Keys whose step failed; each failure is logged.
    pub failed: usize,
    /// Due keys not taken because the run neared its deadline; they stay due for the next.
    pub deferred: usize,
}

/// What happened to one key.
enum Outcome {
    Rotated,
    Delivered,
    Noticed(ExpiryStage),
    GraceIdle,
    Watched,
    Skipped,
    Deferred,
}

/// Why one key's step failed, for the log.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] keyward::secrets::SecretError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Lifecycle(#[from] keyward::domain::LifecycleError),
}

/// The CloudWatch namespace of the run's metrics.
pub const METRICS_NAMESPACE: &str = keyward::metrics::NAMESPACE;
/// The metric that counts the keys whose step failed in a run; the stack alarms on it.
pub const FAILED_METRIC: &str = "ScheduledRotationFailed";
/// The metric that counts the keys a run rotated.
pub const ROTATED_METRIC: &str = "ScheduledRotationRotated";
/// The metric that counts the due keys a run left for the next because it neared its
/// deadline: a backlog that never clears shows here.
pub const DEFERRED_METRIC: &str = "ScheduledRotationDeferred";
/// The dimension that names the function, so that two stacks' metrics stay apart.
pub const FUNCTION_DIMENSION: &str = keyward::metrics::FUNCTION_DIMENSION;

/// The run's counts as one line in CloudWatch's Embedded Metric Format: written to standard
/// output on Lambda, CloudWatch turns it into metrics with no API call, so a run whose
/// `failed` is not zero sets off the stack's alarm.
pub fn metrics_line(report: &Report, function: &str, at: Timestamp) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[FUNCTION_DIMENSION]],
                "Metrics": [
                    {"Name": FAILED_METRIC, "Unit": "Count"},
                    {"Name": ROTATED_METRIC, "Unit": "Count"},
                    {"Name": DEFERRED_METRIC, "Unit": "Count"},
                ],
            }],
        },
        FUNCTION_DIMENSION: function,
        FAILED_METRIC: report.failed,
        ROTATED_METRIC: report.rotated,
        DEFERRED_METRIC: report.deferred,
    })
    .to_string()
}

/// The Lambda handler: the rule's ARN from the event names the actor.
pub async fn handler(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<Report, Error> {
    let rule = event
        .payload
        .resources
        .as_deref()
        .and_then(<[String]>::first)
        .ok_or("the event names no schedule rule in its resources: is it a Scheduled Event?")?;
    let now = keyward::now();
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let stop_taking_at = stop_taking_keys_at(event.context.deadline, SystemTime::now());
    let actor = Actor::schedule(rule.as_str());
    let report = run_until(
        store,
        sink,
        mint,
        &actor,
        now,
        MAX_KEYS_PER_RUN,
        stop_taking_at,
    )
    .await
    .inspect_err(|_| {
        // A run that cannot even read its due keys is a failure the alarm must see.
        let failed = Report {
            failed: 1,
            ..Report::default()
        };
        println!("{}", metrics_line(&failed, &function, now));
    })?;
    println!("{}", metrics_line(&report, &function, now));
    Ok(report)
}

/// One scheduled run at `now`. Only the query for due keys failing fails the run.
pub async fn run(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    actor: &Actor,
    now: Timestamp,
) -> Result<Report, StoreError> {
    run_at_most(store, sink, mint, actor, now, MAX_KEYS_PER_RUN).await
}

/// When a run whose invocation ends at `deadline` (Lambda's, in milliseconds since the epoch)
/// stops taking keys, seen at `clock`; `None` where there is no deadline (0, outside Lambda).
pub fn stop_taking_keys_at(deadline: u64, clock: SystemTime) -> Option<Instant> {
    if deadline == 0 {
        return None;
    }
    let since_epoch = clock.duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_millis(deadline).saturating_sub(since_epoch);
    Some(Instant::now() + left.saturating_sub(STOP_TAKING_KEYS_BEFORE))
}

/// [`run`], handling at most `limit` keys: a test scales a run down to what an emulator
/// can hold.
pub async fn run_at_most(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    actor: &Actor,
    now: Timestamp,
    limit: usize,
) -> Result<Report, StoreError> {
    run_until(store, sink, mint, actor, now, limit, None).await
}

/// [`run_at_most`], taking no key once `stop_taking_at` has passed: those are left due, for
/// the next run, and counted as deferred.
pub async fn run_until(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    actor: &Actor,
    now: Timestamp,
    limit: usize,
    stop_taking_at: Option<Instant>,
) -> Result<Report, StoreError> {
    let keys = store.due_keys(now, limit).await?;
    let found = keys.len();
    let outcomes: Vec<Result<Outcome, StepError>> = futures_util::stream::iter(keys)
        .map(|key| async move {
            if stop_taking_at.is_some_and(|at| Instant::now() >= at) {
                return Ok(Outcome::Deferred);
            }
            let result = step(store, sink, mint, actor, &key, now).await;
            if let Err(e) = &result {
                tracing::error!(key_id = %key.id, error = %error_chain(e), "a due key failed");
            }
            result
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = Report::default();
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::Rotated) => report.rotated += 1,
            Ok(Outcome::Delivered) => report.delivered += 1,
            Ok(Outcome::Noticed(ExpiryStage::Expired)) => report.expired += 1,
            Ok(Outcome::Noticed(_)) => report.expiring += 1,
            Ok(Outcome::GraceIdle) => report.grace_idle += 1,
            Ok(Outcome::Watched) => report.watched += 1,
            Ok(Outcome::Skipped) => report.skipped += 1,
            Ok(Outcome::Deferred) => report.deferred += 1,
            Err(_) => report.failed += 1,
        }
    }
    tracing::info!(
        due = found,
        rotated = report.rotated,
        delivered = report.delivered,
        expiring = report.expiring,
        expired = report.expired,
        grace_idle = report.grace_idle,
        watched = report.watched,
        skipped = report.skipped,
        failed = report.failed,
        deferred = report.deferred,
        "scheduled run"
    );
    Ok(report)
}

/// Applies a change; losing to another writer is not a failure but a reason to stop here.
async fn applied(
    store: &dyn KeyStore,
    change: &keyward::domain::Change,
) -> Result<bool, StoreError> {
    match store.apply(change).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn step(
    store: &dyn KeyStore,
    sink: &dyn SecretSink,
    mint: &Mint,
    actor: &Actor,
    key: &Key,
    now: Timestamp,
) -> Result<Outcome, StepError> {
    tracing::debug!(key_id = %key.id, due = ?key.due(now), "handling a due key");
    match key.due(now) {
        None => Ok(Outcome::Skipped),
        Some(Due::Delivery) => {
            match delivery::finish(store, sink, &key.id, actor, mint, now).await? {
                Some(_) => Ok(Outcome::Delivered),
                None => Ok(Outcome::Skipped),
            }
        }
        Some(Due::Rotation) => {
            let rotated = scheduled_rotation(key, actor.clone(), mint, now)?;
            if let Err(e) = delivery::stage(sink, &rotated, now).await {
                if let Some(policy) = &key.rotation_policy {
                    delivery::record_failure(store, key, &policy.secret_id, actor, mint, now).await;
                }
                return Err(e.into());
            }
            let committed = applied(store, &rotated.change).await;
            if let (Err(StoreError::SecretClaimed), Some(policy)) =
                (&committed, &key.rotation_policy)
            {
                delivery::record_failure(store, key, &policy.secret_id, actor, mint, now).await;
            }
            if !committed? {
                return Ok(Outcome::Skipped);
            }
            tracing::info!(key_id = %key.id, new_key_id = %rotated.key.id, "key rotated on schedule");
            delivery::finish(store, sink, &rotated.key.id, actor, mint, now).await?;
            Ok(Outcome::Rotated)
        }
        Some(Due::Notice(stage)) => match expiry_notice(key, actor.clone(), mint, now) {
            Some(change) if applied(store, &change).await? => {
                tracing::info!(key_id = %key.id, action = %change.activity.event.action(), "expiry notice recorded");
                Ok(Outcome::Noticed(stage))
            }
            _ => Ok(Outcome::Skipped),
        },
        Some(Due::GraceWatch) => watch(store, mint, actor, key, now).await,
    }
}

/// Looks whether a key in its grace has gone quiet while its successor is used: records
/// `key.grace_idle` if so, or else moves the key's watch in the due index to when it next
/// could be, without changing the key. A successor that is no longer active (rotated or revoked
/// in turn) will not take over, so the key stops being watched. A read that fails still moves
/// the watch on by [`GRACE_WATCH_EVERY`], so that a failing key cannot stay first in the index.
async fn watch(
    store: &dyn KeyStore,
    mint: &Mint,
    actor: &Actor,
    key: &Key,
    now: Timestamp,
) -> Result<Outcome, StepError> {
    let Some(successor) = &key.rotated_to else {
        return Ok(Outcome::Skipped);
    };
    let read = async {
        let next = store.key(successor).await?;
        // A rotation's successor is of its predecessor's environment.
        let environment = &key.environment;
        let mut last = store.last_use(environment, &[&key.id, successor]).await?;
        let hours = |id| store.hourly_usage(environment, id, Seen::since(now));
        let (own, theirs) = (hours(&key.id).await?, hours(successor).await?);
        let own = Seen {
            last: last.remove(&key.id).unwrap_or_default(),
            hours: own,
        };
        let theirs = Seen {
            last: last.remove(successor).unwrap_or_default(),
            hours: theirs,
        };
        Ok::<_, StoreError>((next, own, theirs))
    };
    let (next, own, theirs) = match read.await {
        Ok(read) => read,
        Err(e) => {
            if let Some(due) = key.next_due_after_watch(now + GRACE_WATCH_EVERY) {
                let _ = store.postpone(key, due).await;
            }
            return Err(e.into());
        }
    };
    if next.is_none_or(|k| k.status(now) != Status::Active) {
        if let Some(due) = key.next_due_after_watch(key.expires_at.unwrap_or(now)) {
            store.postpone(key, due).await?;
        }
        return Ok(Outcome::Watched);
    }
    match watch_grace(key, &own, &theirs, actor.clone(), mint, now) {
        GraceWatch::Idle(change) => {
            if !applied(store, &change).await? {
                return Ok(Outcome::Skipped);
            }
            tracing::info!(key_id = %key.id, new_key_id = %successor, "key quiet in its grace");
            Ok(Outcome::GraceIdle)
        }
        GraceWatch::NotYet(next) => {
            if let Some(due) = key.next_due_after_watch(next) {
                store.postpone(key, due).await?;
            }
            Ok(Outcome::Watched)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use keyward::domain::{Action, ActorType, NewKey, RotationPolicy, create_key};
    use keyward::secrets::FileSink;
    use keyward::store::{ActivityFilter, PageRequest};
    use keyward::testing::orders_key;
    use keyward::testing::seeded;
    use lambda_http::lambda_runtime::Context;

    use super::*;

    const SCHEDULED_EVENT: &str = include_str!("../fixtures/scheduled-event.json");

    #[test]
    fn the_metrics_line_is_embedded_metric_format_with_the_failures() {
        let report = Report {
            rotated: 3,
            failed: 2,
            deferred: 4,
            ..Report::default()
        };
        let at = keyward::now();
        let line: serde_json::Value =
            serde_json::from_str(&metrics_line(&report, "keyward-ScheduledRotation", at)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], at.timestamp_millis());
        assert_eq!(directive["Namespace"], METRICS_NAMESPACE);
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([[FUNCTION_DIMENSION]])
        );
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [FAILED_METRIC, ROTATED_METRIC, DEFERRED_METRIC]);
        assert_eq!(line[FAILED_METRIC], 2);
        assert_eq!(line[ROTATED_METRIC], 3);
        assert_eq!(line[DEFERRED_METRIC], 4);
        assert_eq!(line[FUNCTION_DIMENSION], "keyward-ScheduledRotation");
    }

    fn lambda_event(json: &str) -> LambdaEvent<EventBridgeEvent> {
        LambdaEvent::new(serde_json::from_str(json).unwrap(), Context::default())
    }

    #[tokio::test]
    async fn a_scheduled_event_names_its_rule_as_the_actor_of_each_rotation() {
        let made = keyward::now() - TimeDelta::days(2);
        let s = seeded("production", made).await;
        let input = NewKey {
            rotation_policy: Some(
                RotationPolicy::from_json(&serde_json::json!({"every": "P1D", "grace_period": "1h", "secret_id": "billing"}))
                    .unwrap(),
            ),
            ..orders_key("billing")
        };
        let issued = create_key(
            &s.environment,
            input,
            Actor::operator("test"),
            &s.mint,
            made,
        )
        .unwrap();
        s.store.apply(&issued.change).await.unwrap();
        let dir = std::env::temp_dir().join(format!("keyward-handler-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sink = FileSink::new(dir.join("secrets.json"));

        let report = handler(&s.store, &sink, &s.mint, lambda_event(SCHEDULED_EVENT))
            .await
            .unwrap();
        assert_eq!((report.rotated, report.failed), (1, 0), "{report:?}");
        let filter = ActivityFilter {
            action: Some(Action::Rotated),
            key_id: None,
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        let entries = s
            .store
            .environment_activity(&s.environment, &filter, &page)
            .await
            .unwrap()
            .items;
        assert_eq!(entries[0].actor.kind, ActorType::Schedule);
        assert_eq!(
            entries[0].actor.id,
            "arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_stops_taking_keys_thirty_seconds_before_its_deadline_and_without_one_never() {
        let clock = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let deadline_in = |left: Duration| (clock + left).duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(
            stop_taking_keys_at(0, clock),
            None,
            "no deadline outside Lambda"
        );
        let before = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap();
        let stop = stop_taking_keys_at(ms(deadline_in(Duration::from_secs(240))), clock).unwrap();
        let after = Instant::now();
        let taking = Duration::from_secs(240) - STOP_TAKING_KEYS_BEFORE;
        assert!(stop >= before + taking && stop <= after + taking);
        let late = stop_taking_keys_at(ms(deadline_in(Duration::from_secs(10))), clock).unwrap();
        assert!(
            late <= Instant::now(),
            "ten seconds before the deadline, no key is taken"
        );
    }

    #[tokio::test]
    async fn keys_left_at_the_deadline_stay_due_and_the_next_run_takes_them() {
        // The harness's policy keys rotate every 30 days: made 31 days ago, both are due.
        let made = keyward::now() - TimeDelta::days(31);
        let s = seeded("production", made).await;
        for secret in ["billing", "shipping"] {
            s.policy_key(secret, made).await;
        }
        let sink = FileSink::new(
            std::env::temp_dir().join(format!("keyward-deadline-{}.json", std::process::id())),
        );
        let actor = Actor::schedule("rule");
        let now = keyward::now();
        let passed = Some(Instant::now());
        let late = run_until(&s.store, &sink, &s.mint, &actor, now, 10, passed).await;
        assert_eq!(
            late.unwrap(),
            Report {
                deferred: 2,
                ..Report::default()
            }
        );
        let next = run(&s.store, &sink, &s.mint, &actor, now).await.unwrap();
        assert_eq!((next.rotated, next.deferred), (2, 0), "{next:?}");
    }

    #[tokio::test]
    async fn an_event_that_names_no_rule_is_an_error_not_a_panic() {
        let s = seeded("production", keyward::now()).await;
        let sink = FileSink::new(std::env::temp_dir().join("keyward-never-written.json"));
        let event = SCHEDULED_EVENT.replace(
            r#""resources": [
        "arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"
    ],"#,
            r#""resources": [],"#,
        );
        assert_ne!(event, SCHEDULED_EVENT);
        let err = handler(&s.store, &sink, &s.mint, lambda_event(&event))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("names no schedule rule"), "{err}");
    }
}
