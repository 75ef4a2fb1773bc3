//! The store contract: every adapter of `KeyStore` must pass these, so that the domain can
//! rely on the same atomicity, preconditions, ordering and pagination everywhere.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use keyward::domain::{
    Action, Actor, Change, EnvName, GracePeriod, Issued, Key, LastUse, LeakPolicy, Mint, NewKey,
    Revocation, RotationPolicy, Scopes, Setting, UsageTally, change_grace_period,
    create_environment, create_key, revoke, rotate, set_leak_policy, set_rotation_policy,
};
use keyward::store::{
    ActivityFilter, DynamoStore, KeyLookup, KeyStore, PageRequest, SqliteStore, StoreError,
    UsageOwner, UsageStore,
};
use keyward::testing::orders_key;
use keyward::testing::{MotoTable, moto_table, moto_table_with};

/// A clock for one test, with the test's own mint: each call is one millisecond after the
/// last, so ids sort in the order things happened.
struct Clock {
    ticks: std::sync::atomic::AtomicI64,
    mint: Mint,
}

impl Clock {
    fn new() -> Self {
        Self {
            ticks: std::sync::atomic::AtomicI64::new(0),
            mint: keyward::mint(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        let n = self.ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap() + TimeDelta::milliseconds(n)
    }
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).unwrap()
}

fn actor() -> Actor {
    Actor::operator("contract")
}

fn grace(s: &str) -> GracePeriod {
    GracePeriod::parse(s).unwrap()
}

async fn environment(store: &dyn KeyStore, name: &str, clock: &Clock) -> Issued {
    let issued = create_environment(&env(name), actor(), &clock.mint, clock.now());
    store.apply(&issued.change).await.unwrap();
    issued
}

async fn key(store: &dyn KeyStore, environment: &str, name: &str, clock: &Clock) -> Key {
    let issued = new_key(environment, name, &["orders:read"], None, clock);
    store.apply(&issued.change).await.unwrap();
    issued.key
}

/// A new key with `scopes`, as a change to apply.
fn new_key(
    environment: &str,
    name: &str,
    scopes: &[&str],
    rotation_policy: Option<RotationPolicy>,
    clock: &Clock,
) -> Issued {
    let input = NewKey {
        scopes: Scopes::parse(scopes).unwrap(),
        rotation_policy,
        ..orders_key(name)
    };
    create_key(&env(environment), input, actor(), &clock.mint, clock.now()).unwrap()
}

fn page(limit: usize, after: Option<String>) -> PageRequest {
    PageRequest { limit, after }
}

/// Asserts that `result` failed with an error of the same kind as `expected`.
fn assert_refused(result: Result<(), StoreError>, expected: StoreError) {
    assert!(
        result
            .as_ref()
            .is_err_and(|e| std::mem::discriminant(e) == std::mem::discriminant(&expected)),
        "expected {expected:?}, got {result:?}"
    );
}

fn assert_conflict(result: Result<(), StoreError>) {
    assert_refused(result, StoreError::Conflict);
}

async fn an_environment_is_made_once(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    assert!(store.is_empty().await.unwrap());
    let issued = environment(&*store, "production", &clock).await;
    assert!(!store.is_empty().await.unwrap());
    let stored = store
        .environment(&env("production"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.default_key_id, issued.key.id);
    assert_eq!(
        store.key(&issued.key.id).await.unwrap(),
        Some(issued.key.clone())
    );
    assert_eq!(
        store.key_by_hash(&issued.secret.hash()).await.unwrap(),
        Some(issued.key)
    );
    let again = create_environment(&env("production"), actor(), &clock.mint, clock.now());
    assert_conflict(store.apply(&again.change).await);
    assert_eq!(
        store.key(&again.key.id).await.unwrap(),
        None,
        "a refused change writes no key"
    );
    assert_eq!(store.environment(&env("nowhere")).await.unwrap(), None);
}

async fn a_stale_change_conflicts_and_writes_nothing(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let old = key(&*store, "production", "worker", &clock).await;
    let first = rotate(&old, grace("1h"), actor(), &clock.mint, clock.now()).unwrap();
    let second = rotate(&old, grace("24h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&first.change).await.unwrap();
    assert_conflict(store.apply(&second.change).await);
    assert_eq!(
        store.key(&second.key.id).await.unwrap(),
        None,
        "the loser's new key is not stored"
    );
    assert_eq!(
        store.key_by_hash(&second.secret.hash()).await.unwrap(),
        None
    );
    assert_eq!(
        store.key(&old.id).await.unwrap(),
        Some(first.previous.clone())
    );
    let entries = store
        .key_activity(&old.id, &page(10, None))
        .await
        .unwrap()
        .items;
    let actions: Vec<Action> = entries.iter().map(|e| e.event.action()).collect();
    assert_eq!(
        actions,
        [Action::Rotated, Action::Created],
        "the loser's entry is not stored"
    );
    let changed = change_grace_period(
        &first.previous,
        grace("7d"),
        actor(),
        &clock.mint,
        clock.now(),
    )
    .unwrap();
    store.apply(&changed.change).await.unwrap();
    assert_conflict(store.apply(&changed.change).await);
}

async fn a_key_id_or_hash_is_never_stored_twice(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    let issued = environment(&*store, "production", &clock).await;
    let mut twin = create_environment(&env("staging"), actor(), &clock.mint, clock.now());
    twin.change.keys = vec![keyward::domain::KeyWrite::Insert(issued.key.clone())];
    assert_conflict(store.apply(&twin.change).await);
    assert_eq!(
        store.environment(&env("staging")).await.unwrap(),
        None,
        "nothing of the change is applied"
    );
}

async fn the_default_moves_only_from_the_current_default(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    let issued = environment(&*store, "production", &clock).await;
    let rotated = rotate(&issued.key, grace("24h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&rotated.change).await.unwrap();
    let stored = store
        .environment(&env("production"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.default_key_id, rotated.key.id);
    let Revocation::Revoked { change, .. } =
        revoke(&rotated.previous, actor(), &clock.mint, clock.now()).unwrap()
    else {
        panic!("the old default can be revoked")
    };
    store.apply(&change).await.unwrap();
    let mut stale = rotate(&issued.key, grace("1h"), actor(), &clock.mint, clock.now())
        .unwrap()
        .change;
    stale.keys.clear();
    assert_conflict(store.apply(&stale).await);
    assert_eq!(
        store
            .environment(&env("production"))
            .await
            .unwrap()
            .unwrap()
            .default_key_id,
        rotated.key.id
    );
}

async fn keys_are_listed_newest_first_a_page_at_a_time(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    let production = environment(&*store, "production", &clock).await;
    environment(&*store, "staging", &clock).await;
    let mut made = vec![production.key.id.clone()];
    for i in 0..7 {
        made.push(
            key(&*store, "production", &format!("k{i}"), &clock)
                .await
                .id,
        );
        key(&*store, "staging", &format!("s{i}"), &clock).await;
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let p = store
            .keys(&env("production"), &page(3, after))
            .await
            .unwrap();
        assert!(p.items.len() <= 3);
        assert!(p.items.iter().all(|k| k.environment == env("production")));
        seen.extend(p.items.iter().map(|k| k.id.clone()));
        pages += 1;
        match p.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, made, "every key once, newest first");
    assert_eq!(pages, 3);
    let exact = store
        .keys(&env("production"), &page(8, None))
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 8);
    assert_eq!(
        exact.next_cursor, None,
        "a page that reaches the end says so"
    );
    let oldest = exact.items.last().map(|k| k.id.to_string());
    let beyond = store
        .keys(&env("production"), &page(8, oldest))
        .await
        .unwrap();
    assert!(
        beyond.items.is_empty() && beyond.next_cursor.is_none(),
        "a cursor at the very end gives an empty last page"
    );
    assert!(
        store
            .keys(&env("nowhere"), &page(5, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn activity_is_newest_first_and_filtered(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    environment(&*store, "staging", &clock).await;
    let a = key(&*store, "production", "a", &clock).await;
    let b = key(&*store, "production", "b", &clock).await;
    key(&*store, "staging", "elsewhere", &clock).await;
    let rotated = rotate(&a, grace("1h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&rotated.change).await.unwrap();
    let changed = change_grace_period(
        &rotated.previous,
        grace("3d"),
        actor(),
        &clock.mint,
        clock.now(),
    )
    .unwrap();
    store.apply(&changed.change).await.unwrap();
    let Revocation::Revoked { change, .. } = revoke(&b, actor(), &clock.mint, clock.now()).unwrap()
    else {
        panic!()
    };
    store.apply(&change).await.unwrap();

    let of_a = store
        .key_activity(&a.id, &page(10, None))
        .await
        .unwrap()
        .items;
    let actions: Vec<Action> = of_a.iter().map(|e| e.event.action()).collect();
    assert_eq!(
        actions,
        [Action::GracePeriodChanged, Action::Rotated, Action::Created]
    );
    let of_new = store
        .key_activity(&rotated.key.id, &page(10, None))
        .await
        .unwrap()
        .items;
    assert_eq!(of_new.len(), 1, "the rotation also belongs to the new key");
    assert_eq!(of_new[0].event.action(), Action::Rotated);

    let all = store
        .environment_activity(
            &env("production"),
            &ActivityFilter::default(),
            &page(100, None),
        )
        .await
        .unwrap();
    let actions: Vec<Action> = all.items.iter().map(|e| e.event.action()).collect();
    assert_eq!(
        actions,
        [
            Action::Revoked,
            Action::GracePeriodChanged,
            Action::Rotated,
            Action::Created,
            Action::Created,
            Action::Created
        ]
    );
    assert!(all.items.iter().all(|e| e.environment == env("production")));
    assert!(
        all.items
            .windows(2)
            .all(|w| w[0].id > w[1].id && w[0].at >= w[1].at)
    );

    let filter = ActivityFilter {
        action: Some(Action::Created),
        key_id: None,
    };
    let created = store
        .environment_activity(&env("production"), &filter, &page(100, None))
        .await
        .unwrap()
        .items;
    assert_eq!(created.len(), 3);
    let filter = ActivityFilter {
        action: None,
        key_id: Some(rotated.key.id.clone()),
    };
    let about_new = store
        .environment_activity(&env("production"), &filter, &page(100, None))
        .await
        .unwrap()
        .items;
    assert_eq!(about_new.len(), 1);
    let filter = ActivityFilter {
        action: Some(Action::Revoked),
        key_id: Some(a.id.clone()),
    };
    assert!(
        store
            .environment_activity(&env("production"), &filter, &page(100, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let p = store
            .environment_activity(
                &env("production"),
                &ActivityFilter::default(),
                &page(4, after),
            )
            .await
            .unwrap();
        paged.extend(p.items);
        match p.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, all.items);
}

/// Applies every change at once, each on a task of its own, and answers each result.
async fn apply_all_at_once(
    store: &Arc<dyn KeyStore>,
    changes: Vec<Change>,
) -> Vec<Result<(), StoreError>> {
    let tasks: Vec<_> = changes
        .into_iter()
        .map(|change| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.apply(&change).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

async fn of_sixteen_racing_rotations_exactly_one_is_applied(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let old = key(&*store, "production", "contested", &clock).await;
    let changes: Vec<Change> = (0..16)
        .map(|_| {
            rotate(&old, grace("1h"), actor(), &clock.mint, clock.now())
                .unwrap()
                .change
        })
        .collect();
    let mut wins = 0;
    for result in apply_all_at_once(&store, changes).await {
        match result {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("not a conflict: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    let keys = store
        .keys(&env("production"), &page(100, None))
        .await
        .unwrap()
        .items;
    let successors: Vec<&Key> = keys
        .iter()
        .filter(|k| k.rotated_from.as_ref() == Some(&old.id))
        .collect();
    assert_eq!(successors.len(), 1);
    let stored = store.key(&old.id).await.unwrap().unwrap();
    assert_eq!(stored.rotated_to.as_ref(), Some(&successors[0].id));
}

fn policy(secret_id: &str) -> RotationPolicy {
    RotationPolicy::from_json(
        &serde_json::json!({"every": "P30D", "grace_period": "24h", "secret_id": secret_id}),
    )
    .unwrap()
}

/// A new key of `production` whose policy delivers to `secret_id`, as a change to apply.
fn key_delivering_to(secret_id: &str, clock: &Clock) -> Issued {
    new_key(
        "production",
        "billing",
        &["orders:read"],
        Some(policy(secret_id)),
        clock,
    )
}

fn set_policy(key: &Key, secret_id: Option<&str>, clock: &Clock) -> (Key, Change) {
    match set_rotation_policy(
        key,
        secret_id.map(policy),
        actor(),
        &clock.mint,
        clock.now(),
    )
    .unwrap()
    {
        Setting::Changed { key, change } => (key, *change),
        Setting::Unchanged(_) => panic!("unchanged"),
    }
}

fn assert_claimed(result: Result<(), StoreError>) {
    assert_refused(result, StoreError::SecretClaimed);
}

async fn one_active_key_delivers_to_a_secret_and_a_rotation_hands_it_on(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let secret = "keyward/production/billing";
    let arn =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:keyward/production/billing-Ab12Cd";
    let first = key_delivering_to(secret, &clock);
    store.apply(&first.change).await.unwrap();
    let listed = |store: Arc<dyn KeyStore>| async move {
        store
            .keys(&env("production"), &page(100, None))
            .await
            .unwrap()
            .items
            .len()
    };
    let before = listed(Arc::clone(&store)).await;

    for other in [secret, arn] {
        let rival = key_delivering_to(other, &clock);
        assert_claimed(store.apply(&rival.change).await);
        assert_eq!(store.key(&rival.key.id).await.unwrap(), None, "{other}");
    }
    let plain = key(&*store, "production", "reporting", &clock).await;
    let (_, pointed) = set_policy(&plain, Some(arn), &clock);
    assert_claimed(store.apply(&pointed).await);
    assert_eq!(store.key(&plain.id).await.unwrap().unwrap(), plain);
    assert_eq!(
        listed(Arc::clone(&store)).await,
        before + 1,
        "only the plain key"
    );
    let (_, elsewhere) = set_policy(&plain, Some("keyward/production/reporting"), &clock);
    store.apply(&elsewhere).await.unwrap();

    let rotated = rotate(&first.key, grace("24h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&rotated.change).await.unwrap();
    let (_, again) = set_policy(
        &store.key(&plain.id).await.unwrap().unwrap(),
        Some(secret),
        &clock,
    );
    assert_claimed(store.apply(&again).await);
    let next = rotate(&rotated.key, grace("1h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&next.change).await.unwrap();

    let Revocation::Revoked { change, .. } =
        revoke(&next.key, actor(), &clock.mint, clock.now()).unwrap()
    else {
        panic!("not revoked")
    };
    store.apply(&change).await.unwrap();
    let successor = key_delivering_to(arn, &clock);
    store.apply(&successor.change).await.unwrap();

    let (_, cleared) = set_policy(&successor.key, None, &clock);
    store.apply(&cleared).await.unwrap();
    let (_, taken) = set_policy(
        &store.key(&plain.id).await.unwrap().unwrap(),
        Some(secret),
        &clock,
    );
    store.apply(&taken).await.unwrap();
}

/// A key whose policy was stored before secrets had claims holds its secret all the same:
/// nobody else can claim it, and its own rotation takes the claim.
async fn a_policy_stored_before_claims_keeps_its_secret(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let secret = "keyward/production/legacy";
    let mut legacy = key_delivering_to(secret, &clock);
    legacy.change.secret_claim = None;
    store.apply(&legacy.change).await.unwrap();
    assert_claimed(store.apply(&key_delivering_to(secret, &clock).change).await);
    let rotated = rotate(&legacy.key, grace("24h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&rotated.change).await.unwrap();
    assert_claimed(store.apply(&key_delivering_to(secret, &clock).change).await);
}

/// Once its holder stops delivering, a secret passes only to a key that holds every scope
/// of that holder: the services that read the secret may still use what it held.
async fn a_stale_claim_passes_only_to_a_key_holding_the_old_keys_scopes(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let secret = "keyward/production/orders";
    let wide = ["orders:read", "orders:write"];
    let first = new_key("production", "writer", &wide, Some(policy(secret)), &clock);
    store.apply(&first.change).await.unwrap();
    let (_, cleared) = set_policy(&first.key, None, &clock);
    store.apply(&cleared).await.unwrap();
    let narrow = new_key(
        "production",
        "reader",
        &["orders:read"],
        Some(policy(secret)),
        &clock,
    );
    assert_claimed(store.apply(&narrow.change).await);
    assert_eq!(store.key(&narrow.key.id).await.unwrap(), None);
    let wider = ["orders:read", "orders:write", "billing:read"];
    let successor = new_key("production", "writer", &wider, Some(policy(secret)), &clock);
    store.apply(&successor.change).await.unwrap();
}

async fn of_sixteen_keys_racing_for_one_secret_exactly_one_gets_it(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let changes = (0..16)
        .map(|_| key_delivering_to("keyward/production/contested", &clock).change)
        .collect();
    let mut wins = 0;
    for result in apply_all_at_once(&store, changes).await {
        match result {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict | StoreError::SecretClaimed) => {}
            Err(e) => panic!("neither a conflict nor a claim: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    let delivering = store
        .keys(&env("production"), &page(100, None))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|k| k.rotation_policy.is_some())
        .count();
    assert_eq!(delivering, 1);
}

async fn due_keys_come_from_the_index_earliest_first(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let start = clock.now();
    let mut made = Vec::new();
    for (name, every, expires_in) in [
        ("daily", Some("P1D"), None),
        ("weekly", Some("P7D"), None),
        ("plain", None, None),
        ("expiring", None, Some(TimeDelta::hours(30))),
    ] {
        let input = NewKey {
            expires_at: expires_in.map(|d| start + d),
            rotation_policy: every.map(|every| {
                RotationPolicy::from_json(&serde_json::json!({
                    "every": every, "grace_period": "1h", "secret_id": format!("keyward/{name}")
                }))
                .unwrap()
            }),
            ..orders_key(name)
        };
        let issued =
            create_key(&env("production"), input, actor(), &clock.mint, clock.now()).unwrap();
        store.apply(&issued.change).await.unwrap();
        made.push(issued.key);
    }
    let names = |keys: Vec<Key>| -> Vec<String> {
        keys.iter().map(|k| k.name.as_str().to_owned()).collect()
    };
    let at = |days: i64| start + TimeDelta::days(days) + TimeDelta::seconds(1);
    assert!(store.due_keys(start, 100).await.unwrap().is_empty());
    assert_eq!(
        names(store.due_keys(at(1), 100).await.unwrap()),
        ["expiring", "daily"],
        "the expiring key's 24h notice is due at 6h, the daily rotation at 24h"
    );
    assert_eq!(
        names(store.due_keys(at(8), 100).await.unwrap()),
        ["expiring", "daily", "weekly"]
    );
    assert_eq!(
        names(store.due_keys(at(8), 2).await.unwrap()),
        ["expiring", "daily"]
    );
    let daily = store.due_keys(at(8), 100).await.unwrap().remove(1);
    assert_eq!(daily, made[0], "the record is read in full and current");
    let Setting::Changed { change, .. } =
        set_rotation_policy(&daily, None, actor(), &clock.mint, clock.now()).unwrap()
    else {
        panic!("the policy is cleared")
    };
    store.apply(&change).await.unwrap();
    assert_eq!(
        names(store.due_keys(at(8), 100).await.unwrap()),
        ["expiring", "weekly"],
        "a key leaves the index when nothing is due any more"
    );
}

/// A stored `orders:read` key of `production` that expires an hour after `made`.
async fn short_lived_key(store: &dyn KeyStore, mint: &Mint, made: DateTime<Utc>) -> Issued {
    let input = NewKey {
        expires_at: Some(made + TimeDelta::hours(1)),
        ..orders_key("short-lived")
    };
    let issued = create_key(&env("production"), input, actor(), mint, made).unwrap();
    store.apply(&issued.change).await.unwrap();
    issued
}

/// The schedule and DynamoDB's TTL path can both see one expiry; whichever applies second
/// loses on the key's version, so `key.expired` is recorded once.
async fn an_expiry_seen_twice_is_recorded_once(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let made = clock.now();
    let issued = short_lived_key(&*store, &clock.mint, made).await;
    let later = made + TimeDelta::hours(2);
    let by_schedule =
        keyward::domain::expiry_notice(&issued.key, actor(), &clock.mint, later).unwrap();
    let by_ttl = keyward::domain::expiry_notice(
        &issued.key,
        Actor::system("dynamodb-ttl"),
        &clock.mint,
        later + TimeDelta::minutes(1),
    )
    .unwrap();
    store.apply(&by_schedule).await.unwrap();
    assert!(matches!(
        store.apply(&by_ttl).await,
        Err(StoreError::Conflict)
    ));
    let filter = ActivityFilter {
        action: Some(Action::Expired),
        key_id: None,
    };
    let expired = store
        .environment_activity(&env("production"), &filter, &page(10, None))
        .await
        .unwrap()
        .items;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].id, by_schedule.activity.id);
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

async fn accepted_and_refused(
    store: &dyn KeyStore,
    key: &Key,
    since: &str,
) -> Vec<(String, u64, u64)> {
    store
        .hourly_usage(&key.environment, &key.id, at(since))
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.hour.to_rfc3339(), h.accepted, h.refused))
        .collect()
}

async fn usage_adds_up_by_hour_apart_from_the_key(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let stored = key(&*store, "production", "counted", &clock).await;
    let mut first = UsageTally::new(stored.environment.clone(), stored.id.clone());
    first.count(true, at("2026-11-27T10:59:30Z"));
    first.count(true, at("2026-11-27T11:00:10Z"));
    first.count(false, at("2026-11-27T11:05:00Z"));
    store.add_usage(&first).await.unwrap();
    let mut second = UsageTally::new(stored.environment.clone(), stored.id.clone());
    second.count(true, at("2026-11-27T11:20:00Z"));
    second.count(false, at("2026-11-27T11:03:00Z"));
    store.add_usage(&second).await.unwrap();
    assert_eq!(
        accepted_and_refused(&*store, &stored, "2026-11-27T10:30:00Z").await,
        [
            ("2026-11-27T10:00:00+00:00".to_owned(), 1, 0),
            ("2026-11-27T11:00:00+00:00".to_owned(), 2, 2),
        ],
        "oldest first, from the hour of `since`"
    );
    assert_eq!(
        accepted_and_refused(&*store, &stored, "2026-11-27T11:00:00Z")
            .await
            .len(),
        1
    );
    let unused = key(&*store, "production", "unused", &clock).await;
    assert!(
        accepted_and_refused(&*store, &unused, "2026-11-01T00:00:00Z")
            .await
            .is_empty()
    );

    // A lifecycle change on a key whose usage was written meanwhile still applies: usage never
    // touches the key's records or its version.
    let read = store.key(&stored.id).await.unwrap().unwrap();
    store.add_usage(&second).await.unwrap();
    let rotated = rotate(&read, grace("1h"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&rotated.change).await.unwrap();
}

/// The addresses accepted checks came from are kept by hour, each once; an hour stops taking
/// them once it holds fifty (a write brings at most fifty, so an hour never holds a hundred),
/// and they are read back from the hour of `since` on.
async fn seen_addresses_are_kept_by_hour_at_most_fifty_each(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let stored = key(&*store, "production", "seen", &clock).await;
    let (ten, eleven) = (at("2026-11-27T10:15:00Z"), at("2026-11-27T11:15:00Z"));
    let address = |i: u8| std::net::IpAddr::from([198, 51, 100, i]);
    // Two writes of forty each in one hour are both taken; a third, once the hour holds
    // fifty or more, is not.
    for batch in [0..40u8, 40..80, 80..90] {
        let mut tally = UsageTally::new(stored.environment.clone(), stored.id.clone());
        for i in batch {
            tally.count(true, ten);
            tally.saw(address(i), ten);
        }
        store.add_usage(&tally).await.unwrap();
    }
    let mut again = UsageTally::new(stored.environment.clone(), stored.id.clone());
    again.count(true, ten);
    again.saw(address(0), ten);
    again.count(true, eleven);
    again.saw("2001:db8::7".parse().unwrap(), eleven);
    store.add_usage(&again).await.unwrap();
    let seen = store
        .seen_addresses(&stored.environment, &stored.id, at("2026-11-27T10:30:00Z"))
        .await
        .unwrap();
    let in_hour = |hour: &str| seen.iter().filter(|(h, _)| *h == at(hour)).count();
    assert_eq!(in_hour("2026-11-27T10:00:00Z"), 80, "{seen:?}");
    assert!(seen.contains(&(at("2026-11-27T10:00:00Z"), address(79))));
    assert!(!seen.contains(&(at("2026-11-27T10:00:00Z"), address(80))));
    assert!(seen.contains(&(at("2026-11-27T11:00:00Z"), "2001:db8::7".parse().unwrap())));
    assert_eq!(seen.len(), 81, "each address once an hour");
    let later = store
        .seen_addresses(&stored.environment, &stored.id, eleven)
        .await
        .unwrap();
    assert_eq!(later.len(), 1, "from the hour of `since` on");
    assert_eq!(
        accepted_and_refused(&*store, &stored, "2026-11-27T10:00:00Z").await,
        [
            ("2026-11-27T10:00:00+00:00".to_owned(), 91, 0),
            ("2026-11-27T11:00:00+00:00".to_owned(), 1, 0),
        ],
        "the counts are written whole, however full the hour's addresses are"
    );
    let other = key(&*store, "production", "other", &clock).await;
    assert!(
        store
            .seen_addresses(&other.environment, &other.id, ten)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn last_use_only_moves_forward(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let (a, b) = (
        key(&*store, "production", "a", &clock).await,
        key(&*store, "production", "b", &clock).await,
    );
    assert!(
        store
            .last_use(&a.environment, &[&a.id, &b.id])
            .await
            .unwrap()
            .is_empty()
    );
    let later = LastUse {
        last_used_at: Some(at("2026-11-27T11:20:00Z")),
        last_refused_at: None,
    };
    let owner = UsageOwner::Key(a.environment.clone(), a.id.clone());
    store.record_last_use(&owner, later).await.unwrap();
    let earlier = LastUse {
        last_used_at: Some(at("2026-11-27T11:19:00Z")),
        last_refused_at: Some(at("2026-11-27T09:00:00Z")),
    };
    store.record_last_use(&owner, earlier).await.unwrap();
    let found = store
        .last_use(&a.environment, &[&a.id, &b.id])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "b was never presented");
    assert_eq!(
        found[&a.id],
        LastUse {
            last_used_at: later.last_used_at,
            last_refused_at: earlier.last_refused_at,
        }
    );
}

async fn postponing_moves_a_key_in_the_due_index_only_at_the_version_read(
    store: Arc<dyn KeyStore>,
) {
    let clock = Clock::new();
    environment(&*store, "production", &clock).await;
    let stored = key(&*store, "production", "watched", &clock).await;
    let at = clock.now();
    let rotated = rotate(&stored, grace("7d"), actor(), &clock.mint, at).unwrap();
    store.apply(&rotated.change).await.unwrap();
    let old = rotated.previous;
    let watch = at + TimeDelta::hours(1);
    let due = |now| {
        let store = Arc::clone(&store);
        async move {
            store
                .due_keys(now, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|k| k.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(due(watch).await, std::slice::from_ref(&old.id));
    let later = watch + TimeDelta::minutes(30);
    store.postpone(&old, later).await.unwrap();
    assert!(due(watch).await.is_empty(), "moved on");
    assert_eq!(due(later).await, std::slice::from_ref(&old.id));
    assert_eq!(
        store.key(&old.id).await.unwrap().unwrap(),
        old,
        "the key is unchanged"
    );

    store
        .postpone(&stored, later + TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(
        due(later).await,
        std::slice::from_ref(&old.id),
        "a postponement at a version that is no longer the key's does nothing"
    );
    let changed =
        change_grace_period(&old, grace("3d"), actor(), &clock.mint, clock.now()).unwrap();
    store.apply(&changed.change).await.unwrap();
    assert_eq!(
        due(watch).await,
        std::slice::from_ref(&old.id),
        "a change puts the key where its record says"
    );
}

/// A fresh table on the DynamoDB endpoint that `./scripts/test` starts (moto's server).
async fn dynamodb() -> Arc<dyn KeyStore> {
    Arc::new(moto_table("contract").await.store)
}

#[tokio::test]
async fn a_failing_dynamodb_call_is_a_backend_error_not_a_conflict() {
    let store = dynamodb_without_table().await;
    let clock = Clock::new();
    let issued = create_environment(&env("production"), actor(), &clock.mint, clock.now());
    assert!(matches!(
        store.apply(&issued.change).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.key_by_hash(&issued.secret.hash()).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.keys(&env("production"), &page(5, None)).await,
        Err(StoreError::Backend(_))
    ));
}

/// DynamoDB's TTL removes an expired key's hash item some time after its expiry. Recording the
/// expiry afterwards (the TTL path and the schedule both do) must not write the item back:
/// it would only wait for TTL again, and come down the stream as a second removal.
#[tokio::test]
async fn recording_an_expiry_after_ttl_removed_the_hash_item_does_not_bring_it_back() {
    let MotoTable {
        store,
        client,
        name: table,
    } = moto_table("ttl").await;
    let clock = Clock::new();
    let made = create_environment(&env("production"), actor(), &clock.mint, clock.now());
    store.apply(&made.change).await.unwrap();
    let created = clock.now();
    let issued = short_lived_key(&store, &clock.mint, created).await;
    let hash_item = [
        (
            keyward::store::dynamodb::table::PK.to_owned(),
            aws_sdk_dynamodb::types::AttributeValue::S(format!(
                "{}{}",
                keyward::store::dynamodb::table::HASH_PREFIX,
                issued.key.hash.to_hex()
            )),
        ),
        (
            keyward::store::dynamodb::table::SK.to_owned(),
            aws_sdk_dynamodb::types::AttributeValue::S("HASH".to_owned()),
        ),
    ];
    client
        .delete_item()
        .table_name(&table)
        .set_key(Some(hash_item.clone().into()))
        .send()
        .await
        .unwrap();

    let later = created + TimeDelta::hours(3);
    let expired = keyward::domain::expiry_notice(
        &issued.key,
        Actor::system("dynamodb-ttl"),
        &clock.mint,
        later,
    )
    .expect("the expiry is due");
    store.apply(&expired).await.unwrap();
    let item = client
        .get_item()
        .table_name(&table)
        .set_key(Some(hash_item.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item;
    assert_eq!(item, None, "the hash item stays gone");
    assert!(
        matches!(store.apply(&expired).await, Err(StoreError::Conflict)),
        "a stale change whose hash item is gone is still a conflict"
    );
    let stored = store.key(&issued.key.id).await.unwrap().unwrap();
    assert_eq!(
        stored.version,
        issued.key.version + 1,
        "the expiry was recorded"
    );
    assert_eq!(store.key_by_hash(&issued.key.hash).await.unwrap(), None);
}

/// Counts the items DynamoDB reads for the queries a client sends (`ScannedCount`: what a
/// query evaluates before its filter, and what it is billed for).
#[derive(Debug, Clone, Default)]
struct ItemsRead(Arc<std::sync::atomic::AtomicUsize>);

impl aws_sdk_dynamodb::config::Intercept for ItemsRead {
    fn name(&self) -> &'static str {
        "items-read"
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let query = context
            .output_or_error()
            .ok()
            .and_then(|o| o.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>());
        if let Some(query) = query {
            let scanned = usize::try_from(query.scanned_count).unwrap_or(0);
            self.0
                .fetch_add(scanned, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A filter that matches little on a busy environment reads a bounded number of items per
/// request, and answers with a cursor that goes on from where it stopped, even with fewer
/// entries than asked for; following the cursors finds every match, once.
#[tokio::test]
async fn a_filtered_activity_page_reads_a_bounded_number_of_items() {
    let read = ItemsRead::default();
    let aws = keyward::testing::moto_config().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&aws)
        .interceptor(read.clone())
        .build();
    let MotoTable {
        store,
        name: table,
        client,
    } = moto_table_with("busy", aws_sdk_dynamodb::Client::from_conf(config)).await;
    let clock = Clock::new();
    let production = env("production");
    let made = create_environment(&production, actor(), &clock.mint, clock.now());
    store.apply(&made.change).await.unwrap();
    let key = &made.key;
    // The rare entry first (the oldest), then 2,000 others, written straight as outbox items.
    let rare = keyward::domain::ActivityEntry::new(
        &clock.mint,
        &production,
        &key.id,
        actor(),
        keyward::domain::Event::Expired {
            expires_at: clock.now(),
        },
        clock.now(),
    );
    let mut entries = vec![rare.clone()];
    for _ in 0..2000 {
        entries.push(keyward::domain::ActivityEntry::new(
            &clock.mint,
            &production,
            &key.id,
            actor(),
            keyward::domain::Event::RotationPolicyChanged {
                previous: None,
                rotation_policy: None,
            },
            clock.now(),
        ));
    }
    for chunk in entries.chunks(25) {
        let writes = chunk
            .iter()
            .map(|entry| {
                let mut item: std::collections::HashMap<
                    String,
                    aws_sdk_dynamodb::types::AttributeValue,
                > = serde_dynamo::to_item(entry).unwrap();
                item.insert(
                    "pk".to_owned(),
                    aws_sdk_dynamodb::types::AttributeValue::S("ENVACT#production".to_owned()),
                );
                item.insert(
                    "sk".to_owned(),
                    aws_sdk_dynamodb::types::AttributeValue::S(entry.id.as_str().to_owned()),
                );
                let put = aws_sdk_dynamodb::types::PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .unwrap();
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(put)
                    .build()
            })
            .collect();
        client
            .batch_write_item()
            .request_items(&table, writes)
            .send()
            .await
            .unwrap();
    }

    let filter = ActivityFilter {
        action: Some(Action::Expired),
        key_id: None,
    };
    let limit = 20;
    let bound = 5 * (limit + 1);
    let (mut found, mut requests, mut after, mut most) = (Vec::new(), 0, None, 0);
    loop {
        read.0.store(0, std::sync::atomic::Ordering::SeqCst);
        let page = store
            .environment_activity(&production, &filter, &page(limit, after.clone()))
            .await
            .unwrap();
        let this = read.0.load(std::sync::atomic::Ordering::SeqCst);
        most = most.max(this);
        requests += 1;
        found.extend(page.items.into_iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
        assert!(requests <= 100, "the cursors go on and end");
    }
    assert!(
        most <= bound,
        "one request read {most} items; the bound is {bound}"
    );
    assert_eq!(found, [rare.id], "the one match, once");
    assert!(requests >= 2002 / bound, "{requests} requests");
}

/// Usage is kept under its key's environment (`USAGE#<env>#<key id>`), so that a role may be
/// limited to one environment's usage; what versions before wrote under the key alone is read
/// beside it, and the stream's records of such items still move their last use.
#[tokio::test]
async fn usage_is_kept_by_environment_and_read_beside_what_earlier_versions_wrote() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let MotoTable {
        store,
        client,
        name: table,
    } = moto_table("usage-layout").await;
    let clock = Clock::new();
    environment(&store, "production", &clock).await;
    let (counted, other) = (
        key(&store, "production", "counted", &clock).await,
        key(&store, "production", "other", &clock).await,
    );
    let production = &counted.environment;
    let mut tally = UsageTally::new(production.clone(), counted.id.clone());
    tally.count(true, at("2026-11-27T11:20:00Z"));
    store.add_usage(&tally).await.unwrap();
    let partition = |pk: String| {
        let client = client.clone();
        let table = table.clone();
        async move {
            client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", S(pk))
                .send()
                .await
                .unwrap()
                .items
                .unwrap_or_default()
        }
    };
    let written = partition(format!("USAGE#production#{}", counted.id)).await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["sk"], S("H#2026-11-27T11:00:00.000Z".to_owned()));
    assert!(partition(format!("USAGE#{}", counted.id)).await.is_empty());

    let earlier = [
        (
            "H#2026-11-27T10:00:00.000Z",
            vec![("accepted", N("5".into())), ("refused", N("0".into()))],
        ),
        (
            "H#2026-11-27T11:00:00.000Z",
            vec![("accepted", N("2".into())), ("refused", N("1".into()))],
        ),
        (
            "LAST",
            vec![
                ("last_used_at", S("2026-11-27T10:50:00.000Z".into())),
                ("last_refused_at", S("2026-11-27T10:40:00.000Z".into())),
            ],
        ),
    ];
    for (sk, attributes) in earlier {
        let mut item: std::collections::HashMap<String, _> = attributes
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        item.insert("pk".to_owned(), S(format!("USAGE#{}", counted.id)));
        item.insert("sk".to_owned(), S(sk.to_owned()));
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        accepted_and_refused(&store, &counted, "2026-11-27T09:00:00Z").await,
        [
            ("2026-11-27T10:00:00+00:00".to_owned(), 5, 0),
            ("2026-11-27T11:00:00+00:00".to_owned(), 3, 1),
        ],
        "an hour counted in both places is their sum"
    );

    let owner = UsageOwner::Key(production.clone(), counted.id.clone());
    store.record_last_use(&owner, tally.last).await.unwrap();
    let expected = LastUse {
        last_used_at: Some(at("2026-11-27T11:20:00Z")),
        last_refused_at: Some(at("2026-11-27T10:40:00Z")),
    };
    let one = store.last_use(production, &[&counted.id]).await.unwrap();
    assert_eq!(
        one[&counted.id], expected,
        "a time the new item lacks is the earlier one's"
    );
    let page = store
        .last_use(production, &[&counted.id, &other.id])
        .await
        .unwrap();
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(page[&counted.id], expected);

    let unpartitioned = UsageOwner::Unpartitioned(counted.id.clone());
    let refused_later = LastUse {
        last_used_at: None,
        last_refused_at: Some(at("2026-11-27T10:45:00Z")),
    };
    store
        .record_last_use(&unpartitioned, refused_later)
        .await
        .unwrap();
    let moved = store.last_use(production, &[&counted.id]).await.unwrap();
    assert_eq!(
        moved[&counted.id].last_refused_at,
        refused_later.last_refused_at
    );
    assert_eq!(
        partition(format!("USAGE#production#{}", counted.id))
            .await
            .len(),
        2,
        "the hour and its last use, and nothing else, under the environment"
    );

    // Each key's usage is read under its own environment: a page of keys of two
    // environments reads each under its own.
    environment(&store, "staging", &clock).await;
    let staged = key(&store, "staging", "staged", &clock).await;
    let mut staged_tally = UsageTally::new(staged.environment.clone(), staged.id.clone());
    staged_tally.count(true, at("2026-11-27T11:40:00Z"));
    store.add_usage(&staged_tally).await.unwrap();
    let staged_owner = UsageOwner::Key(staged.environment.clone(), staged.id.clone());
    store
        .record_last_use(&staged_owner, staged_tally.last)
        .await
        .unwrap();
    assert!(
        store
            .last_use(production, &[&staged.id])
            .await
            .unwrap()
            .is_empty(),
        "not under another environment"
    );
    let both = [counted.clone(), staged];
    let views = keyward::http::KeyView::read_all(&store, &both, clock.now())
        .await
        .unwrap();
    let shown: Vec<serde_json::Value> = views
        .iter()
        .map(|view| serde_json::to_value(view).unwrap()["last_used_at"].clone())
        .collect();
    assert_eq!(
        shown,
        [
            serde_json::json!("2026-11-27T11:20:00Z"),
            serde_json::json!("2026-11-27T11:40:00Z")
        ]
    );
}

/// A store on a table that does not exist: every call fails.
async fn dynamodb_without_table() -> DynamoStore {
    let aws = keyward::testing::moto_config().await;
    DynamoStore::from_config(&aws, &format!("no-such-table-{}", std::process::id()))
}

/// A store on a file of its own, so that its one-row reads go through its read-only
/// connections beside the writing one, as `keyward serve`'s do (an in-memory database has
/// no second connection). The files stay in one folder per test process.
fn sqlite_file() -> Arc<SqliteStore> {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("keyward-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Arc::new(SqliteStore::open(&dir.join(format!("{n}.db"))).unwrap())
}

/// An environment's leak policy is set only from the policy that was read, with its entry on
/// the default key; a change decided on a stale read conflicts and writes nothing.
async fn a_leak_policy_is_set_only_from_the_policy_read(store: Arc<dyn KeyStore>) {
    let clock = Clock::new();
    let issued = environment(&*store, "production", &clock).await;
    let read = store
        .environment(&env("production"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.leak_policy, LeakPolicy::Revoke);
    let notify = set_leak_policy(&read, LeakPolicy::Notify, actor(), &clock.mint, clock.now());
    let rotate = set_leak_policy(&read, LeakPolicy::Rotate, actor(), &clock.mint, clock.now());
    store.apply(&notify.unwrap()).await.unwrap();
    assert_conflict(store.apply(&rotate.unwrap()).await);
    let stored = store
        .environment(&env("production"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.leak_policy, LeakPolicy::Notify);
    assert_eq!(
        stored.default_key_id, issued.key.id,
        "only the policy changed"
    );
    let entries = store
        .environment_activity(
            &env("production"),
            &ActivityFilter::default(),
            &page(10, None),
        )
        .await
        .unwrap()
        .items;
    let actions: Vec<&str> = entries.iter().map(|e| e.event.action().as_str()).collect();
    assert_eq!(actions, ["environment.leak_policy_changed", "key.created"]);
    assert_eq!(entries[0].key_id, issued.key.id);
}

// Every contract case, on each adapter; each expression makes a fresh, empty store.
keyward::on_both_stores!(
    sqlite => Arc::new(SqliteStore::in_memory().unwrap()),
    sqlite_file => sqlite_file(),
    dynamodb => dynamodb().await;
    an_environment_is_made_once,
    a_stale_change_conflicts_and_writes_nothing,
    a_key_id_or_hash_is_never_stored_twice,
    the_default_moves_only_from_the_current_default,
    keys_are_listed_newest_first_a_page_at_a_time,
    activity_is_newest_first_and_filtered,
    of_sixteen_racing_rotations_exactly_one_is_applied,
    due_keys_come_from_the_index_earliest_first,
    an_expiry_seen_twice_is_recorded_once,
    one_active_key_delivers_to_a_secret_and_a_rotation_hands_it_on,
    of_sixteen_keys_racing_for_one_secret_exactly_one_gets_it,
    a_policy_stored_before_claims_keeps_its_secret,
    a_stale_claim_passes_only_to_a_key_holding_the_old_keys_scopes,
    usage_adds_up_by_hour_apart_from_the_key,
    seen_addresses_are_kept_by_hour_at_most_fifty_each,
    last_use_only_moves_forward,
    postponing_moves_a_key_in_the_due_index_only_at_the_version_read,
    a_leak_policy_is_set_only_from_the_policy_read
);
