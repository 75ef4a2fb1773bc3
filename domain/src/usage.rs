//! Usage: how often a key is presented, counted per hour, and when it was last accepted and
//! last refused, to the minute. A process gathers counts in a [`UsageTally`] per key and adds
//! each tally to the store in one write; the store keeps [`HourlyUsage`] for
//! [`USAGE_RETENTION`] and a [`LastUse`] that only moves forward.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DurationRound, TimeDelta};
use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::names::{EnvName, KeyId};

/// How long hourly counts are kept: the longest preset grace period, so that a rotation's
/// whole grace can be read.
pub const USAGE_RETENTION: TimeDelta = TimeDelta::days(7);

/// How many addresses a key is shown seen from, how many one write brings for an hour, and
/// how many an hour's record holds before it takes no more (a list to build `allowed_ips`
/// from, not a log: a key used from thousands of addresses in an hour keeps the first of
/// them, fewer than twice this many, and its counts are written all the same).
pub const SEEN_LIMIT: usize = 50;

/// The start of the hour that `t` falls in.
pub fn hour_of(t: Timestamp) -> Timestamp {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The start of the minute that `t` falls in: the resolution of [`LastUse`].
pub fn minute_of(t: Timestamp) -> Timestamp {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// The hours that `GET /v1/keys/{key_id}/usage` shows at `now`: the [`USAGE_RETENTION`] up to
/// and including the current hour, oldest first, each with the counts `stored` has for it
/// and zeros for an hour it lacks.
pub fn usage_window(stored: &[HourlyUsage], now: Timestamp) -> Vec<HourlyUsage> {
    let current = hour_of(now);
    let hours = USAGE_RETENTION.num_hours();
    (0..hours)
        .map(|i| current - TimeDelta::hours(hours - 1 - i))
        .map(|hour| {
            stored
                .iter()
                .find(|h| h.hour == hour)
                .copied()
                .unwrap_or(HourlyUsage {
                    hour,
                    accepted: 0,
                    refused: 0,
                })
        })
        .collect()
}

/// An address a key was accepted from, and the latest hour it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeenAddress {
    /// The address, in its canonical form (an IPv4-mapped IPv6 address as IPv4).
    pub address: IpAddr,
    /// The start of the latest hour the key was accepted from it.
    pub last_seen_hour: Timestamp,
}

/// The addresses `GET /v1/keys/{key_id}/usage` shows at `now`, from what the store holds
/// (`(hour, address)` pairs): those of the hours [`usage_window`] shows, each once with its
/// latest hour, newest first, at most [`SEEN_LIMIT`].
pub fn seen_window(stored: &[(Timestamp, IpAddr)], now: Timestamp) -> Vec<SeenAddress> {
    let first = hour_of(now) - USAGE_RETENTION + TimeDelta::hours(1);
    let mut latest: BTreeMap<IpAddr, Timestamp> = BTreeMap::new();
    for (hour, address) in stored.iter().filter(|(hour, _)| *hour >= first) {
        let at = latest.entry(address.to_canonical()).or_insert(*hour);
        *at = (*at).max(*hour);
    }
    let mut seen: Vec<SeenAddress> = latest
        .into_iter()
        .map(|(address, last_seen_hour)| SeenAddress {
            address,
            last_seen_hour,
        })
        .collect();
    seen.sort_by(|a, b| {
        b.last_seen_hour
            .cmp(&a.last_seen_hour)
            .then(a.address.cmp(&b.address))
    });
    seen.truncate(SEEN_LIMIT);
    seen
}

/// The checks of one key in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyUsage {
    /// The start of the hour.
    pub hour: Timestamp,
    /// Checks that let the key through.
    pub accepted: u64,
    /// Checks that refused it: expired, revoked, another environment, a missing scope.
    pub refused: u64,
}

/// When a key was last accepted and last refused, each to the minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUse {
    /// The minute of the latest check that let the key through.
    pub last_used_at: Option<Timestamp>,
    /// The minute of the latest check that refused it.
    pub last_refused_at: Option<Timestamp>,
}

impl LastUse {
    /// The later of each time: what the store keeps, so that a write that arrives late never
    /// moves either time back.
    pub fn merge(self, other: LastUse) -> LastUse {
        LastUse {
            last_used_at: self.last_used_at.max(other.last_used_at),
            last_refused_at: self.last_refused_at.max(other.last_refused_at),
        }
    }

    /// The latest presentation of either kind.
    pub fn last_presented_at(&self) -> Option<Timestamp> {
        self.last_used_at.max(self.last_refused_at)
    }
}

/// The counts of one key gathered since its last write: what one usage write adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTally {
    /// The environment of the key: part of where its usage is kept, so that what may count
    /// one environment's checks cannot write another's.
    pub environment: EnvName,
    /// The key that was presented.
    pub key_id: KeyId,
    /// Accepted and refused checks, by the start of their hour.
    pub hours: BTreeMap<Timestamp, (u64, u64)>,
    /// The latest minutes of each kind among them.
    pub last: LastUse,
    /// The addresses accepted checks came from, by the start of their hour, at most
    /// [`SEEN_LIMIT`] an hour.
    pub seen: BTreeMap<Timestamp, BTreeSet<IpAddr>>,
}

impl UsageTally {
    /// A tally with nothing in it yet.
    pub fn new(environment: EnvName, key_id: KeyId) -> Self {
        Self {
            environment,
            key_id,
            hours: BTreeMap::new(),
            last: LastUse::default(),
            seen: BTreeMap::new(),
        }
    }

    /// Notes that an accepted check at `at` came from `address`, unless its hour already
    /// holds [`SEEN_LIMIT`] other addresses.
    pub fn saw(&mut self, address: IpAddr, at: Timestamp) {
        let addresses = self.seen.entry(hour_of(at)).or_default();
        if addresses.len() < SEEN_LIMIT {
            addresses.insert(address.to_canonical());
        }
    }

    /// Counts one check at `at`.
    pub fn count(&mut self, accepted: bool, at: Timestamp) {
        let counts = self.hours.entry(hour_of(at)).or_default();
        let minute = Some(minute_of(at));
        if accepted {
            counts.0 += 1;
            self.last.last_used_at = self.last.last_used_at.max(minute);
        } else {
            counts.1 += 1;
            self.last.last_refused_at = self.last.last_refused_at.max(minute);
        }
    }

    /// Adds another tally of the same key to this one, as when a write that failed is put back.
    pub fn merge(&mut self, other: UsageTally) {
        for (hour, (accepted, refused)) in other.hours {
            let counts = self.hours.entry(hour).or_default();
            counts.0 += accepted;
            counts.1 += refused;
        }
        self.last = self.last.merge(other.last);
        for (hour, addresses) in other.seen {
            for address in addresses {
                self.saw(address, hour);
            }
        }
    }

    /// How many checks the tally holds.
    pub fn checks(&self) -> u64 {
        self.hours.values().map(|(a, r)| a + r).sum()
    }

    /// The tally as one tally per hour, each with the latest minutes and the addresses that
    /// fall in its hour, so that each is one write that is made whole or not at all.
    pub fn by_hour(mut self) -> Vec<UsageTally> {
        let in_hour = |at: Option<Timestamp>, hour: Timestamp| at.filter(|t| hour_of(*t) == hour);
        let hours = std::mem::take(&mut self.hours);
        hours
            .into_iter()
            .map(|(hour, counts)| UsageTally {
                environment: self.environment.clone(),
                key_id: self.key_id.clone(),
                hours: BTreeMap::from([(hour, counts)]),
                last: LastUse {
                    last_used_at: in_hour(self.last.last_used_at, hour),
                    last_refused_at: in_hour(self.last.last_refused_at, hour),
                },
                seen: self
                    .seen
                    .remove(&hour)
                    .map(|addresses| BTreeMap::from([(hour, addresses)]))
                    .unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_tally_counts_by_hour_and_keeps_the_latest_minute_of_each_kind() {
        let mut tally = UsageTally::new(
            EnvName::parse("production").unwrap(),
            KeyId::parse("key_0123456789abcdefghijkl").unwrap(),
        );
        tally.count(true, at("2026-11-29T10:59:59.900Z"));
        tally.count(true, at("2026-11-29T10:15:00Z"));
        tally.count(false, at("2026-11-29T11:00:01Z"));
        assert_eq!(tally.hours.len(), 2);
        assert_eq!(tally.hours[&at("2026-11-29T10:00:00Z")], (2, 0));
        assert_eq!(tally.hours[&at("2026-11-29T11:00:00Z")], (0, 1));
        assert_eq!(tally.last.last_used_at, Some(at("2026-11-29T10:59:00Z")));
        assert_eq!(tally.last.last_refused_at, Some(at("2026-11-29T11:00:00Z")));
        assert_eq!(tally.checks(), 3);

        let mut later = UsageTally::new(tally.environment.clone(), tally.key_id.clone());
        later.count(true, at("2026-11-29T10:01:00Z"));
        tally.merge(later);
        assert_eq!(tally.hours[&at("2026-11-29T10:00:00Z")], (3, 0));
        assert_eq!(
            tally.last.last_used_at,
            Some(at("2026-11-29T10:59:00Z")),
            "an earlier minute merged in never moves the time back"
        );
    }

    #[test]
    fn the_window_is_a_week_of_hours_ending_with_the_current_one_with_zeros_between() {
        let now = at("2026-11-29T10:42:00Z");
        let stored = [
            HourlyUsage {
                hour: at("2026-11-22T10:00:00Z"),
                accepted: 9,
                refused: 9,
            },
            HourlyUsage {
                hour: at("2026-11-22T11:00:00Z"),
                accepted: 1,
                refused: 0,
            },
            HourlyUsage {
                hour: at("2026-11-29T10:00:00Z"),
                accepted: 5,
                refused: 2,
            },
        ];
        let window = usage_window(&stored, now);
        assert_eq!(window.len(), 168);
        assert_eq!(
            window[0], stored[1],
            "the hour a week ago is out, the next one in"
        );
        assert_eq!(window[167], stored[2]);
        assert!(
            window
                .windows(2)
                .all(|w| w[1].hour - w[0].hour == TimeDelta::hours(1))
        );
        assert_eq!(window.iter().map(|h| h.accepted).sum::<u64>(), 6);
    }

    #[test]
    fn a_tally_splits_into_one_per_hour_and_adds_up_to_itself() {
        let mut tally = UsageTally::new(
            EnvName::parse("production").unwrap(),
            KeyId::parse("key_0123456789abcdefghijkl").unwrap(),
        );
        tally.count(true, at("2026-11-29T10:59:00Z"));
        tally.count(false, at("2026-11-29T10:10:00Z"));
        tally.count(true, at("2026-11-29T12:01:00Z"));
        let parts = tally.clone().by_hour();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].last.last_used_at, None,
            "the latest use is in the later hour"
        );
        assert_eq!(
            parts[0].last.last_refused_at,
            Some(at("2026-11-29T10:10:00Z"))
        );
        assert_eq!(parts[1].last.last_used_at, Some(at("2026-11-29T12:01:00Z")));
        let mut whole = UsageTally::new(tally.environment.clone(), tally.key_id.clone());
        for part in parts {
            assert_eq!(part.hours.len(), 1);
            whole.merge(part);
        }
        assert_eq!(whole.hours, tally.hours);
        assert_eq!(whole.last, tally.last);
    }

    #[test]
    fn a_tally_notes_at_most_fifty_addresses_an_hour_and_keeps_them_through_merge_and_split() {
        let mut tally = UsageTally::new(
            EnvName::parse("production").unwrap(),
            KeyId::parse("key_0123456789abcdefghijkl").unwrap(),
        );
        let ten = at("2026-11-29T10:05:00Z");
        let eleven = at("2026-11-29T11:05:00Z");
        for i in 0..60u8 {
            tally.count(true, ten);
            tally.saw(IpAddr::from([198, 51, 100, i]), ten);
        }
        tally.count(true, ten);
        tally.saw("::ffff:198.51.100.1".parse().unwrap(), ten);
        tally.count(true, eleven);
        tally.saw("2001:db8::7".parse().unwrap(), eleven);
        let hour = |t| tally.seen[&hour_of(t)].clone();
        assert_eq!(hour(ten).len(), SEEN_LIMIT, "the first fifty of the hour");
        assert!(
            hour(ten).contains(&IpAddr::from([198, 51, 100, 1])),
            "a mapped address is its IPv4 form, kept once"
        );
        assert!(!hour(ten).contains(&IpAddr::from([198, 51, 100, 55])));
        let mut more = UsageTally::new(tally.environment.clone(), tally.key_id.clone());
        more.count(true, ten);
        more.saw(IpAddr::from([203, 0, 113, 9]), ten);
        tally.merge(more);
        assert_eq!(
            tally.seen[&hour_of(ten)].len(),
            SEEN_LIMIT,
            "a merge keeps the limit"
        );
        let parts = tally.clone().by_hour();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].seen.len(), 1);
        assert_eq!(parts[0].seen[&hour_of(ten)].len(), SEEN_LIMIT);
        assert_eq!(
            parts[1].seen[&hour_of(eleven)],
            BTreeSet::from(["2001:db8::7".parse::<IpAddr>().unwrap()])
        );
    }

    #[test]
    fn the_seen_window_is_each_address_once_at_its_latest_hour_newest_first() {
        let now = at("2026-11-29T10:42:00Z");
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let c: IpAddr = "203.0.113.9".parse().unwrap();
        let stored = [
            (at("2026-11-29T08:00:00Z"), a),
            (at("2026-11-29T10:00:00Z"), a),
            (at("2026-11-28T10:00:00Z"), b),
            (at("2026-11-22T10:00:00Z"), c),
            (
                at("2026-11-29T10:00:00Z"),
                "::ffff:203.0.113.10".parse().unwrap(),
            ),
        ];
        let seen = seen_window(&stored, now);
        assert_eq!(
            seen,
            [
                SeenAddress {
                    address: a,
                    last_seen_hour: at("2026-11-29T10:00:00Z")
                },
                SeenAddress {
                    address: "203.0.113.10".parse().unwrap(),
                    last_seen_hour: at("2026-11-29T10:00:00Z")
                },
                SeenAddress {
                    address: b,
                    last_seen_hour: at("2026-11-28T10:00:00Z")
                },
            ],
            "the hour a week ago is out, as in the usage window"
        );
        let many: Vec<(Timestamp, IpAddr)> = (0..80u8)
            .map(|i| (at("2026-11-29T09:00:00Z"), IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(seen_window(&many, now).len(), SEEN_LIMIT);
        assert_eq!(
            serde_json::to_value(seen[2]).unwrap(),
            serde_json::json!({"address": "2001:db8::7", "last_seen_hour": "2026-11-28T10:00:00Z"})
        );
    }

    #[test]
    fn last_use_merges_to_the_later_of_each_time() {
        let a = LastUse {
            last_used_at: Some(at("2026-11-29T10:00:00Z")),
            last_refused_at: None,
        };
        let b = LastUse {
            last_used_at: Some(at("2026-11-29T09:00:00Z")),
            last_refused_at: Some(at("2026-11-29T08:00:00Z")),
        };
        let merged = a.merge(b);
        assert_eq!(merged, b.merge(a));
        assert_eq!(merged.last_used_at, a.last_used_at);
        assert_eq!(merged.last_refused_at, b.last_refused_at);
        assert_eq!(merged.last_presented_at(), a.last_used_at);
    }
}
