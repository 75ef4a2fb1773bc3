//! How long a rotated key stays valid, and how often a key rotates by itself.

use std::fmt;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::names::InputError;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const MAX_DAYS: u64 = 365;
const PRESETS: [(&str, u64); 5] = [
    ("now", 0),
    ("1h", HOUR),
    ("24h", DAY),
    ("3d", 3 * DAY),
    ("7d", 7 * DAY),
];

/// Parses an ISO-8601 duration of weeks, days, hours, minutes and seconds (`P14D`, `PT12H`,
/// `P1DT30M`) into seconds. Years and months are refused because their length varies.
pub fn parse_iso8601_seconds(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "an ISO-8601 duration is like P14D, PT12H or P1DT30M; got {} characters that are not",
            s.chars().count()
        )
    };
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return Err(bad()),
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    if date.is_empty() && time.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    for (part, units) in [
        (date, &[('W', 7 * DAY), ('D', DAY)][..]),
        (time, &[('H', HOUR), ('M', MINUTE), ('S', 1)][..]),
    ] {
        let mut number = String::new();
        let mut last_unit = None;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if part == date && (c == 'Y' || c == 'M') {
                return Err("years and months have no fixed length: give the duration in weeks, days, hours, minutes or seconds".to_owned());
            }
            let position = units.iter().position(|&(u, _)| u == c).ok_or_else(bad)?;
            if number.is_empty() || last_unit.is_some_and(|last| position <= last) {
                return Err(bad());
            }
            last_unit = Some(position);
            let n: u64 = number.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(units[position].1)
                .and_then(|secs| total.checked_add(secs))
                .ok_or_else(|| "the duration is too long".to_owned())?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(bad());
        }
    }
    Ok(total)
}

/// Writes `secs` as a canonical ISO-8601 duration, such as `P14D` or `P1DT30M`.
fn format_iso8601(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / DAY,
        secs % DAY / HOUR,
        secs % HOUR / MINUTE,
        secs % MINUTE,
    );
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if h + m + s > 0 || d == 0 {
        out.push('T');
        for (n, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
            if n > 0 || (unit == 'S' && h + m + s == 0) {
                out.push_str(&format!("{n}{unit}"));
            }
        }
    }
    out
}

/// How long an old key stays valid after rotation: a preset (`now`, `1h`, `24h`, `3d`, `7d`),
/// an ISO-8601 duration or a number of seconds, from zero up to 365 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "String")]
pub struct GracePeriod {
    seconds: u64,
}

impl GracePeriod {
    /// No grace at all: the old key stops working at once.
    pub const NOW: GracePeriod = GracePeriod { seconds: 0 };

    /// A grace of exactly `seconds`, if it is within 365 days.
    pub fn from_seconds(seconds: u64) -> Result<Self, InputError> {
        if seconds > MAX_DAYS * DAY {
            return Err(InputError::InvalidGracePeriod(
                "a grace period is at most 365 days".to_owned(),
            ));
        }
        Ok(Self { seconds })
    }

    /// Parses a preset name, an ISO-8601 duration or a string of decimal seconds.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if let Some(&(_, secs)) = PRESETS.iter().find(|(name, _)| *name == s) {
            return Ok(Self { seconds: secs });
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let secs = s.parse().unwrap_or(u64::MAX);
            return Self::from_seconds(secs);
        }
        if s.starts_with('P') {
            return parse_iso8601_seconds(s)
                .map_err(InputError::InvalidGracePeriod)
                .and_then(Self::from_seconds);
        }
        Err(InputError::InvalidGracePeriod(
            "grace_period is one of now, 1h, 24h, 3d, 7d, an ISO-8601 duration such as P14D, or a number of seconds".to_owned(),
        ))
    }

    /// Reads a grace period from JSON: a string as in [`GracePeriod::parse`], or a whole number of seconds.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, InputError> {
        match value {
            serde_json::Value::String(s) => Self::parse(s),
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(secs) => Self::from_seconds(secs),
                None => Err(InputError::InvalidGracePeriod(
                    "a grace period in seconds is a whole number from 0 to 31536000".to_owned(),
                )),
            },
            _ => Err(InputError::InvalidGracePeriod(
                "grace_period is a string or a number of seconds".to_owned(),
            )),
        }
    }

    /// The length of the grace.
    pub fn duration(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds as i64)
    }

    /// The length of the grace in seconds.
    pub fn seconds(self) -> u64 {
        self.seconds
    }
}

impl TryFrom<serde_json::Value> for GracePeriod {
    type Error = InputError;
    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        Self::from_json(&v)
    }
}

impl From<GracePeriod> for String {
    fn from(g: GracePeriod) -> Self {
        g.to_string()
    }
}

impl fmt::Display for GracePeriod {
    /// A preset's name where the length is a preset's, otherwise a canonical ISO-8601 duration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match PRESETS.iter().find(|(_, secs)| *secs == self.seconds) {
            Some((name, _)) => f.write_str(name),
            None => f.write_str(&format_iso8601(self.seconds)),
        }
    }
}

/// How often a key with a rotation policy rotates: from 1 day to 365 days, as ISO-8601.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RotationInterval {
    seconds: u64,
}

impl RotationInterval {
    /// Parses an ISO-8601 duration from `P1D` to `P365D`.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let seconds = parse_iso8601_seconds(s).map_err(InputError::InvalidRotationPolicy)?;
        if !(DAY..=MAX_DAYS * DAY).contains(&seconds) {
            return Err(InputError::InvalidRotationPolicy(
                "rotation_policy.every is from P1D to P365D".to_owned(),
            ));
        }
        Ok(Self { seconds })
    }

    /// The length of the interval.
    pub fn duration(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds as i64)
    }
}

impl TryFrom<String> for RotationInterval {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RotationInterval> for String {
    fn from(r: RotationInterval) -> Self {
        format_iso8601(r.seconds)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in any::<String>()) {
            let _ = GracePeriod::parse(&text);
            let _ = RotationInterval::parse(&text);
        }

        #[test]
        fn parsing_text_shaped_like_a_duration_never_panics(text in "P([0-9]{0,25}[WDTHMS]){0,6}") {
            let _ = GracePeriod::parse(&text);
            let _ = RotationInterval::parse(&text);
        }

        #[test]
        fn every_grace_prints_as_text_that_parses_back_to_it(seconds in 0..=MAX_DAYS * DAY) {
            let grace = GracePeriod::from_seconds(seconds).unwrap();
            let printed = grace.to_string();
            prop_assert_eq!(GracePeriod::parse(&printed).unwrap(), grace, "{}", printed);
            prop_assert_eq!(GracePeriod::parse(&seconds.to_string()).unwrap(), grace);
            prop_assert_eq!(GracePeriod::from_json(&json!(seconds)).unwrap(), grace);
        }

        #[test]
        fn a_grace_over_a_year_is_refused_however_it_is_written(
            seconds in MAX_DAYS * DAY + 1..u64::MAX / 2,
        ) {
            prop_assert!(GracePeriod::from_seconds(seconds).is_err());
            prop_assert!(GracePeriod::parse(&seconds.to_string()).is_err());
            let iso = format!("PT{seconds}S");
            prop_assert!(GracePeriod::parse(&iso).is_err());
        }
    }

    #[test]
    fn presets_have_their_lengths_and_names() {
        for (name, secs) in PRESETS {
            let g = GracePeriod::parse(name).unwrap();
            assert_eq!(g.seconds(), secs);
            assert_eq!(g.to_string(), name);
        }
        assert_eq!(GracePeriod::NOW.duration(), TimeDelta::zero());
    }

    #[test]
    fn iso_durations_and_seconds_are_accepted_up_to_a_year() {
        assert_eq!(GracePeriod::parse("P14D").unwrap().seconds(), 14 * DAY);
        assert_eq!(GracePeriod::parse("PT90M").unwrap().seconds(), 90 * MINUTE);
        assert_eq!(
            GracePeriod::parse("P1DT2H3M4S").unwrap().seconds(),
            DAY + 2 * HOUR + 3 * MINUTE + 4
        );
        assert_eq!(GracePeriod::parse("P2W").unwrap().seconds(), 14 * DAY);
        assert_eq!(GracePeriod::parse("P365D").unwrap().seconds(), 365 * DAY);
        assert_eq!(GracePeriod::parse("7200").unwrap().seconds(), 7200);
        assert_eq!(GracePeriod::from_json(&json!(45)).unwrap().seconds(), 45);
        assert_eq!(GracePeriod::from_json(&json!(0)).unwrap(), GracePeriod::NOW);
        assert_eq!(
            GracePeriod::from_json(&json!(31_536_000))
                .unwrap()
                .seconds(),
            365 * DAY
        );
    }

    #[test]
    fn out_of_range_and_malformed_grace_periods_are_refused() {
        for bad in [
            "",
            "2h",
            "forever",
            "P",
            "PT",
            "P366D",
            "P1Y",
            "P1M",
            "P1.5D",
            "PD",
            "P1DT",
            "PT1S1H",
            "p1d",
            "-5",
            "31536001",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(
                    GracePeriod::parse(bad),
                    Err(InputError::InvalidGracePeriod(_))
                ),
                "{bad}"
            );
        }
        for bad in [
            json!(-1),
            json!(1.5),
            json!(31_536_001),
            json!(null),
            json!(true),
            json!(["1h"]),
        ] {
            assert!(GracePeriod::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_lengths_print_as_canonical_iso() {
        assert_eq!(GracePeriod::parse("P14D").unwrap().to_string(), "P14D");
        assert_eq!(GracePeriod::parse("90").unwrap().to_string(), "PT1M30S");
        assert_eq!(
            GracePeriod::parse("P1DT30M").unwrap().to_string(),
            "P1DT30M"
        );
        assert_eq!(GracePeriod::parse("PT48H").unwrap().to_string(), "P2D");
    }

    #[test]
    fn rotation_intervals_are_from_a_day_to_a_year() {
        assert_eq!(
            String::from(RotationInterval::parse("P90D").unwrap()),
            "P90D"
        );
        assert_eq!(
            RotationInterval::parse("PT24H").unwrap().duration(),
            TimeDelta::days(1)
        );
        for bad in ["PT23H", "P366D", "P3M", "90d"] {
            assert!(RotationInterval::parse(bad).is_err(), "{bad}");
        }
    }
}
