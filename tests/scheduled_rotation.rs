//! Scheduled rotation end to end, with the clock in the test's hands: on DynamoDB with Secrets
//! Manager (moto's server, through the real SDK over HTTP), and on SQLite with the local
//! secrets file. Every case runs on both.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{TimeDelta, TimeZone, Utc};
use keyward::aws::calls::acting_as;
use keyward::domain::{
    Action, Actor, Change, EnvName, FIRST_RETRY_WAIT, GracePeriod, HourlyUsage, Key, KeyHash,
    KeyId, LastUse, Mint, NewKey, PresentedKey, RETRY_SLACK, RotationPolicy, Secret, SecretPrefix,
    Timestamp, UsageTally, Verdict, check, create_environment, create_key, rotate,
};
use keyward::http::{Context, Settings};
use keyward::secrets::{FileSink, SecretError, SecretSink, SecretValue, SecretsManagerSink};
use keyward::store::{
    ActivityFilter, KeyLookup, KeyStore, Page, PageRequest, SqliteStore, StoreError, UsageOwner,
    UsageStore,
};
use keyward::testing::orders_key;
use keyward::testing::{body_json, event};
use scheduled_rotation::{MAX_KEYS_PER_RUN, Report, run, run_at_most};
use serde_json::Value;

/// The rotate route's real API Gateway event: `POST /v1/keys/{{KEY_ID}}/rotate`, grace `24h`.
const ROTATE_BY_HAND: &str = include_str!("../functions/rotate-key/fixtures/rest.json");

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

fn rule() -> Actor {
    Actor::schedule("arn:aws:events:us-east-1:123456789012:rule/keyward-rotation")
}

fn env() -> EnvName {
    EnvName::parse("production").unwrap()
}

/// Where one case's keys and secrets live, and how the test reads a delivered secret.
struct Backend {
    store: Arc<dyn KeyStore>,
    sink: Arc<dyn SecretSink>,
    reader: Reader,
    /// Makes secret names unique across the cases that share one moto server.
    prefix: String,
    /// The environment's default key, which the cases that rotate by hand call the API with.
    admin: Secret,
    /// The case's own mint.
    mint: Mint,
}

enum Reader {
    SecretsManager(aws_sdk_secretsmanager::Client),
    File(PathBuf),
}

impl Backend {
    /// The secret `name` of the environment, under this backend's secret prefix.
    fn secret_id(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.prefix, env())
    }

    /// The current value of a delivered secret, if the secret has one.
    async fn current(&self, secret_id: &str) -> Option<Value> {
        match &self.reader {
            Reader::SecretsManager(client) => {
                // AWSCURRENT is what GetSecretValue reads by default; it is named here because
                // moto's default ignores a label moved by UpdateSecretVersionStage.
                let out = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .version_stage("AWSCURRENT")
                    .send()
                    .await;
                out.ok()
                    .and_then(|o| o.secret_string().map(str::to_owned))
                    .map(|s| serde_json::from_str(&s).unwrap())
            }
            Reader::File(path) => {
                let file: Value = serde_json::from_slice(&std::fs::read(path).ok()?).unwrap();
                assert_eq!(
                    std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
                    0o600,
                    "the secrets file is its owner's only"
                );
                Some(file[secret_id]["current"]["value"].clone()).filter(|v| !v.is_null())
            }
        }
    }

    /// Makes a key at `at` whose policy rotates it every `every`, into the secret `name`.
    async fn policy_key(
        &self,
        name: &str,
        every: &str,
        grace: &str,
        at: Timestamp,
    ) -> (Key, Secret) {
        let policy = serde_json::json!({"every": every, "grace_period": grace, "secret_id": self.secret_id(name)});
        self.key(
            name,
            Some(RotationPolicy::from_json(&policy).unwrap()),
            None,
            at,
        )
        .await
    }

    async fn key(
        &self,
        name: &str,
        rotation_policy: Option<RotationPolicy>,
        expires_at: Option<Timestamp>,
        at: Timestamp,
    ) -> (Key, Secret) {
        let input = NewKey {
            expires_at,
            rotation_policy,
            ..orders_key(name)
        };
        let issued = create_key(&env(), input, Actor::operator("test"), &self.mint, at).unwrap();
        self.store.apply(&issued.change).await.unwrap();
        (issued.key, issued.secret)
    }

    /// One scheduled run, whose AWS calls are recorded as the scheduled-rotation function's.
    async fn run(&self, now: Timestamp) -> Report {
        let rule = rule();
        let run = run(&*self.store, &*self.sink, &self.mint, &rule, now);
        acting_as("ScheduledRotation", run).await.unwrap()
    }

    /// Rotates `key` through the rotate route's handler, as the default key would from API
    /// Gateway, on `store` and `sink` (this backend's own, or ones that crash). Answers the
    /// status and the body.
    async fn rotate_by_hand(
        &self,
        store: &dyn KeyStore,
        sink: &dyn SecretSink,
        key: &Key,
        now: Timestamp,
    ) -> (u16, Value) {
        let settings = Settings {
            secret_prefix: SecretPrefix::parse(&format!("{}/", self.prefix)).unwrap(),
            ..Settings::default()
        };
        let context = Context {
            store,
            settings: &settings,
            secrets: sink,
            mint: &self.mint,
            usage: &keyward::usage::NotCounted,
            people: &keyward::http::NoPeople,
        };
        let vars = [("KEY_ID", key.id.as_str()), ("KEY", self.admin.expose())];
        let rotate = rotate_key::handler(context, event(ROTATE_BY_HAND, &vars), now);
        let response = acting_as("RotateKey", rotate).await;
        (response.status().as_u16(), body_json(&response))
    }

    async fn all_keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = PageRequest { limit: 1000, after };
            let page = self.store.keys(&env(), &page).await.unwrap();
            keys.extend(page.items);
            match page.next_cursor {
                Some(cursor) => after = Some(cursor),
                None => return keys,
            }
        }
    }

    /// How many keys replaced the key `id`.
    async fn successors(&self, id: &KeyId) -> usize {
        let keys = self.all_keys().await;
        keys.iter()
            .filter(|k| k.rotated_from.as_ref() == Some(id))
            .count()
    }

    /// A policy key `name` rotated once by the schedule and delivered, then rotated again by
    /// a run that dies right after it commits: the time of that run, and the new key whose
    /// delivery it left pending.
    async fn stranded_delivery(&self, name: &str) -> (Timestamp, Key) {
        let (key, _) = self.policy_key(name, "P7D", "24h", t0()).await;
        let first = t0() + TimeDelta::days(7);
        assert_eq!(self.run(first).await.rotated, 1);
        let delivered = self
            .assert_rotated_once_and_delivered(&key, name, first)
            .await;
        let second = delivered.created_at + TimeDelta::days(7);
        let (store, _) = self.crashing_after(Step::CommitRotation);
        let report = acting_as(
            "ScheduledRotation",
            run(&store, &*self.sink, &self.mint, &rule(), second),
        )
        .await
        .unwrap();
        assert_eq!(report.failed, 1, "{report:?}");
        let stranded = self
            .all_keys()
            .await
            .into_iter()
            .find(|k| k.rotated_from.as_ref() == Some(&delivered.id))
            .expect("the second rotation was committed");
        (second, stranded)
    }

    /// This backend's store and sink, each dying right after `step`.
    fn crashing_after(&self, step: Step) -> (CrashingStore, CrashingSink) {
        let store = CrashingStore {
            inner: Arc::clone(&self.store),
            after: step,
        };
        let sink = CrashingSink {
            inner: Arc::clone(&self.sink),
            after: step,
        };
        (store, sink)
    }

    async fn entries(&self, action: Action) -> Vec<keyward::domain::ActivityEntry> {
        let filter = ActivityFilter {
            action: Some(action),
            key_id: None,
        };
        let page = PageRequest {
            limit: 1000,
            after: None,
        };
        self.store
            .environment_activity(&env(), &filter, &page)
            .await
            .unwrap()
            .items
    }

    /// The verdict on a secret at `now`, as `/v1/verify` and the authorizer give it.
    async fn verdict(&self, secret: &str, now: Timestamp) -> Verdict {
        let presented =
            PresentedKey::parse(secret, &Default::default()).expect("a well-formed key");
        match self.store.key_by_hash(&presented.hash).await.unwrap() {
            Some(key) => check(&key, Some(&env()), None, &[] as &[&str], now),
            None => Verdict::NotFound,
        }
    }

    /// Checks that `old` was rotated exactly once, by the schedule, and that its secret holds
    /// the successor's key, current and valid. Returns the successor.
    async fn assert_rotated_once_and_delivered(
        &self,
        old: &Key,
        name: &str,
        now: Timestamp,
    ) -> Key {
        let successors: Vec<Key> = self
            .all_keys()
            .await
            .into_iter()
            .filter(|k| k.rotated_from.as_ref() == Some(&old.id))
            .collect();
        assert_eq!(successors.len(), 1, "{name}: exactly one new key");
        let new = successors.into_iter().next().unwrap();
        assert_eq!(
            new.pending_delivery, None,
            "{name}: the delivery is recorded"
        );
        let stored_old = self.store.key(&old.id).await.unwrap().unwrap();
        assert_eq!(stored_old.rotated_to.as_ref(), Some(&new.id));
        let current = self
            .current(&self.secret_id(name))
            .await
            .unwrap_or_else(|| panic!("{name}: the secret has a current value"));
        assert_eq!(current["key_id"], new.id.as_str(), "{name}");
        assert_eq!(current["environment"], "production");
        assert!(current["rotated_at"].is_string());
        let secret = current["secret"].as_str().unwrap();
        assert_eq!(
            PresentedKey::parse(secret, &Default::default())
                .unwrap()
                .hash,
            new.hash
        );
        assert_eq!(self.verdict(secret, now).await, Verdict::Valid, "{name}");
        new
    }
}

/// An empty environment on a fresh DynamoDB table, with Secrets Manager, both on moto.
async fn aws() -> Backend {
    let config = keyward::testing::moto_config().await;
    let table = keyward::testing::moto_table("schedule").await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    with_environment(
        Arc::new(table.store),
        Arc::new(SecretsManagerSink::new(client.clone())),
        Reader::SecretsManager(client),
        format!("keyward/{}", table.name),
    )
    .await
}

/// An empty environment in an in-memory SQLite store, with a fresh secrets file.
async fn local() -> Backend {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("keyward-schedule-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secrets.json");
    let _ = std::fs::remove_file(&path);
    with_environment(
        Arc::new(SqliteStore::in_memory().unwrap()),
        Arc::new(FileSink::new(&path)),
        Reader::File(path),
        "local".to_owned(),
    )
    .await
}

/// The backend, with the environment made in its store.
async fn with_environment(
    store: Arc<dyn KeyStore>,
    sink: Arc<dyn SecretSink>,
    reader: Reader,
    prefix: String,
) -> Backend {
    let mint = keyward::mint();
    let issued = create_environment(
        &env(),
        Actor::operator("test"),
        &mint,
        t0() - TimeDelta::days(400),
    );
    store.apply(&issued.change).await.unwrap();
    Backend {
        store,
        sink,
        reader,
        prefix,
        admin: issued.secret,
        mint,
    }
}

async fn due_keys_rotate_and_their_secrets_land_where_services_read_them(on: On) {
    let b = on.backend().await;
    let (daily, daily_secret) = b.policy_key("daily", "P1D", "24h", t0()).await;
    let (monthly, _) = b.policy_key("monthly", "P30D", "1h", t0()).await;
    let (plain, _) = b.key("plain", None, None, t0()).await;
    let now = t0() + TimeDelta::days(1) + TimeDelta::minutes(1);

    let report = b.run(now).await;
    assert_eq!((report.rotated, report.failed), (1, 0), "{report:?}");
    let new = b
        .assert_rotated_once_and_delivered(&daily, "daily", now)
        .await;
    assert_eq!(
        new.rotation_policy, daily.rotation_policy,
        "the policy is carried over"
    );
    for not_due in [&monthly, &plain] {
        let stored = b.store.key(&not_due.id).await.unwrap().unwrap();
        assert_eq!(
            stored.rotated_to,
            None,
            "{} is not due",
            stored.name.as_str()
        );
    }
    assert_eq!(b.current(&b.secret_id("monthly")).await, None);

    let rotations = b.entries(Action::Rotated).await;
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0].actor, rule(), "the rule's ARN names who acted");
    let delivered = b.entries(Action::SecretDelivered).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].key_id, new.id);

    let grace_ends = now + TimeDelta::hours(24);
    let old_secret = daily_secret.expose();
    assert_eq!(
        b.verdict(old_secret, grace_ends - TimeDelta::seconds(1))
            .await,
        Verdict::Valid
    );
    assert_eq!(b.verdict(old_secret, grace_ends).await, Verdict::Expired);

    let again = b.run(now + TimeDelta::minutes(1)).await;
    assert_eq!(
        again,
        Report {
            expiring: 1,
            ..Report::default()
        },
        "nothing is rotated twice; the old key, which expires within 24 hours, gets its notice"
    );
    let notice = &b.entries(Action::Expiring).await[0];
    assert_eq!(notice.key_id, daily.id);
    assert_eq!(b.run(now + TimeDelta::minutes(2)).await, Report::default());
    let next = new.created_at + TimeDelta::days(1);
    let report = b.run(next).await;
    assert_eq!(
        report.rotated, 1,
        "the successor rotates a day later: {report:?}"
    );
    let newer = b
        .assert_rotated_once_and_delivered(&new, "daily", next)
        .await;
    assert_ne!(newer.id, new.id);
}

/// The steps of one rotation, after each of which a crash is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    PutPending,
    CommitRotation,
    Promote,
    RecordDelivery,
}

impl Step {
    const ALL: [Step; 4] = [
        Step::PutPending,
        Step::CommitRotation,
        Step::Promote,
        Step::RecordDelivery,
    ];
}

fn crash() -> Box<dyn std::error::Error + Send + Sync> {
    "injected crash: the function died after this step".into()
}

/// A sink whose step completes and then "dies": the error stops the key's work at exactly
/// the point where a crash would, with the step's effect in place.
struct CrashingSink {
    inner: Arc<dyn SecretSink>,
    after: Step,
}

#[async_trait]
impl SecretSink for CrashingSink {
    async fn put_pending(
        &self,
        id: &str,
        version: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        self.inner.put_pending(id, version, value).await?;
        match self.after {
            Step::PutPending => Err(SecretError::new("put_pending", crash())),
            _ => Ok(()),
        }
    }

    async fn promote(&self, id: &str, version: &str) -> Result<(), SecretError> {
        self.inner.promote(id, version).await?;
        match self.after {
            Step::Promote => Err(SecretError::new("promote", crash())),
            _ => Ok(()),
        }
    }
}

/// A store that dies right after it commits the change of the chosen step.
struct CrashingStore {
    inner: Arc<dyn KeyStore>,
    after: Step,
}

#[async_trait]
impl KeyLookup for CrashingStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        self.inner.key_by_hash(hash).await
    }
}

#[async_trait]
impl UsageStore for CrashingStore {
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
        self.inner.add_usage(tally).await
    }
    async fn hourly_usage(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        self.inner.hourly_usage(environment, id, since).await
    }
    async fn seen_addresses(
        &self,
        environment: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, StoreError> {
        self.inner.seen_addresses(environment, id, since).await
    }
    async fn last_use(
        &self,
        environment: &EnvName,
        ids: &[&KeyId],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
        self.inner.last_use(environment, ids).await
    }
    async fn record_last_use(&self, owner: &UsageOwner, last: LastUse) -> Result<(), StoreError> {
        self.inner.record_last_use(owner, last).await
    }
}

#[async_trait]
impl KeyStore for CrashingStore {
    async fn key(&self, id: &KeyId) -> Result<Option<Key>, StoreError> {
        self.inner.key(id).await
    }
    async fn environment(
        &self,
        name: &EnvName,
    ) -> Result<Option<keyward::domain::Environment>, StoreError> {
        self.inner.environment(name).await
    }
    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.is_empty().await
    }
    async fn keys(
        &self,
        environment: &EnvName,
        page: &PageRequest,
    ) -> Result<Page<Key>, StoreError> {
        self.inner.keys(environment, page).await
    }
    async fn key_activity(
        &self,
        id: &KeyId,
        page: &PageRequest,
    ) -> Result<Page<keyward::domain::ActivityEntry>, StoreError> {
        self.inner.key_activity(id, page).await
    }
    async fn environment_activity(
        &self,
        environment: &EnvName,
        filter: &ActivityFilter,
        page: &PageRequest,
    ) -> Result<Page<keyward::domain::ActivityEntry>, StoreError> {
        self.inner
            .environment_activity(environment, filter, page)
            .await
    }
    async fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, StoreError> {
        self.inner.due_keys(now, limit).await
    }
    async fn postpone(&self, key: &Key, until: Timestamp) -> Result<(), StoreError> {
        self.inner.postpone(key, until).await
    }
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.inner.apply(change).await?;
        let step = match change.activity.event.action() {
            Action::Rotated => Step::CommitRotation,
            Action::SecretDelivered => Step::RecordDelivery,
            _ => return Ok(()),
        };
        if step == self.after {
            return Err(StoreError::Backend(crash()));
        }
        Ok(())
    }
}

async fn a_crash_after_any_step_and_a_rerun_leave_one_new_key_and_a_current_secret(on: On) {
    for step in Step::ALL {
        crash_after(on.backend().await, step).await;
    }
}

/// Rotates one due key with a crash after `step`, then reruns without one.
async fn crash_after(b: Backend, step: Step) {
    let name = format!("crash-{step:?}").to_lowercase();
    let (key, _) = b.policy_key(&name, "P7D", "24h", t0()).await;
    let now = t0() + TimeDelta::days(7);
    let (store, sink) = b.crashing_after(step);
    let report = acting_as(
        "ScheduledRotation",
        run(&store, &sink, &b.mint, &rule(), now),
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 1, "{name}: the crash is seen: {report:?}");
    let committed = step != Step::PutPending;
    assert_eq!(
        b.successors(&key.id).await,
        usize::from(committed),
        "{name}: a new key exists once the rotation is committed, and not before"
    );

    let rerun = now + TimeDelta::minutes(1);
    let report = b.run(rerun).await;
    assert_eq!(report.failed, 0, "{name}: {report:?}");
    b.assert_rotated_once_and_delivered(&key, &name, rerun)
        .await;
    assert_eq!(b.entries(Action::Rotated).await.len(), 1, "{name}");
    assert_eq!(b.entries(Action::SecretDelivered).await.len(), 1, "{name}");
    let last = b.run(rerun + TimeDelta::minutes(1)).await;
    assert_eq!(
        (last.rotated, last.delivered, last.failed),
        (0, 0, 0),
        "{name}: {last:?}"
    );
}

/// A rotation by hand of a key with a policy delivers its new secret, with the same four
/// steps as the schedule: after a crash at any step, the secret still holds a key that works,
/// and the next run (or, before the commit, the caller's retry) leaves exactly one new key,
/// current in the secret.
async fn a_rotation_by_hand_with_a_crash_after_any_step_leaves_one_new_key_and_a_current_secret(
    on: On,
) {
    for step in Step::ALL {
        crash_by_hand_after(on.backend().await, step).await;
    }
}

async fn crash_by_hand_after(b: Backend, step: Step) {
    let name = format!("by-hand-{step:?}").to_lowercase();
    let (first, _) = b.policy_key(&name, "P30D", "24h", t0()).await;
    let scheduled = t0() + TimeDelta::days(30);
    assert_eq!(b.run(scheduled).await.rotated, 1, "{name}");
    let key = b
        .assert_rotated_once_and_delivered(&first, &name, scheduled)
        .await;

    let now = scheduled + TimeDelta::hours(1);
    let (store, sink) = b.crashing_after(step);
    let (status, body) = b.rotate_by_hand(&store, &sink, &key, now).await;
    let expected = match step {
        Step::PutPending => 502,
        Step::CommitRotation => 500,
        Step::Promote | Step::RecordDelivery => 201,
    };
    assert_eq!(status, expected, "{name}: {body}");
    let current = b.current(&b.secret_id(&name)).await.unwrap();
    assert_eq!(
        b.verdict(current["secret"].as_str().unwrap(), now).await,
        Verdict::Valid,
        "{name}: what the secret holds works"
    );
    let committed = step != Step::PutPending;
    assert_eq!(
        b.successors(&key.id).await,
        usize::from(committed),
        "{name}"
    );

    let later = now + TimeDelta::minutes(1);
    if committed {
        let report = b.run(later).await;
        assert_eq!(report.failed, 0, "{name}: {report:?}");
    } else {
        assert_eq!(
            current["key_id"],
            key.id.as_str(),
            "{name}: nothing changed"
        );
        let (status, body) = b.rotate_by_hand(&*b.store, &*b.sink, &key, later).await;
        assert_eq!(status, 201, "{name}: the caller tries again: {body}");
    }
    b.assert_rotated_once_and_delivered(&key, &name, later)
        .await;
    assert_eq!(b.entries(Action::Rotated).await.len(), 2, "{name}");
    assert_eq!(b.entries(Action::SecretDelivered).await.len(), 2, "{name}");
    let last = b.run(later + TimeDelta::minutes(1)).await;
    assert_eq!(
        (last.rotated, last.delivered, last.failed),
        (0, 0, 0),
        "{name}: {last:?}"
    );
}

/// A scheduled rotation commits and dies before it promotes; then someone rotates the new key
/// by hand. That key is in its grace period now and must never become the secret's current
/// value: the services that read the secret would switch to a key that is about to die. The
/// rotation by hand delivers its own new key instead.
async fn a_key_rotated_by_hand_before_its_delivery_finished_is_never_made_current(on: On) {
    let b = on.backend().await;
    let (second, stranded) = b.stranded_delivery("handed").await;
    assert!(stranded.pending_delivery.is_some());
    let (status, body) = b
        .rotate_by_hand(&*b.store, &*b.sink, &stranded, second)
        .await;
    assert_eq!(status, 201, "{body}");

    for minutes in [1, 2] {
        let report = b.run(second + TimeDelta::minutes(minutes)).await;
        assert_eq!((report.delivered, report.failed), (0, 0), "{report:?}");
    }
    let by_hand = b
        .assert_rotated_once_and_delivered(&stranded, "handed", second)
        .await;
    assert_eq!(body["key"]["id"], by_hand.id.as_str());
    let delivered_ids: Vec<KeyId> = b
        .entries(Action::SecretDelivered)
        .await
        .into_iter()
        .map(|e| e.key_id)
        .collect();
    assert!(
        !delivered_ids.contains(&stranded.id),
        "the key rotated by hand was never made current: {delivered_ids:?}"
    );
    assert!(
        b.store
            .due_keys(second + TimeDelta::days(1), 100)
            .await
            .unwrap()
            .iter()
            .all(|k| k.id != stranded.id || k.due(second + TimeDelta::days(1)).is_some()),
        "a key left in the due index has something to do"
    );
}

/// A sink that, just before it makes `version` current, lets a rotation by hand of `key` run
/// to its end on the backend's own store and sink: the race between a run that finishes a
/// delivery and a caller who rotates the same key.
struct RacingSink<'a> {
    backend: &'a Backend,
    key: Key,
    version: String,
    at: Timestamp,
    answer: std::sync::Mutex<Option<(u16, Value)>>,
}

#[async_trait]
impl SecretSink for RacingSink<'_> {
    async fn put_pending(
        &self,
        id: &str,
        version: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        self.backend.sink.put_pending(id, version, value).await
    }

    async fn promote(&self, id: &str, version: &str) -> Result<(), SecretError> {
        if version == self.version {
            let b = self.backend;
            let answer = b
                .rotate_by_hand(&*b.store, &*b.sink, &self.key, self.at)
                .await;
            *self.answer.lock().unwrap() = Some(answer);
        }
        self.backend.sink.promote(id, version).await
    }
}

/// A run finishes the delivery of a key that a caller rotates by hand at that very moment:
/// the caller's new key is made current first, then the run's. The secret must end up
/// holding the caller's key, not the one now in its grace.
async fn a_rotation_by_hand_racing_a_delivery_leaves_its_own_key_current(on: On) {
    let b = on.backend().await;
    let (second, stranded) = b.stranded_delivery("raced").await;

    let at = second + TimeDelta::minutes(1);
    let racing = RacingSink {
        backend: &b,
        version: keyward::domain::PendingDelivery::version_id_for(&stranded.id),
        key: stranded.clone(),
        at,
        answer: std::sync::Mutex::new(None),
    };
    acting_as(
        "ScheduledRotation",
        run(&*b.store, &racing, &b.mint, &rule(), at),
    )
    .await
    .unwrap();
    let (status, body) = racing.answer.lock().unwrap().take().expect("the race ran");
    assert_eq!(status, 201, "{body}");
    let by_hand = b
        .assert_rotated_once_and_delivered(&stranded, "raced", at)
        .await;
    assert_eq!(body["key"]["id"], by_hand.id.as_str());
}

/// A consumer that reads the environment's activity and then asks only for entries after the
/// last id it saw must still see an expiry that is recorded late (the schedule was down, or
/// only DynamoDB's TTL noticed it, hours after the expiry).
async fn an_expiry_recorded_late_comes_after_everything_a_consumer_has_seen(on: On) {
    let b = on.backend().await;
    let expires_at = t0() + TimeDelta::hours(1);
    let (late, _) = b.key("late", None, Some(expires_at), t0()).await;
    b.key("meanwhile", None, None, t0() + TimeDelta::hours(2))
        .await;
    let page = PageRequest {
        limit: 100,
        after: None,
    };
    let seen = b
        .store
        .environment_activity(&env(), &ActivityFilter::default(), &page)
        .await
        .unwrap()
        .items;
    let last_seen = seen.iter().map(|e| e.id.clone()).max().unwrap();

    let report = b.run(t0() + TimeDelta::hours(3)).await;
    assert_eq!(report.expired, 1, "{report:?}");
    let after: Vec<keyward::domain::ActivityEntry> = b
        .store
        .environment_activity(&env(), &ActivityFilter::default(), &page)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.id > last_seen)
        .collect();
    let actions: Vec<(&str, &KeyId)> = after
        .iter()
        .map(|e| (e.event.action().as_str(), &e.key_id))
        .collect();
    assert_eq!(actions, [("key.expired", &late.id)]);
    assert_eq!(
        b.run(t0() + TimeDelta::hours(4)).await,
        Report::default(),
        "recorded once"
    );
}

/// The due index holds only keys with something to do: after every run, each key the store
/// lists as due has work at its due time, or now if that has passed. Random keys (with and
/// without policies and expiries) and random run times, from a fixed seed so that a failure
/// can be replayed; some secrets refuse delivery, so that keys that back off are in the mix.
async fn every_key_left_in_the_due_index_has_something_to_do(on: On) {
    let b = on.backend().await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |below: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    for i in 0..24 {
        let made = t0() + TimeDelta::hours(i64::try_from(next(48)).unwrap());
        let policy = match next(3) {
            0 => None,
            n => {
                let every = ["P1D", "P3D"][usize::try_from(n - 1).unwrap()];
                let policy = serde_json::json!({"every": every, "grace_period": "1h", "secret_id": b.secret_id(&format!("p{i}"))});
                Some(RotationPolicy::from_json(&policy).unwrap())
            }
        };
        let expires_at = match next(3) {
            0 => None,
            _ => Some(made + TimeDelta::hours(i64::try_from(2 + next(24 * 6)).unwrap())),
        };
        b.key(&format!("random {i}"), policy, expires_at, made)
            .await;
    }
    let refusing = RefusingSink {
        inner: Arc::clone(&b.sink),
        refused: b.secret_id("p1"),
    };
    let mut runs: Vec<u64> = (0..8).map(|_| next(24 * 12)).collect();
    runs.sort_unstable();
    let mut failed = 0;
    for hours in runs {
        let now = t0() + TimeDelta::hours(i64::try_from(hours).unwrap());
        let report = acting_as(
            "ScheduledRotation",
            run(&*b.store, &refusing, &b.mint, &rule(), now),
        )
        .await
        .unwrap();
        failed += report.failed;
        let far = t0() + TimeDelta::days(3650);
        for key in b.store.due_keys(far, 10_000).await.unwrap() {
            let due_at = key
                .next_due_at()
                .expect("a key in the index has a due time");
            let at = due_at.max(now);
            assert!(
                key.due(at).is_some(),
                "{} is in the due index at {due_at}, but has nothing to do at {at}: {key:?}",
                key.name.as_str()
            );
        }
    }
    assert!(
        failed > 0,
        "some secrets (p1, p10 to p19) refuse delivery, so keys back off"
    );
}

/// A sink that refuses the secrets whose id starts with `refused`, as Secrets Manager does
/// secrets it may not write.
struct RefusingSink {
    inner: Arc<dyn SecretSink>,
    refused: String,
}

#[async_trait]
impl SecretSink for RefusingSink {
    async fn put_pending(
        &self,
        id: &str,
        version: &str,
        value: &SecretValue<'_>,
    ) -> Result<(), SecretError> {
        if id.starts_with(&self.refused) {
            return Err(SecretError::msg(format!("access denied to {id}")));
        }
        self.inner.put_pending(id, version, value).await
    }

    async fn promote(&self, id: &str, version: &str) -> Result<(), SecretError> {
        self.inner.promote(id, version).await
    }
}

async fn one_failing_key_does_not_stop_the_others(on: On) {
    let b = on.backend().await;
    let (refused, _) = b.policy_key("refused", "P1D", "1h", t0()).await;
    let mut fine = Vec::new();
    for i in 0..3 {
        let name = format!("fine-{i}");
        fine.push((name.clone(), b.policy_key(&name, "P1D", "1h", t0()).await.0));
    }
    let now = t0() + TimeDelta::days(1);
    let sink = RefusingSink {
        inner: Arc::clone(&b.sink),
        refused: b.secret_id("refused"),
    };
    let report = acting_as(
        "ScheduledRotation",
        run(&*b.store, &sink, &b.mint, &rule(), now),
    )
    .await
    .unwrap();
    assert_eq!((report.rotated, report.failed), (3, 1), "{report:?}");
    for (name, key) in &fine {
        b.assert_rotated_once_and_delivered(key, name, now).await;
    }
    let stored = b.store.key(&refused.id).await.unwrap().unwrap();
    assert_eq!(
        stored.rotated_to, None,
        "a key whose secret cannot be written is not rotated"
    );
    let failures = stored.delivery_failures.expect("the failure is on the key");
    let retry_at = now + FIRST_RETRY_WAIT - RETRY_SLACK;
    assert_eq!((failures.count, failures.retry_at), (1, retry_at));
    let recorded = b.entries(Action::SecretDeliveryFailed).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (&recorded[0].key_id, &recorded[0].actor),
        (&refused.id, &rule())
    );
    let waiting = run(
        &*b.store,
        &sink,
        &b.mint,
        &rule(),
        retry_at - TimeDelta::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(
        (waiting.rotated, waiting.failed),
        (0, 0),
        "it waits about a minute: {waiting:?}"
    );
    let retried = b.run(retry_at).await;
    assert_eq!(
        retried.rotated, 1,
        "and the next run rotates it: {retried:?}"
    );
    b.assert_rotated_once_and_delivered(&refused, "refused", retry_at)
        .await;
}

/// Two keys whose policies named one secret before a secret had one key (or that were
/// written to the store directly): a run rotates the one that holds the claim, and the other's
/// rotation is refused as claimed, recorded as a failed delivery, and put off like one.
async fn of_two_keys_stored_sharing_a_secret_only_the_claims_holder_rotates(on: On) {
    let b = on.backend().await;
    let (holder, _) = b.policy_key("shared", "P1D", "1h", t0()).await;
    let policy = holder.rotation_policy.clone();
    let input = NewKey {
        rotation_policy: policy,
        ..orders_key("intruder")
    };
    let mut intruder = create_key(&env(), input, Actor::operator("test"), &b.mint, t0()).unwrap();
    assert!(
        matches!(
            b.store.apply(&intruder.change).await,
            Err(StoreError::SecretClaimed)
        ),
        "through the lifecycle, the second key is refused"
    );
    intruder.change.secret_claim = None;
    b.store.apply(&intruder.change).await.unwrap();

    let now = t0() + TimeDelta::days(1);
    let report = b.run(now).await;
    assert_eq!((report.rotated, report.failed), (1, 1), "{report:?}");
    b.assert_rotated_once_and_delivered(&holder, "shared", now)
        .await;
    let stored = b.store.key(&intruder.key.id).await.unwrap().unwrap();
    assert_eq!(stored.rotated_to, None);
    let failures = stored
        .delivery_failures
        .expect("recorded as a failed delivery");
    assert_eq!(
        (failures.count, failures.retry_at),
        (1, now + FIRST_RETRY_WAIT - RETRY_SLACK)
    );
    let recorded = b.entries(Action::SecretDeliveryFailed).await;
    assert_eq!(
        recorded.iter().map(|e| &e.key_id).collect::<Vec<_>>(),
        [&intruder.key.id]
    );
}

/// Runs take the earliest due keys, at most 1,000. Keys whose secret cannot be written wait
/// before they are tried again, so a key that is due behind 1,200 of them is rotated by the
/// second run, not starved by the same thousand failing keys run after run. On SQLite this
/// is exactly that. moto copies the whole table for every transaction (BENCHMARKS.md), so
/// with thousands of items it slows to about a write a second; on DynamoDB the same case runs
/// scaled down a hundredfold, 12 failing keys ahead of a run limit of 10.
async fn a_due_key_behind_1200_failing_ones_is_rotated_within_two_runs(on: On) {
    let (failing, limit) = match on {
        On::Aws => (12, 10),
        On::Local => (1200, MAX_KEYS_PER_RUN),
    };
    let b = on.backend().await;
    for i in 0..failing {
        b.policy_key(&format!("failing-{i}"), "P1D", "1h", t0())
            .await;
    }
    let (behind, _) = b
        .policy_key("behind", "P1D", "1h", t0() + TimeDelta::minutes(1))
        .await;
    let sink = RefusingSink {
        inner: Arc::clone(&b.sink),
        refused: b.secret_id("failing-"),
    };
    let first = t0() + TimeDelta::days(1) + TimeDelta::minutes(2);
    let report = acting_as(
        "ScheduledRotation",
        run_at_most(&*b.store, &sink, &b.mint, &rule(), first, limit),
    )
    .await
    .unwrap();
    assert_eq!((report.rotated, report.failed), (0, limit), "{report:?}");

    let second = first + TimeDelta::minutes(5);
    let report = acting_as(
        "ScheduledRotation",
        run_at_most(&*b.store, &sink, &b.mint, &rule(), second, limit),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.rotated, report.failed),
        (1, limit - 1),
        "{report:?}"
    );
    b.assert_rotated_once_and_delivered(&behind, "behind", second)
        .await;
    let counts: Vec<u32> = b
        .all_keys()
        .await
        .iter()
        .filter_map(|k| k.delivery_failures.map(|f| f.count))
        .collect();
    assert_eq!(
        counts.len(),
        failing,
        "every failing key carries its failures"
    );
    let twice = limit - 1 - (failing - limit);
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), twice);
}

async fn two_overlapping_runs_rotate_each_key_once(on: On) {
    let b = on.backend().await;
    let mut keys = Vec::new();
    for i in 0..12 {
        let name = format!("overlap-{i}");
        keys.push((name.clone(), b.policy_key(&name, "P1D", "1h", t0()).await.0));
    }
    let now = t0() + TimeDelta::days(2);
    let (first, second) = tokio::join!(b.run(now), b.run(now));
    assert_eq!(first.failed + second.failed, 0, "{first:?} {second:?}");
    assert_eq!(
        first.rotated + second.rotated,
        keys.len(),
        "{first:?} {second:?}"
    );
    for (name, key) in &keys {
        b.assert_rotated_once_and_delivered(key, name, now).await;
    }
    assert_eq!(b.all_keys().await.len(), 1 + 2 * keys.len());
    assert_eq!(b.entries(Action::Rotated).await.len(), keys.len());
}

async fn each_expiry_warning_is_recorded_exactly_once(on: On) {
    let b = on.backend().await;
    let (plain, _) = b.key("rotated-by-hand", None, None, t0()).await;
    let rotated = rotate(
        &plain,
        GracePeriod::parse("3d").unwrap(),
        Actor::operator("test"),
        &b.mint,
        t0(),
    )
    .unwrap();
    b.store.apply(&rotated.change).await.unwrap();
    let grace_ends = t0() + TimeDelta::days(3);
    let (dated, _) = b
        .key("dated", None, Some(grace_ends + TimeDelta::hours(5)), t0())
        .await;

    let mut totals = Report::default();
    let mut at = t0();
    while at <= grace_ends + TimeDelta::hours(8) {
        let (one, two) = tokio::join!(b.run(at), b.run(at));
        for r in [one, two] {
            assert_eq!((r.failed, r.rotated), (0, 0), "{r:?}");
            totals.expiring += r.expiring;
            totals.expired += r.expired;
        }
        at += TimeDelta::minutes(30);
    }
    assert_eq!((totals.expiring, totals.expired), (4, 2), "{totals:?}");
    let mut warnings: Vec<(KeyId, String)> = b
        .entries(Action::Expiring)
        .await
        .into_iter()
        .map(|e| match e.event {
            keyward::domain::Event::Expiring { within, .. } => (
                e.key_id,
                serde_json::to_value(within)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    warnings.sort();
    let mut expected = vec![
        (plain.id.clone(), "24h".to_owned()),
        (plain.id.clone(), "1h".to_owned()),
        (dated.id.clone(), "24h".to_owned()),
        (dated.id.clone(), "1h".to_owned()),
    ];
    expected.sort();
    assert_eq!(warnings, expected);
    let expired: Vec<KeyId> = b
        .entries(Action::Expired)
        .await
        .into_iter()
        .map(|e| e.key_id)
        .collect();
    assert_eq!(expired.len(), 2);
    assert!(expired.contains(&plain.id) && expired.contains(&dated.id));
    assert!(
        b.entries(Action::Expired)
            .await
            .iter()
            .all(|e| e.actor == rule())
    );
    let before = b.all_keys().await;
    assert_eq!(b.run(at + TimeDelta::days(30)).await, Report::default());
    assert_eq!(
        b.all_keys().await,
        before,
        "nothing changes once every notice is recorded"
    );
}

/// Records that `key` was presented at `at`, accepted or not, as a flush of the checking
/// functions would, with its last use moved forward as the stream (or SQLite) does.
async fn presented(b: &Backend, key: &Key, accepted: bool, at: Timestamp) {
    let mut tally = UsageTally::new(key.environment.clone(), key.id.clone());
    tally.count(accepted, at);
    b.store.add_usage(&tally).await.unwrap();
    let owner = UsageOwner::Key(key.environment.clone(), key.id.clone());
    b.store.record_last_use(&owner, tally.last).await.unwrap();
}

/// A rotated key is watched from an hour after its rotation: while it is still presented it is
/// looked at again (and moved in the due index, unchanged) until it has been quiet for an
/// hour while its successor is used; then `key.grace_idle` is recorded, once, and the outbox
/// holds one entry for it, which is one event.
async fn a_key_quiet_in_its_grace_is_recorded_once(on: On) {
    let b = on.backend().await;
    let (old, _) = b.key("billing", None, None, t0()).await;
    let rotated = rotate(
        &old,
        GracePeriod::parse("7d").unwrap(),
        Actor::operator("test"),
        &b.mint,
        t0(),
    )
    .unwrap();
    b.store.apply(&rotated.change).await.unwrap();
    let (old, new) = (rotated.previous, rotated.key);
    let minutes = |n: i64| t0() + TimeDelta::minutes(n);
    presented(&b, &old, true, minutes(50)).await;
    presented(&b, &new, true, minutes(55)).await;

    assert_eq!(
        b.run(minutes(30)).await,
        Report::default(),
        "watched from an hour on"
    );
    let looked = b.run(minutes(61)).await;
    assert_eq!(
        (looked.watched, looked.grace_idle),
        (1, 0),
        "used 11 minutes ago"
    );
    assert_eq!(
        b.run(minutes(100)).await,
        Report::default(),
        "not looked at again before 14:00, when the 12:00 hour of its last use has left the hours read"
    );
    presented(&b, &old, false, minutes(105)).await;
    presented(&b, &new, true, minutes(108)).await;
    let looked = b.run(minutes(121)).await;
    assert_eq!(
        (looked.watched, looked.grace_idle),
        (1, 0),
        "a refused presentation is a service still sending it"
    );
    assert!(b.entries(Action::GraceIdle).await.is_empty());
    let stored = b.store.key(&old.id).await.unwrap().unwrap();
    assert_eq!(
        stored.version, old.version,
        "looking changes nothing in the key"
    );

    presented(&b, &new, true, minutes(160)).await;
    assert_eq!(
        b.run(minutes(166)).await,
        Report::default(),
        "not before 15:00, two hours after the start of the hour it was refused in"
    );
    let (one, two) = tokio::join!(b.run(minutes(181)), b.run(minutes(181)));
    assert_eq!(one.grace_idle + two.grace_idle, 1, "{one:?} {two:?}");
    for later in [minutes(200), minutes(60 * 24)] {
        let r = b.run(later).await;
        assert_eq!((r.watched, r.grace_idle), (0, 0), "{r:?}");
    }
    let entries = b.entries(Action::GraceIdle).await;
    assert_eq!(entries.len(), 1, "one entry in the outbox, so one event");
    let entry = &entries[0];
    assert_eq!(
        (&entry.key_id, &entry.actor, entry.at),
        (&old.id, &rule(), minutes(181))
    );
    assert_eq!(
        entry.event,
        keyward::domain::Event::GraceIdle {
            new_key_id: new.id.clone(),
            last_presented_at: Some(minutes(105)),
            successor_last_used_at: minutes(160),
            expires_at: old.expires_at,
        }
    );
    let stored = b.store.key(&old.id).await.unwrap().unwrap();
    assert_eq!(stored.grace_idle_at, Some(minutes(181)));
    assert_eq!(
        stored.expires_at, old.expires_at,
        "the grace is the user's to cut"
    );
}

/// A key whose successor was itself rotated (or revoked) is not watched on: the successor will
/// not take over, so waiting for it would only look at the key every quarter of an hour.
async fn a_key_whose_successor_was_replaced_is_no_longer_watched(on: On) {
    let b = on.backend().await;
    let (first, _) = b.key("billing", None, None, t0()).await;
    let grace = GracePeriod::parse("7d").unwrap();
    let second = rotate(&first, grace, Actor::operator("test"), &b.mint, t0()).unwrap();
    b.store.apply(&second.change).await.unwrap();
    let third = rotate(&second.key, grace, Actor::operator("test"), &b.mint, t0()).unwrap();
    b.store.apply(&third.change).await.unwrap();
    presented(&b, &third.key, true, t0() + TimeDelta::minutes(90)).await;
    let looked = b.run(t0() + TimeDelta::minutes(100)).await;
    assert_eq!(
        (looked.watched, looked.grace_idle),
        (1, 1),
        "the first key, whose successor was replaced, is looked at and left; the second, quiet while the third is used, is idle: {looked:?}"
    );
    assert_eq!(
        b.run(t0() + TimeDelta::hours(5)).await,
        Report::default(),
        "the first key is not looked at again"
    );
    let idle = b.entries(Action::GraceIdle).await;
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].key_id, second.key.id);
    assert_eq!(b.run(t0() + TimeDelta::days(2)).await, Report::default());
}

/// Which backends a case runs on.
#[derive(Clone, Copy)]
enum On {
    Aws,
    Local,
}

impl On {
    /// A fresh backend of this kind.
    async fn backend(self) -> Backend {
        match self {
            On::Aws => aws().await,
            On::Local => local().await,
        }
    }
}

// Every case, on AWS (moto) and on SQLite with a secrets file.
keyward::on_both_stores!(
    on_aws => On::Aws,
    on_sqlite_and_a_file => On::Local;
    a_key_quiet_in_its_grace_is_recorded_once,
    a_key_whose_successor_was_replaced_is_no_longer_watched,
    due_keys_rotate_and_their_secrets_land_where_services_read_them,
    a_crash_after_any_step_and_a_rerun_leave_one_new_key_and_a_current_secret,
    two_overlapping_runs_rotate_each_key_once,
    one_failing_key_does_not_stop_the_others,
    a_due_key_behind_1200_failing_ones_is_rotated_within_two_runs,
    a_rotation_by_hand_with_a_crash_after_any_step_leaves_one_new_key_and_a_current_secret,
    each_expiry_warning_is_recorded_exactly_once,
    a_key_rotated_by_hand_before_its_delivery_finished_is_never_made_current,
    a_rotation_by_hand_racing_a_delivery_leaves_its_own_key_current,
    an_expiry_recorded_late_comes_after_everything_a_consumer_has_seen,
    every_key_left_in_the_due_index_has_something_to_do,
    of_two_keys_stored_sharing_a_secret_only_the_claims_holder_rotates
);
