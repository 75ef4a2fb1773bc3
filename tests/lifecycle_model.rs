//! Random sequences of create, rotate, change grace, revoke and time passing, applied through
//! the domain to a real store (SQLite, and DynamoDB on moto's server), checked step by step
//! against a small in-memory model of docs/design.md's lifecycle rules: the status is derived from
//! the record and the time, an environment has one default key, a grace never runs past an
//! expiry the key already had, and a revocation is final. The number of cases is bounded so
//! that the DynamoDB run, a table per case, stays within seconds.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use keyward::domain::{
    Actor, EnvName, GracePeriod, Key, KeyId, LifecycleError, Mint, NewKey, Revocation, Status,
    change_grace_period, create_environment, create_key, revoke, rotate,
};
use keyward::store::{KeyStore, PageRequest, SqliteStore};
use keyward::testing::orders_key;
use proptest::prelude::*;

type Timestamp = DateTime<Utc>;

/// One step of a sequence. Keys are picked by their position among the keys made so far.
#[derive(Debug, Clone)]
enum Step {
    Create { expires_in_hours: Option<i64> },
    Rotate { pick: usize, grace: u64 },
    ChangeGrace { pick: usize, grace: u64 },
    Revoke { pick: usize },
    Pass { minutes: i64 },
}

/// Graces a user would pick: the presets, and any length up to a week.
fn grace() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop_oneof![
            Just(0),
            Just(3600),
            Just(86_400),
            Just(259_200),
            Just(604_800)
        ],
        0..=604_800u64,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => prop::option::of(1..200i64).prop_map(|expires_in_hours| Step::Create { expires_in_hours }),
        3 => (any::<usize>(), grace()).prop_map(|(pick, grace)| Step::Rotate { pick, grace }),
        2 => (any::<usize>(), grace()).prop_map(|(pick, grace)| Step::ChangeGrace { pick, grace }),
        2 => any::<usize>().prop_map(|pick| Step::Revoke { pick }),
        2 => (1..3000i64).prop_map(|minutes| Step::Pass { minutes }),
    ]
}

/// What the model knows of a key.
#[derive(Debug, Clone)]
struct Modelled {
    id: KeyId,
    default: bool,
    rotated: bool,
    revoked: bool,
    expires_at: Option<Timestamp>,
    /// The expiry the key had when it was rotated; no grace may pass it.
    limit: Option<Timestamp>,
}

impl Modelled {
    fn status(&self, now: Timestamp) -> Status {
        if self.revoked {
            Status::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Status::Expired
        } else if self.rotated {
            Status::InGrace
        } else {
            Status::Active
        }
    }
}

fn capped(now: Timestamp, grace: u64, limit: Option<Timestamp>) -> Timestamp {
    let wanted = now + TimeDelta::seconds(grace as i64);
    limit.map_or(wanted, |limit| wanted.min(limit))
}

struct Run<'a> {
    store: &'a dyn KeyStore,
    env: EnvName,
    mint: Mint,
    now: Timestamp,
    model: Vec<Modelled>,
}

impl Run<'_> {
    async fn stored(&self, at: usize) -> Key {
        self.store.key(&self.model[at].id).await.unwrap().unwrap()
    }

    fn actor() -> Actor {
        Actor::operator("model")
    }

    /// Applies one step to the store and to the model, and checks that both agree on whether
    /// it was allowed.
    async fn apply(&mut self, step: &Step) {
        let now = self.now;
        let pick = |n: usize| n % self.model.len();
        match *step {
            Step::Create { expires_in_hours } => {
                let input = NewKey {
                    expires_at: expires_in_hours.map(|h| now + TimeDelta::hours(h)),
                    ..orders_key("modelled")
                };
                let issued = create_key(&self.env, input, Self::actor(), &self.mint, now).unwrap();
                self.store.apply(&issued.change).await.unwrap();
                self.model.push(Modelled {
                    id: issued.key.id,
                    default: false,
                    rotated: false,
                    revoked: false,
                    expires_at: issued.key.expires_at,
                    limit: None,
                });
            }
            Step::Rotate { pick: p, grace } => {
                let at = pick(p);
                let key = self.stored(at).await;
                let expected = self.model[at].status(now);
                let grace = GracePeriod::from_seconds(grace).unwrap();
                match rotate(&key, grace, Self::actor(), &self.mint, now) {
                    Ok(rotated) => {
                        assert_eq!(expected, Status::Active, "only an active key rotates");
                        self.store.apply(&rotated.change).await.unwrap();
                        let old = &mut self.model[at];
                        let default = std::mem::take(&mut old.default);
                        old.rotated = true;
                        old.limit = old.expires_at;
                        old.expires_at = Some(capped(now, grace.seconds(), old.limit));
                        self.model.push(Modelled {
                            id: rotated.key.id,
                            default,
                            rotated: false,
                            revoked: false,
                            expires_at: None,
                            limit: None,
                        });
                    }
                    Err(e) => {
                        assert_ne!(expected, Status::Active, "{e}");
                        assert_eq!(e, LifecycleError::NotActive(expected));
                    }
                }
            }
            Step::ChangeGrace { pick: p, grace } => {
                let at = pick(p);
                let key = self.stored(at).await;
                let expected = self.model[at].status(now);
                let grace = GracePeriod::from_seconds(grace).unwrap();
                match change_grace_period(&key, grace, Self::actor(), &self.mint, now) {
                    Ok(changed) => {
                        assert_eq!(expected, Status::InGrace, "only a key in grace changes");
                        self.store.apply(&changed.change).await.unwrap();
                        let modelled = &mut self.model[at];
                        modelled.expires_at = Some(capped(now, grace.seconds(), modelled.limit));
                    }
                    Err(e) => {
                        assert_ne!(expected, Status::InGrace, "{e}");
                        assert_eq!(e, LifecycleError::NotInGrace(expected));
                    }
                }
            }
            Step::Revoke { pick: p } => {
                let at = pick(p);
                let key = self.stored(at).await;
                let expected = self.model[at].status(now);
                match revoke(&key, Self::actor(), &self.mint, now) {
                    Ok(Revocation::Unchanged(_)) => {
                        assert!(matches!(expected, Status::Revoked | Status::Expired));
                    }
                    Ok(Revocation::Revoked { change, .. }) => {
                        assert!(matches!(expected, Status::Active | Status::InGrace));
                        assert!(!self.model[at].default, "the default key is never revoked");
                        self.store.apply(&change).await.unwrap();
                        let modelled = &mut self.model[at];
                        modelled.revoked = true;
                        modelled.expires_at = Some(now);
                    }
                    Err(e) => {
                        assert_eq!(e, LifecycleError::DefaultKeyMustBeRotated);
                        assert!(self.model[at].default);
                    }
                }
            }
            Step::Pass { minutes } => self.now += TimeDelta::minutes(minutes),
        }
    }

    /// The store holds what the model says, and the rules hold of it.
    async fn check(&self) {
        let environment = self.store.environment(&self.env).await.unwrap().unwrap();
        let defaults: Vec<&Modelled> = self.model.iter().filter(|m| m.default).collect();
        assert_eq!(defaults.len(), 1, "one default key per environment");
        assert_eq!(environment.default_key_id, defaults[0].id);
        let page = PageRequest {
            limit: 100,
            after: None,
        };
        let stored = self.store.keys(&self.env, &page).await.unwrap().items;
        assert_eq!(
            stored.len(),
            self.model.len(),
            "no key the model does not know"
        );
        assert_eq!(
            stored.iter().filter(|k| k.default).count(),
            1,
            "one key in the store is the default"
        );
        for modelled in &self.model {
            let key = self.store.key(&modelled.id).await.unwrap().unwrap();
            assert_eq!(key.status(self.now), modelled.status(self.now), "{key:?}");
            assert_eq!(key.default, modelled.default, "{key:?}");
            assert_eq!(key.expires_at, modelled.expires_at, "{key:?}");
            assert_eq!(key.revoked_at.is_some(), modelled.revoked, "{key:?}");
            if let (Some(limit), Some(expires_at)) = (key.expiry_limit, key.expires_at) {
                assert!(
                    expires_at <= limit,
                    "a grace past the earlier expiry: {key:?}"
                );
            }
            if key.default {
                assert_ne!(key.status(self.now), Status::Revoked);
            }
        }
    }
}

/// Runs `steps` on a fresh environment in `store`.
async fn run(store: &dyn KeyStore, steps: &[Step]) {
    let env = EnvName::parse("production").unwrap();
    let mint = keyward::mint();
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let made = create_environment(&env, Actor::operator("model"), &mint, now);
    store.apply(&made.change).await.unwrap();
    let mut run = Run {
        store,
        env,
        mint,
        now,
        model: vec![Modelled {
            id: made.key.id,
            default: true,
            rotated: false,
            revoked: false,
            expires_at: None,
            limit: None,
        }],
    };
    for step in steps {
        run.apply(step).await;
        run.check().await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_lifecycle_rules_hold_on_sqlite(steps in prop::collection::vec(step(), 1..24)) {
        runtime().block_on(async {
            let store = SqliteStore::in_memory().unwrap();
            run(&store, &steps).await;
        });
    }
}

proptest! {
    // A table per case on moto: a dozen cases keep this within seconds.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn the_lifecycle_rules_hold_on_dynamodb(steps in prop::collection::vec(step(), 1..16)) {
        runtime().block_on(async {
            let store = keyward::testing::moto_table("model").await.store;
            run(&store, &steps).await;
        });
    }
}
