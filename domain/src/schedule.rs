//! What the schedule does to keys: when a key is next due, and the changes a scheduled run
//! makes. A key is due when its rotation is due, when a rotation's secret is not yet
//! delivered, when an expiry notice is due, or when its grace is to be looked at for going
//! quiet. Every change bumps the key's version, so two overlapping runs can never both apply
//! one.

use chrono::TimeDelta;

use super::Timestamp;
use super::activity::{Actor, Event};
use super::key::{DeliveryFailures, ExpiryNotice, ExpiryStage, Key, RotationPolicy, Status};
use super::lifecycle::{Change, LifecycleError, Rotated, key_change, rotate, update};
use super::mint::Mint;
use super::usage::{HourlyUsage, LastUse, hour_of};

/// What a scheduled run should do with a key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Finish delivering the secret of an earlier rotation.
    Delivery,
    /// Rotate the key by its policy.
    Rotation,
    /// Record the notice of this stage.
    Notice(ExpiryStage),
    /// Look whether the key, in its grace, has gone quiet while its successor is used.
    GraceWatch,
}

/// How long a key in its grace must go without being presented, while its successor is used,
/// for the schedule to record `key.grace_idle`.
pub const GRACE_IDLE_AFTER: TimeDelta = TimeDelta::hours(1);

/// The longest a run that found a key in its grace not yet quiet waits before it looks again.
pub const GRACE_WATCH_EVERY: TimeDelta = TimeDelta::minutes(15);

impl Key {
    /// When the key's policy asks for its next rotation: its policy's interval after it was
    /// made. A key that will expire first, that is rotated or revoked, or whose expiry is
    /// recorded (it expired before a run could rotate it), is never due.
    pub fn rotation_due_at(&self) -> Option<Timestamp> {
        let policy = self.rotation_policy.as_ref()?;
        if self.rotated_to.is_some()
            || self.revoked_at.is_some()
            || self.notified_stage() == Some(ExpiryStage::Expired)
        {
            return None;
        }
        let due = self.created_at + policy.every.duration();
        match self.expires_at {
            Some(at) if at <= due => None,
            _ => Some(due),
        }
    }

    /// Whether a rotation's secret still has to be made current: only while the key
    /// is active. A key revoked or rotated meanwhile must never become what services read.
    /// (A key with a pending delivery is a rotation's new key, which has no expiry of its own,
    /// so revocation and rotation are all that can end it.) It is [`Key::delivers_to`] without
    /// the time, since the due time it sets is stored, and it stays with the secret the version
    /// was staged in even if the policy names another one meanwhile.
    fn delivery_pending(&self) -> bool {
        self.pending_delivery.is_some() && self.revoked_at.is_none() && self.rotated_to.is_none()
    }

    /// The stage whose notice was recorded for the current expiry, if any.
    fn notified_stage(&self) -> Option<ExpiryStage> {
        self.expiry_notice
            .filter(|n| Some(n.expires_at) == self.expires_at)
            .map(|n| n.stage)
    }

    /// When the next expiry notice falls due.
    fn next_notice_at(&self) -> Option<Timestamp> {
        if self.revoked_at.is_some() {
            return None;
        }
        let at = self.expires_at?;
        match self.notified_stage() {
            None => Some(at - TimeDelta::hours(24)),
            Some(ExpiryStage::Within24h) => Some(at - TimeDelta::hours(1)),
            Some(ExpiryStage::Within1h) => Some(at),
            Some(ExpiryStage::Expired) => None,
        }
    }

    /// When a run should first look whether this key has gone quiet in its grace: an hour
    /// after its rotation, while its grace lasts, unless it was revoked or found quiet already.
    /// (A key rotated before keyward recorded rotation times is not watched.)
    fn grace_watch_at(&self) -> Option<Timestamp> {
        if self.revoked_at.is_some()
            || self.grace_idle_at.is_some()
            || self.rotated_to.is_none()
            || self.notified_stage() == Some(ExpiryStage::Expired)
        {
            return None;
        }
        let at = self.rotated_at? + GRACE_IDLE_AFTER;
        (at < self.expires_at?).then_some(at)
    }

    /// The earliest time a scheduled run has something to do with this key. Stores index keys
    /// by it, so that a run finds its work with one query and never scans.
    pub fn next_due_at(&self) -> Option<Timestamp> {
        self.next_due_watching(self.grace_watch_at())
    }

    /// [`Key::next_due_at`] after a run looked at the key's grace and found it not yet quiet:
    /// the watch moves to `watch`, unless the grace ends first, and everything else stays.
    /// A store moves the key in its index to this, without a change to the key.
    pub fn next_due_after_watch(&self, watch: Timestamp) -> Option<Timestamp> {
        let watch = self
            .grace_watch_at()
            .map(|_| watch)
            .filter(|at| self.expires_at.is_some_and(|e| *at < e));
        self.next_due_watching(watch)
    }

    fn next_due_watching(&self, watch: Option<Timestamp>) -> Option<Timestamp> {
        let delivery = self.delivery_pending().then_some(self.created_at);
        let work = [delivery, self.rotation_due_at()]
            .into_iter()
            .flatten()
            .min()
            .map(|at| self.delivery_failures.map_or(at, |f| at.max(f.retry_at)));
        [work, self.next_notice_at(), watch]
            .into_iter()
            .flatten()
            .min()
    }

    /// What a scheduled run should do with this key at `now`, if anything. An expiry notice
    /// comes first and never waits on failed deliveries: a key whose rotation keeps failing is
    /// the key whose owners most need to hear that it is about to expire. The rotation
    /// follows at the next run.
    pub fn due(&self, now: Timestamp) -> Option<Due> {
        if let Some(stage) = self.notice_due(now) {
            return Some(Due::Notice(stage));
        }
        if self.delivery_failures.is_some_and(|f| now < f.retry_at) {
            return None;
        }
        if self.delivery_pending() {
            return Some(Due::Delivery);
        }
        let rotation = self.rotation_due_at().is_some_and(|at| at <= now);
        if rotation && self.status(now) == Status::Active {
            return Some(Due::Rotation);
        }
        let watch = self.grace_watch_at().is_some_and(|at| at <= now);
        (watch && self.status(now) == Status::InGrace).then_some(Due::GraceWatch)
    }

    /// The expiry notice that is due at `now` and not yet recorded.
    fn notice_due(&self, now: Timestamp) -> Option<ExpiryStage> {
        if self.revoked_at.is_some() {
            return None;
        }
        let stage = ExpiryStage::at(self.expires_at?, now)?;
        (self.notified_stage() < Some(stage)).then_some(stage)
    }
}

/// Rotates a key whose policy says it is due, with the policy's grace. The new key carries a
/// pending delivery of its secret to the policy's secret until [`secret_delivered`] clears it.
/// A key without a policy cannot be rotated by the schedule.
pub fn scheduled_rotation(
    key: &Key,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Result<Rotated, LifecycleError> {
    let policy: &RotationPolicy = key
        .rotation_policy
        .as_ref()
        .ok_or(LifecycleError::NoRotationPolicy)?;
    rotate(key, policy.grace_period, actor, mint, now)
}

/// Records that a key's secret is now the current version of its secret: the key as it is
/// then, and the change. Nothing, if no delivery was pending.
pub fn secret_delivered(
    key: &Key,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Option<(Key, Change)> {
    let pending = key.pending_delivery.clone()?;
    let (delivered, write) = update(Key {
        pending_delivery: None,
        delivery_failures: None,
        ..key.clone()
    });
    let event = Event::SecretDelivered {
        secret_id: pending.secret_id,
        version_id: pending.version_id,
    };
    Some((delivered, key_change(key, write, actor, event, mint, now)))
}

/// Records that delivering `key`'s secret to `secret_id` failed at `now` (the secret could
/// not be written or made current), and puts off the key's next attempt.
pub fn delivery_failed(
    key: &Key,
    secret_id: &str,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> Change {
    let failures = DeliveryFailures::after(key.delivery_failures, now);
    let (_, write) = update(Key {
        delivery_failures: Some(failures),
        ..key.clone()
    });
    let event = Event::SecretDeliveryFailed {
        secret_id: secret_id.to_owned(),
        failures: failures.count,
        retry_at: failures.retry_at,
    };
    key_change(key, write, actor, event, mint, now)
}

/// The change that records the expiry notice due at `now`: `key.expiring` within 24 hours and
/// again within an hour, then `key.expired`. Nothing is due for a revoked key, or for a notice
/// already recorded. The change requires the key's version and records the stage on the key,
/// so each notice is recorded once, whoever sees it first. Like every entry, its id comes
/// from the time it is written, so an expiry recorded hours late still sorts after every
/// entry a consumer has already read.
pub fn expiry_notice(key: &Key, actor: Actor, mint: &Mint, now: Timestamp) -> Option<Change> {
    let stage = key.notice_due(now)?;
    let expires_at = key.expires_at?;
    let event = match stage {
        ExpiryStage::Expired => Event::Expired { expires_at },
        within => Event::Expiring { expires_at, within },
    };
    let (_, write) = update(Key {
        expiry_notice: Some(ExpiryNotice { expires_at, stage }),
        ..key.clone()
    });
    Some(key_change(key, write, actor, event, mint, now))
}

/// What a run makes of a key whose grace is due to be looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraceWatch {
    /// No presentation of the key is recorded for an hour while its successor's use is:
    /// record `key.grace_idle`.
    Idle(Box<Change>),
    /// Not yet: look again then.
    NotYet(Timestamp),
}

/// What the store has recorded of one key's use, as a run reads it to watch a grace: its last
/// use, and its hourly counts from the hour an hour before now on. The hours are read strongly
/// consistent from the hour items that every usage write adds to; the last use may lag them
/// (on DynamoDB the table's stream carries it), so both must say quiet for a key to be quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Its last use.
    pub last: LastUse,
    /// Its hourly counts, oldest first, from [`Seen::since`] on.
    pub hours: Vec<HourlyUsage>,
}

impl Seen {
    /// The first hour a run reads at `now`: the one an hour before now falls in, so that the
    /// hours cover at least the last hour.
    pub fn since(now: Timestamp) -> Timestamp {
        hour_of(now - GRACE_IDLE_AFTER)
    }

    /// The latest of those hours with a check that `counts`.
    fn latest(&self, now: Timestamp, counts: impl Fn(&HourlyUsage) -> bool) -> Option<Timestamp> {
        self.hours
            .iter()
            .filter(|h| h.hour >= Self::since(now) && counts(h))
            .map(|h| h.hour)
            .max()
    }
}

/// Whether `key`, in its grace, has gone quiet: no presentation of it (accepted or refused) is
/// recorded for [`GRACE_IDLE_AFTER`], in its hours or its last use, while its successor's use
/// is recorded within it. Hours count whole, so a key is quiet an hour to two after its last
/// recorded presentation. If so, the change that records `key.grace_idle` once; if not, when
/// to look again: when its latest recorded presentation has left the hours read (two hours
/// after the start of its hour) and its last use is an hour old, or, if it is quiet already and
/// only its successor is not used yet, after [`GRACE_WATCH_EVERY`]; never sooner than a
/// minute, the resolution of last use.
pub fn watch_grace(
    key: &Key,
    own: &Seen,
    successor: &Seen,
    actor: Actor,
    mint: &Mint,
    now: Timestamp,
) -> GraceWatch {
    let presented = own.last.last_presented_at();
    let presented_hour = own.latest(now, |h| h.accepted + h.refused > 0);
    let quiet = presented_hour.is_none() && presented.is_none_or(|at| now - at >= GRACE_IDLE_AFTER);
    let used_hour = successor.latest(now, |h| h.accepted > 0);
    let used_last = successor
        .last
        .last_used_at
        .filter(|at| now - *at < GRACE_IDLE_AFTER);
    let used = used_last.max(used_hour);
    match (quiet, used, &key.rotated_to) {
        (true, Some(used), Some(new_key_id)) => {
            let (recorded, write) = update(Key {
                grace_idle_at: Some(now),
                ..key.clone()
            });
            let event = Event::GraceIdle {
                new_key_id: new_key_id.clone(),
                last_presented_at: presented,
                successor_last_used_at: used,
                expires_at: recorded.expires_at,
            };
            GraceWatch::Idle(Box::new(key_change(key, write, actor, event, mint, now)))
        }
        _ => {
            let quiet_at = [
                presented_hour.map(|h| h + TimeDelta::hours(2)),
                presented.map(|at| at + GRACE_IDLE_AFTER),
            ]
            .into_iter()
            .flatten()
            .max()
            .filter(|at| *at > now);
            let next = quiet_at.unwrap_or(now + GRACE_WATCH_EVERY);
            GraceWatch::NotYet(next.max(now + TimeDelta::minutes(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mint::test_mint;
    use crate::{FIRST_RETRY_WAIT, RETRY_SLACK};
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::{
        Action, EnvName, GracePeriod, KeyName, KeyWrite, Kind, NewKey, Scopes, change_grace_period,
        create_key, revoke,
    };

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    fn schedule() -> Actor {
        Actor::schedule("arn:aws:events:us-east-1:123456789012:rule/keyward-rotation")
    }

    fn policy(every: &str, grace: &str) -> RotationPolicy {
        RotationPolicy::from_json(
            &json!({"every": every, "grace_period": grace, "secret_id": "keyward/billing"}),
        )
        .unwrap()
    }

    fn key(rotation_policy: Option<RotationPolicy>, expires_at: Option<Timestamp>) -> Key {
        let input = NewKey {
            name: KeyName::parse("billing").unwrap(),
            kind: Kind::Secret,
            scopes: Scopes::parse(&["orders:read"]).unwrap(),
            expires_at,
            rotation_policy,
            allowed_ips: Default::default(),
        };
        create_key(
            &EnvName::parse("production").unwrap(),
            input,
            Actor::operator("alice"),
            test_mint(),
            t0(),
        )
        .unwrap()
        .key
    }

    /// Applies a change's update of `key` and returns the key as stored afterwards.
    fn applied(change: &Change) -> Key {
        match &change.keys[..] {
            [KeyWrite::Update { key, .. }] => key.clone(),
            other => panic!("expected one update, got {other:?}"),
        }
    }

    #[test]
    fn a_key_is_due_for_rotation_its_interval_after_it_was_made() {
        let k = key(Some(policy("P30D", "24h")), None);
        let due = t0() + TimeDelta::days(30);
        assert_eq!(k.rotation_due_at(), Some(due));
        assert_eq!(k.next_due_at(), Some(due));
        assert_eq!(k.due(due - TimeDelta::seconds(1)), None);
        assert_eq!(k.due(due), Some(Due::Rotation));
        assert_eq!(key(None, None).next_due_at(), None);
        let expires_first = key(
            Some(policy("P30D", "24h")),
            Some(t0() + TimeDelta::days(10)),
        );
        assert_eq!(expires_first.rotation_due_at(), None);
        assert_eq!(
            expires_first.next_due_at(),
            Some(t0() + TimeDelta::days(10) - TimeDelta::hours(24)),
            "its expiry notices are still due"
        );
    }

    #[test]
    fn a_scheduled_rotation_uses_the_policy_grace_and_leaves_the_delivery_pending() {
        let k = key(Some(policy("P30D", "3d")), None);
        let now = t0() + TimeDelta::days(30);
        let r = scheduled_rotation(&k, schedule(), test_mint(), now).unwrap();
        assert_eq!(r.previous.expires_at, Some(now + TimeDelta::days(3)));
        assert_eq!(r.key.rotation_policy, k.rotation_policy);
        assert_eq!(r.change.activity.actor, schedule());
        let pending = r.key.pending_delivery.clone().unwrap();
        assert_eq!(pending.secret_id, "keyward/billing");
        assert_eq!(pending.version_id, format!("keyward-{}", r.key.id));
        assert!((32..=64).contains(&pending.version_id.len()));
        assert_eq!(r.change.keys[0], KeyWrite::Insert(r.key.clone()));
        assert_eq!(r.key.due(now), Some(Due::Delivery));
        assert_eq!(r.key.next_due_at(), Some(now));
        assert_eq!(r.previous.due(now), None);

        let (shown, delivered) = secret_delivered(&r.key, schedule(), test_mint(), now).unwrap();
        assert_eq!(delivered.activity.event.action(), Action::SecretDelivered);
        let stored = applied(&delivered);
        assert_eq!(shown, stored);
        assert_eq!(stored.pending_delivery, None);
        assert_eq!(stored.version, r.key.version + 1);
        assert_eq!(stored.next_due_at(), Some(now + TimeDelta::days(30)));
        assert!(secret_delivered(&stored, schedule(), test_mint(), now).is_none());
        assert_eq!(
            scheduled_rotation(&key(None, None), schedule(), test_mint(), now).unwrap_err(),
            LifecycleError::NoRotationPolicy
        );
    }

    #[test]
    fn a_manual_rotation_of_a_policy_key_delivers_too_and_one_of_a_plain_key_does_not() {
        let now = t0() + TimeDelta::days(3);
        let grace = GracePeriod::parse("now").unwrap();
        let by_hand = crate::rotate(
            &key(Some(policy("P30D", "3d")), None),
            grace,
            Actor::operator("alice"),
            test_mint(),
            now,
        )
        .unwrap();
        let pending = by_hand.key.pending_delivery.clone().unwrap();
        assert_eq!(pending.secret_id, "keyward/billing");
        assert_eq!(by_hand.key.due(now), Some(Due::Delivery));
        assert_eq!(by_hand.previous.expires_at, Some(now), "the caller's grace");
        let plain = crate::rotate(
            &key(None, None),
            grace,
            Actor::operator("a"),
            test_mint(),
            now,
        );
        assert_eq!(plain.unwrap().key.pending_delivery, None);
    }

    #[test]
    fn a_failing_delivery_waits_twice_as_long_each_time_up_to_an_hour() {
        let mut k = key(Some(policy("P1D", "1h")), None);
        let mut now = t0() + TimeDelta::days(1);
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(k.due(now), Some(Due::Rotation), "due again at {now}");
            let change = delivery_failed(&k, "keyward/billing", schedule(), test_mint(), now);
            assert_eq!(change.activity.event.action(), Action::SecretDeliveryFailed);
            k = applied(&change);
            let failures = k.delivery_failures.unwrap();
            assert_eq!(failures.last_failed_at, now);
            waits.push((failures.retry_at - now + RETRY_SLACK).num_minutes());
            assert_eq!(k.next_due_at(), Some(failures.retry_at));
            assert_eq!(k.due(failures.retry_at - TimeDelta::seconds(1)), None);
            now = failures.retry_at;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(k.delivery_failures.unwrap().count, 9);

        let rotated = scheduled_rotation(&k, schedule(), test_mint(), now).unwrap();
        assert_eq!(rotated.previous.delivery_failures, None, "forgotten");
        assert_eq!(rotated.key.delivery_failures, None);
        let failed_delivery = applied(&delivery_failed(
            &rotated.key,
            "s",
            schedule(),
            test_mint(),
            now,
        ));
        assert_eq!(failed_delivery.due(now), None);
        let later = now + FIRST_RETRY_WAIT - RETRY_SLACK;
        assert_eq!(failed_delivery.due(later), Some(Due::Delivery));
        let delivered = applied(
            &secret_delivered(&failed_delivery, schedule(), test_mint(), later)
                .unwrap()
                .1,
        );
        assert_eq!(delivered.delivery_failures, None);
        assert!(
            k.decides_like(&applied(&delivery_failed(
                &k,
                "s",
                schedule(),
                test_mint(),
                now
            ))),
            "a failure is a background write"
        );
    }

    #[test]
    fn a_key_whose_rotation_keeps_failing_still_hears_that_it_expires() {
        let rotation_due = t0() + TimeDelta::days(1);
        let expires_at = rotation_due + TimeDelta::minutes(90);
        let k = key(Some(policy("P1D", "1h")), Some(expires_at));
        assert_eq!(
            k.due(rotation_due),
            Some(Due::Notice(ExpiryStage::Within24h)),
            "the notice first"
        );
        let mut failing =
            applied(&expiry_notice(&k, schedule(), test_mint(), rotation_due).unwrap());
        assert_eq!(failing.due(rotation_due), Some(Due::Rotation));
        for _ in 0..7 {
            failing = applied(&delivery_failed(
                &failing,
                "s",
                schedule(),
                test_mint(),
                rotation_due,
            ));
        }
        let within_1h = expires_at - TimeDelta::hours(1);
        assert!(within_1h < failing.delivery_failures.unwrap().retry_at);
        assert_eq!(failing.next_due_at(), Some(within_1h));
        assert_eq!(
            failing.due(within_1h),
            Some(Due::Notice(ExpiryStage::Within1h)),
            "a notice does not wait for the retry"
        );
    }

    #[test]
    fn a_new_key_revoked_before_its_delivery_is_never_delivered() {
        let k = key(Some(policy("P30D", "3d")), None);
        let now = t0() + TimeDelta::days(30);
        let r = scheduled_rotation(&k, schedule(), test_mint(), now).unwrap();
        let revoked = match revoke(&r.key, Actor::operator("alice"), test_mint(), now).unwrap() {
            crate::Revocation::Revoked { key, .. } => key,
            other => panic!("{other:?}"),
        };
        assert!(revoked.pending_delivery.is_some());
        assert_eq!(revoked.due(now), None);
        assert_eq!(revoked.next_due_at(), None, "it leaves the schedule");
    }

    #[test]
    fn each_expiry_notice_is_due_once_in_order() {
        let expires_at = t0() + TimeDelta::days(3);
        let mut k = key(None, Some(expires_at));
        let mut seen = Vec::new();
        let mut at = t0();
        while at <= expires_at + TimeDelta::hours(2) {
            if k.next_due_at().is_some_and(|due| due <= at) {
                let change =
                    expiry_notice(&k, schedule(), test_mint(), at).expect("due, so a notice");
                seen.push((change.activity.event.action(), at));
                k = applied(&change);
            } else {
                assert!(
                    expiry_notice(&k, schedule(), test_mint(), at).is_none(),
                    "at {at}"
                );
            }
            at += TimeDelta::minutes(10);
        }
        assert_eq!(
            seen,
            vec![
                (Action::Expiring, expires_at - TimeDelta::hours(24)),
                (Action::Expiring, expires_at - TimeDelta::hours(1)),
                (Action::Expired, expires_at),
            ]
        );
        assert_eq!(k.next_due_at(), None, "an expired key leaves the schedule");
    }

    #[test]
    fn a_notice_first_seen_late_skips_the_earlier_stage_and_a_new_expiry_gets_new_notices() {
        let r = crate::rotate(
            &key(None, None),
            GracePeriod::parse("1h").unwrap(),
            Actor::operator("alice"),
            test_mint(),
            t0(),
        )
        .unwrap();
        let change = expiry_notice(&r.previous, schedule(), test_mint(), t0()).unwrap();
        assert_eq!(
            change.activity.event,
            Event::Expiring {
                expires_at: t0() + TimeDelta::hours(1),
                within: ExpiryStage::Within1h
            }
        );
        let notified = applied(&change);
        assert!(expiry_notice(&notified, schedule(), test_mint(), t0()).is_none());
        let later = t0() + TimeDelta::minutes(30);
        let extended = change_grace_period(
            &notified,
            GracePeriod::parse("7d").unwrap(),
            Actor::operator("alice"),
            test_mint(),
            later,
        )
        .unwrap()
        .key;
        assert_eq!(
            extended.next_due_at(),
            Some(t0() + GRACE_IDLE_AFTER),
            "its grace, now longer than an hour, is watched"
        );
        assert_eq!(
            extended.next_due_after_watch(later + TimeDelta::days(7)),
            Some(later + TimeDelta::days(6)),
            "the new expiry's 24h notice"
        );
        let revoked = match revoke(&extended, Actor::operator("alice"), test_mint(), later).unwrap()
        {
            crate::Revocation::Revoked { key, .. } => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(revoked.next_due_at(), None);
        assert!(
            expiry_notice(
                &revoked,
                schedule(),
                test_mint(),
                later + TimeDelta::days(8)
            )
            .is_none()
        );
    }

    #[test]
    fn a_recorded_expiry_is_not_due_again_and_sorts_by_when_it_was_written() {
        let expires_at = t0() + TimeDelta::hours(30);
        let k = key(None, Some(expires_at));
        let later = expires_at + TimeDelta::minutes(5);
        let by_schedule = expiry_notice(&k, schedule(), test_mint(), later).unwrap();
        let by_ttl = expiry_notice(
            &k,
            Actor::system("dynamodb-ttl"),
            test_mint(),
            later + TimeDelta::days(1),
        )
        .unwrap();
        let (recorded, _) = update(Key {
            expiry_notice: Some(ExpiryNotice {
                expires_at,
                stage: ExpiryStage::Expired,
            }),
            ..k.clone()
        });
        assert_eq!(
            expiry_notice(
                &recorded,
                schedule(),
                test_mint(),
                later + TimeDelta::days(2)
            ),
            None,
            "once recorded, nothing is due"
        );
        let entry = &by_schedule.activity;
        assert_eq!(entry.at, later, "the entry is dated when it is written");
        assert_eq!(entry.event, Event::Expired { expires_at });
        assert!(
            by_ttl.activity.id > entry.id,
            "a later write sorts later, even of the same expiry"
        );
    }

    fn minutes(n: i64) -> TimeDelta {
        TimeDelta::minutes(n)
    }

    fn used(at: Option<Timestamp>) -> LastUse {
        LastUse {
            last_used_at: at,
            last_refused_at: None,
        }
    }

    #[test]
    fn a_rotated_key_is_watched_from_an_hour_after_its_rotation_until_its_grace_ends() {
        let old = key(None, None);
        assert_eq!(old.next_due_at(), None);
        let grace = |g: &str| GracePeriod::parse(g).unwrap();
        let rotated = rotate(&old, grace("7d"), Actor::operator("a"), test_mint(), t0()).unwrap();
        let previous = rotated.previous;
        assert_eq!(previous.rotated_at, Some(t0()));
        let watch = t0() + GRACE_IDLE_AFTER;
        assert_eq!(previous.next_due_at(), Some(watch));
        assert_eq!(previous.due(watch - minutes(1)), None);
        assert_eq!(previous.due(watch), Some(Due::GraceWatch));
        assert_eq!(
            previous.next_due_after_watch(watch + minutes(30)),
            Some(watch + minutes(30)),
            "a look that found it busy moves the watch"
        );
        assert_eq!(
            previous.next_due_after_watch(t0() + TimeDelta::days(8)),
            Some(t0() + TimeDelta::days(6)),
            "past the grace, only the expiry notice is left"
        );
        let short = rotate(
            &old,
            grace("PT30M"),
            Actor::operator("a"),
            test_mint(),
            t0(),
        )
        .unwrap();
        assert_eq!(
            short.previous.next_due_at(),
            Some(t0() + minutes(30) - TimeDelta::hours(24)),
            "its grace ends before the watch: only its notices"
        );
        assert_eq!(
            rotated.key.next_due_at(),
            None,
            "the successor is not watched"
        );
    }

    #[test]
    fn a_key_is_idle_when_quiet_for_an_hour_while_its_successor_is_used() {
        let old = key(None, None);
        let rotated = rotate(
            &old,
            GracePeriod::parse("7d").unwrap(),
            Actor::operator("a"),
            test_mint(),
            t0(),
        )
        .unwrap();
        let previous = &rotated.previous;
        let now = t0() + TimeDelta::hours(3);
        // What a run reads: each minute of a last use is also a check in its hour.
        let seen = |last: LastUse| Seen {
            last,
            hours: [(last.last_used_at, (1, 0)), (last.last_refused_at, (0, 1))]
                .into_iter()
                .filter_map(|(at, (accepted, refused))| {
                    at.map(|at| HourlyUsage {
                        hour: hour_of(at),
                        accepted,
                        refused,
                    })
                })
                .collect(),
        };
        let watch = |own: &Seen, theirs: &Seen| {
            watch_grace(previous, own, theirs, schedule(), test_mint(), now)
        };
        let (own, theirs) = (
            seen(used(Some(now - minutes(61)))),
            seen(used(Some(now - minutes(2)))),
        );
        let GraceWatch::Idle(change) = watch(&own, &theirs) else {
            panic!("quiet for an hour while its successor is used")
        };
        assert_eq!(change.activity.event.action(), Action::GraceIdle);
        assert_eq!(change.activity.key_id, previous.id);
        let Event::GraceIdle {
            new_key_id,
            last_presented_at,
            successor_last_used_at,
            expires_at,
        } = &change.activity.event
        else {
            panic!("a key.grace_idle entry")
        };
        assert_eq!(new_key_id, &rotated.key.id);
        assert_eq!(*last_presented_at, Some(now - minutes(61)));
        assert_eq!(*successor_last_used_at, now - minutes(2));
        assert_eq!(*expires_at, previous.expires_at);
        let [
            KeyWrite::Update {
                key: recorded,
                expected_version,
            },
        ] = change.keys.as_slice()
        else {
            panic!("one update of the key")
        };
        assert_eq!(
            (recorded.grace_idle_at, *expected_version),
            (Some(now), previous.version)
        );
        assert_eq!(
            recorded.next_due_at(),
            recorded.expires_at.map(|e| e - TimeDelta::hours(24)),
            "recorded once: no longer watched, only its expiry notices"
        );
        assert!(
            previous.decides_like(recorded),
            "a user's change decided on the key before still holds"
        );

        let recent = seen(used(Some(now - minutes(5))));
        let never = watch(&Seen::default(), &recent);
        assert!(
            matches!(never, GraceWatch::Idle(_)),
            "a key never presented is quiet"
        );
        let refused_lately = LastUse {
            last_used_at: Some(now - TimeDelta::hours(2)),
            last_refused_at: Some(now - minutes(10)),
        };
        assert_eq!(
            watch(&seen(refused_lately), &recent),
            GraceWatch::NotYet(now + minutes(60)),
            "a refused presentation is a service still sending it: looked at again when its hour has left the hours read"
        );
        assert_eq!(
            watch(&seen(used(Some(now - minutes(50)))), &seen(used(Some(now)))),
            GraceWatch::NotYet(now + minutes(60)),
            "a presentation at 14:10 keeps the key busy until 16:00, when its hour is two hours old"
        );
        let lagging = Seen {
            last: used(Some(now - TimeDelta::hours(2))),
            hours: vec![HourlyUsage {
                hour: hour_of(now),
                accepted: 3,
                refused: 0,
            }],
        };
        assert!(
            matches!(watch(&lagging, &recent), GraceWatch::NotYet(_)),
            "a presentation the hours hold and the last use does not yet (the stream behind) counts"
        );
        let two_hours_ago = seen(used(Some(now - TimeDelta::hours(2))));
        assert_eq!(
            watch(&two_hours_ago, &Seen::default()),
            GraceWatch::NotYet(now + minutes(15)),
            "quiet, but its successor is not used yet: looked at again soon"
        );
        assert_eq!(
            watch(&two_hours_ago, &seen(used(Some(now - minutes(90))))),
            GraceWatch::NotYet(now + minutes(15)),
            "nothing uses the successor either: no sign that services switched"
        );
        let last_only = Seen {
            last: used(Some(now - minutes(59) - TimeDelta::seconds(30))),
            hours: Vec::new(),
        };
        assert_eq!(
            watch(&last_only, &recent),
            GraceWatch::NotYet(now + minutes(1)),
            "never sooner than a minute"
        );
    }
}
