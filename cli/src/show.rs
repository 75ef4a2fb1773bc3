//! How the client shows the API's answers to a person: aligned tables and field lists, with
//! every time both as a UTC timestamp and relative to now ("in 23h", "3m ago").

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A time from the API as `2026-11-28 15:20:03 UTC (in 23h)`, or `-` when it is absent.
pub fn when(value: &Value, now: DateTime<Utc>) -> String {
    let Some(text) = value.as_str() else {
        return "-".to_owned();
    };
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => {
            let at = at.with_timezone(&Utc);
            format!(
                "{} ({})",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                relative(at, now)
            )
        }
        Err(_) => clean(text),
    }
}

/// How far `at` is from `now`, rounded to its largest unit: `in 24h`, `3m ago`, `now`.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (at - now).num_seconds();
    let span = seconds.unsigned_abs();
    let rounded = |unit: u64| (span + unit / 2) / unit;
    let amount = if span == 0 {
        return "now".to_owned();
    } else if span < 60 {
        format!("{span}s")
    } else if rounded(60) < 60 {
        format!("{}m", rounded(60))
    } else if rounded(3_600) < 48 {
        format!("{}h", rounded(3_600))
    } else {
        format!("{}d", rounded(86_400))
    };
    if seconds > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A string from the API with any control character replaced, so that nothing it holds can
/// move the terminal's cursor or change its colours, and any invisible format character
/// (a bidi control, a zero-width space) shown escaped, so that a name stored before such
/// names were refused cannot read as something else.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                "?".to_owned()
            } else if keyward::domain::is_format_character(c) {
                format!("\\u{{{:04x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A field as text: strings as they are, `null` as `-`, lists joined by commas.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => clean(s),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => clean(&other.to_string()),
    }
}

/// An expiry: `never` when there is none.
fn expiry(value: &Value, now: DateTime<Utc>) -> String {
    if value.is_null() {
        "never".to_owned()
    } else {
        when(value, now)
    }
}

/// A key's status, with the time left for a key in its grace.
fn status(key: &Value, now: DateTime<Utc>) -> String {
    match key["status"].as_str() {
        Some("in_grace") => match key["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(at) => format!("in grace, ends {}", relative(at.with_timezone(&Utc), now)),
            None => "in grace".to_owned(),
        },
        Some(other) => clean(other),
        None => "-".to_owned(),
    }
}

/// A last use, kept to the minute: the minute, and how long ago it was (`this minute`), or
/// `never`.
fn last(value: &Value, now: DateTime<Utc>) -> String {
    match minute(value) {
        Some(at) => format!("{} ({})", at.format("%Y-%m-%d %H:%M UTC"), ago(at, now)),
        None => "never".to_owned(),
    }
}

/// A last use in a column: how long ago, or `never`.
fn last_short(value: &Value, now: DateTime<Utc>) -> String {
    minute(value).map_or_else(|| "never".to_owned(), |at| ago(at, now))
}

fn minute(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How long ago a minute was: `this minute` while it lasts, else as [`relative`] says.
fn ago(minute: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if now - minute < chrono::TimeDelta::minutes(1) {
        "this minute".to_owned()
    } else {
        relative(minute, now)
    }
}

/// A key's allowed networks, comma-separated, or `any address` for none.
fn allowed_ips(value: &Value) -> String {
    match value.as_array() {
        Some(networks) if !networks.is_empty() => text(value),
        _ => "any address".to_owned(),
    }
}

/// The addresses a key's accepted checks came from this week, each with its latest hour.
fn seen_from(seen: &[Value]) -> String {
    if seen.is_empty() {
        return "no accepted check this week came with an address".to_owned();
    }
    seen.iter()
        .map(|s| match minute(&s["last_seen_hour"]) {
            Some(hour) => format!(
                "{} (last in {}-{} UTC)",
                text(&s["address"]),
                hour.format("%Y-%m-%d %H:00"),
                (hour + chrono::TimeDelta::hours(1)).format("%H:00")
            ),
            None => text(&s["address"]),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rotation policy in words, or `-`.
fn policy(value: &Value) -> String {
    if value.is_null() {
        return "-".to_owned();
    }
    format!(
        "every {}, grace {}, to {}",
        text(&value["every"]),
        text(&value["grace_period"]),
        text(&value["secret_id"])
    )
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Labelled lines, the labels aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

/// The columns of a list of keys.
pub const KEY_COLUMNS: [&str; 11] = [
    "ID",
    "NAME",
    "KIND",
    "STATUS",
    "LAST USED",
    "SCOPES",
    "HINT",
    "DEFAULT",
    "CREATED",
    "EXPIRES",
    "POLICY",
];

/// One key as a row under [`KEY_COLUMNS`].
pub fn key_row(key: &Value, now: DateTime<Utc>) -> Vec<String> {
    vec![
        text(&key["id"]),
        text(&key["name"]),
        text(&key["kind"]),
        status(key, now),
        last_short(&key["last_used_at"], now),
        text(&key["scopes"]),
        text(&key["hint"]),
        if key["default"] == Value::Bool(true) {
            "yes".to_owned()
        } else {
            String::new()
        },
        when(&key["created_at"], now),
        expiry(&key["expires_at"], now),
        match &key["rotation_policy"] {
            Value::Null => "-".to_owned(),
            p => format!("every {}", text(&p["every"])),
        },
    ]
}

/// One key, every field on its own line.
pub fn key(key: &Value, now: DateTime<Utc>) -> String {
    let mut pairs = vec![
        ("id", text(&key["id"])),
        ("name", text(&key["name"])),
        ("environment", text(&key["environment"])),
        ("kind", text(&key["kind"])),
        ("status", status(key, now)),
        ("last used", last(&key["last_used_at"], now)),
        ("last refused", last(&key["last_refused_at"], now)),
        ("scopes", text(&key["scopes"])),
        ("hint", text(&key["hint"])),
        (
            "default",
            if key["default"] == Value::Bool(true) {
                "yes, it must be rotated before it can be revoked".to_owned()
            } else {
                "no".to_owned()
            },
        ),
        ("created", when(&key["created_at"], now)),
        ("expires", expiry(&key["expires_at"], now)),
        ("revoked", when(&key["revoked_at"], now)),
        ("leaked", leaked(key, now)),
        ("rotated from", text(&key["rotated_from"])),
        ("rotated to", text(&key["rotated_to"])),
        ("rotation policy", policy(&key["rotation_policy"])),
        ("allowed IPs", allowed_ips(&key["allowed_ips"])),
    ];
    match &key["seen_ips"] {
        Value::Array(seen) => pairs.push(("seen from", seen_from(seen))),
        Value::String(why) => pairs.push(("seen from", clean(why))),
        _ => {}
    }
    if let Some(pending) = key["pending_delivery"].as_object() {
        pairs.push((
            "pending delivery",
            format!(
                "{} version {}",
                text(&pending["secret_id"]),
                text(&pending["version_id"])
            ),
        ));
    }
    if key["delivery_failures"].is_object() {
        let failures = &key["delivery_failures"];
        pairs.push((
            "delivery failures",
            format!(
                "{} in a row, the last {}, retried {}",
                text(&failures["count"]),
                when(&failures["last_failed_at"], now),
                when(&failures["retry_at"], now)
            ),
        ));
    }
    fields(&pairs)
}

/// One key's usage beside its successor's, if it has one: a line for each key (its id, name,
/// status and last use), then the last `hours` hours, oldest first, with both keys' accepted
/// and refused checks; and, when the key has gone quiet for an hour while its successor has
/// not, the command that cuts its grace.
pub fn usage(
    key: &Value,
    hours: &Value,
    successor: Option<(&Value, &Value)>,
    shown: usize,
    now: DateTime<Utc>,
) -> String {
    let about = |key: &Value, role: &str| {
        vec![
            role.to_owned(),
            text(&key["id"]),
            text(&key["name"]),
            status(key, now),
            last(&key["last_used_at"], now),
            last(&key["last_refused_at"], now),
        ]
    };
    let mut keys = vec![about(key, "key")];
    if let Some((next, _)) = successor {
        keys.push(about(next, "successor"));
    }
    let columns = ["", "ID", "NAME", "STATUS", "LAST USED", "LAST REFUSED"];
    let mut out = table(&columns, &keys);
    out.push('\n');
    let list = |hours: &Value| hours["hours"].as_array().cloned().unwrap_or_default();
    let own = list(hours);
    let theirs = successor.map(|(_, h)| list(h)).unwrap_or_default();
    let count =
        |h: Option<&Value>, field: &str| h.and_then(|h| h[field].as_u64()).unwrap_or(0).to_string();
    let start = own.len().saturating_sub(shown);
    let rows: Vec<Vec<String>> = own[start..]
        .iter()
        .map(|hour| {
            let at = hour["hour"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or_else(
                    || text(&hour["hour"]),
                    |t| t.format("%Y-%m-%d %H:00").to_string(),
                );
            let mut row = vec![
                at,
                count(Some(hour), "accepted"),
                count(Some(hour), "refused"),
            ];
            if successor.is_some() {
                let same = theirs.iter().find(|t| t["hour"] == hour["hour"]);
                row.push(count(same, "accepted"));
                row.push(count(same, "refused"));
            }
            row
        })
        .collect();
    let header: &[&str] = if successor.is_some() {
        &[
            "HOUR (UTC)",
            "ACCEPTED",
            "REFUSED",
            "SUCCESSOR ACCEPTED",
            "SUCCESSOR REFUSED",
        ]
    } else {
        &["HOUR (UTC)", "ACCEPTED", "REFUSED"]
    };
    out.push_str(&table(header, &rows));
    if let Some((next, _)) = successor {
        let time = |v: &Value| {
            v.as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let presented = time(&key["last_used_at"]).max(time(&key["last_refused_at"]));
        let quiet = presented.is_none_or(|at| now - at >= chrono::TimeDelta::hours(1));
        let taken_over =
            time(&next["last_used_at"]).is_some_and(|at| now - at < chrono::TimeDelta::hours(1));
        if key["status"] == "in_grace" && quiet && taken_over {
            out.push_str(&format!(
                "\n{} has no presentation recorded for an hour while its successor has (a service that calls less than hourly, or behind a cached authorizer, would not show): its grace can be cut with\n  keyward keys grace {} --grace now\n",
                text(&key["id"]),
                text(&key["id"])
            ));
        }
    }
    out
}

/// The key a rotation replaced, in one line: its id, and until when it keeps working.
pub fn previous(key: &Value, now: DateTime<Utc>) -> String {
    let until = match key["status"].as_str() {
        Some("in_grace") => format!("works until {}", when(&key["expires_at"], now)),
        Some("expired") => format!("expired {}", when(&key["expires_at"], now)),
        _ => status(key, now),
    };
    format!("previous  {}  {until}\n", text(&key["id"]))
}

/// The columns of a list of activity entries.
pub const ACTIVITY_COLUMNS: [&str; 5] = ["AT", "ACTION", "KEY", "ACTOR", "DETAILS"];

/// One activity entry as a row under [`ACTIVITY_COLUMNS`].
pub fn activity_row(entry: &Value, now: DateTime<Utc>) -> Vec<String> {
    let actor = &entry["actor"];
    vec![
        when(&entry["at"], now),
        text(&entry["action"]),
        text(&entry["key_id"]),
        actor_text(actor),
        details(entry, now),
    ]
}

/// Who acted: a person by their name (email) with their subject, anyone else by kind and id.
fn actor_text(actor: &Value) -> String {
    if actor["type"] == "user" && actor["name"].is_string() {
        format!("{} ({})", text(&actor["name"]), text(&actor["id"]))
    } else {
        format!("{} {}", text(&actor["type"]), text(&actor["id"]))
    }
}

/// The widths `--follow` pads each entry's first four cells to, since it cannot know the
/// widest of entries still to come.
const LINE_WIDTHS: [usize; 4] = [36, 26, 30, 38];

/// Cells padded to [`LINE_WIDTHS`], two spaces apart.
fn line(cells: &[String]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = LINE_WIDTHS.get(i).copied().unwrap_or(0);
        out.push_str(&format!("{cell:<width$}  "));
    }
    out.trim_end().to_owned()
}

/// The header above `--follow`'s lines.
pub fn activity_line_header() -> String {
    line(&ACTIVITY_COLUMNS.map(str::to_owned))
}

/// One activity entry as one line under [`activity_line_header`].
pub fn activity_line(entry: &Value, now: DateTime<Utc>) -> String {
    line(&activity_row(entry, now))
}

/// What an entry records beyond its common fields, in words.
fn details(entry: &Value, now: DateTime<Utc>) -> String {
    let at = |field: &str| when(&entry[field], now);
    let field = |name: &str| text(&entry[name]);
    match entry["action"].as_str().unwrap_or("") {
        "key.created" => {
            let held = match entry["allowed_ips"].as_array() {
                Some(networks) if !networks.is_empty() => {
                    format!(", allowed IPs {}", field("allowed_ips"))
                }
                _ => String::new(),
            };
            format!(
                "name {}, kind {}, scopes {}, expires {}{held}",
                field("name"),
                field("kind"),
                field("scopes"),
                expiry(&entry["expires_at"], now)
            )
        }
        "key.rotated" => format!(
            "new key {}, grace {}, old key expires {}",
            field("new_key_id"),
            field("grace_period"),
            at("expires_at")
        ),
        "key.grace_period_changed" => format!(
            "grace {}, expires {}, was {}",
            field("grace_period"),
            at("expires_at"),
            at("previous_expires_at")
        ),
        "key.revoked" => format!("revoked {}", at("revoked_at")),
        "key.expired" => format!("expired {}", at("expires_at")),
        "key.expiring" => format!("expires {}", at("expires_at")),
        "key.rotation_policy_changed" => match &entry["rotation_policy"] {
            Value::Null => "policy cleared".to_owned(),
            p => format!("policy {}", policy(p)),
        },
        "key.allowed_ips_changed" => format!(
            "allowed IPs {}; was {}",
            allowed_ips(&entry["allowed_ips"]),
            allowed_ips(&entry["previous"])
        ),
        "key.secret_delivered" => {
            format!("to {} version {}", field("secret_id"), field("version_id"))
        }
        "key.secret_delivery_failed" => format!(
            "to {}, {} in a row, retried {}",
            field("secret_id"),
            field("failures"),
            at("retry_at")
        ),
        "key.grace_idle" => format!(
            "no presentation recorded since {} while {} was used {}; grace ends {}",
            match &entry["last_presented_at"] {
                Value::Null => "it was made".to_owned(),
                at => last(at, now),
            },
            field("new_key_id"),
            last(&entry["successor_last_used_at"], now),
            expiry(&entry["expires_at"], now)
        ),
        "key.leaked" => {
            let mut shown = "reported leaked".to_owned();
            if !entry["url"].is_null() {
                shown.push_str(&format!(", found at {}", field("url")));
            }
            if !entry["source"].is_null() {
                shown.push_str(&format!(" ({})", field("source")));
            }
            shown.push_str(&format!("; leak policy {}", field("leak_policy")));
            shown
        }
        "environment.leak_policy_changed" => format!(
            "leak policy {}, was {}",
            field("leak_policy"),
            field("previous")
        ),
        _ => "-".to_owned(),
    }
}

/// When a key was reported leaked, and what that did, or `no`.
fn leaked(key: &Value, now: DateTime<Utc>) -> String {
    match (&key["leaked_at"], key["leak_policy"].as_str()) {
        (Value::Null, _) => "no".to_owned(),
        (at, Some("notify")) => format!(
            "{}: reported leaked; its leak policy was notify, so it still works",
            when(at, now)
        ),
        (at, _) => format!(
            "{}: reported leaked, so every check refuses it",
            when(at, now)
        ),
    }
}

/// A verdict of `POST /v1/verify`, one field per line.
pub fn verdict(verdict: &Value, now: DateTime<Utc>) -> String {
    let mut pairs = vec![
        ("valid", text(&verdict["valid"])),
        ("code", text(&verdict["code"])),
    ];
    for (label, name) in [
        ("key id", "key_id"),
        ("environment", "environment"),
        ("scopes", "scopes"),
    ] {
        if !verdict[name].is_null() {
            pairs.push((label, text(&verdict[name])));
        }
    }
    if verdict.get("expires_at").is_some() {
        pairs.push(("expires", expiry(&verdict["expires_at"], now)));
    }
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn a_status_from_the_server_cannot_write_terminal_controls() {
        let now = at("2026-11-28T12:00:00Z");
        let key = json!({"status": "\u{1b}]0;pwned\u{7}"});
        assert_eq!(status(&key, now), "?]0;pwned?");
    }

    #[test]
    fn a_name_stored_with_hidden_characters_is_shown_escaped_in_a_table() {
        let now = at("2026-11-28T12:00:00Z");
        let spoof = "test \u{202e}yek noitcudorp\u{200b}";
        assert_eq!(clean(spoof), "test \\u{202e}yek noitcudorp\\u{200b}");
        assert_eq!(clean("café\u{1b}]0;pwned\u{7}"), "café?]0;pwned?");
        let key = json!({"id": "key_x", "name": spoof, "kind": "secret", "status": "active",
            "scopes": [], "default": false, "created_at": "2026-11-28T11:00:00Z",
            "expires_at": null, "hint": "kw_sk_x...abcd", "rotation_policy": null});
        let row = key_row(&key, now).join(" ");
        assert!(row.contains("test \\u{202e}yek noitcudorp"), "{row}");
        assert!(!row.contains('\u{202e}'), "{row}");
        let fields = self::key(&key, now);
        assert!(!fields.contains('\u{202e}'), "{fields}");
    }

    #[test]
    fn times_are_shown_in_utc_and_in_their_largest_whole_unit() {
        let now = at("2026-11-28T12:00:00Z");
        for (time, shown) in [
            ("2026-11-28T12:00:00Z", "now"),
            ("2026-11-28T12:00:59.900Z", "in 59s"),
            ("2026-11-28T11:57:00Z", "3m ago"),
            ("2026-11-28T12:59:29Z", "in 59m"),
            ("2026-11-28T12:59:31Z", "in 1h"),
            ("2026-11-29T11:29:59Z", "in 23h"),
            ("2026-11-29T11:59:59Z", "in 24h"),
            ("2026-11-30T11:29:59Z", "in 47h"),
            ("2026-11-30T11:59:59Z", "in 2d"),
            ("2026-12-05T12:00:00Z", "in 7d"),
            ("2025-11-28T12:00:00Z", "365d ago"),
        ] {
            assert_eq!(relative(at(time), now), shown, "{time}");
        }
        assert_eq!(
            when(&json!("2026-11-29T11:59:59.250Z"), now),
            "2026-11-29 11:59:59 UTC (in 24h)"
        );
        assert_eq!(when(&Value::Null, now), "-");
    }

    #[test]
    fn tables_align_their_columns_and_keep_no_trailing_space() {
        let rows = vec![
            vec!["key_1".to_owned(), "a much longer name".to_owned()],
            vec!["key_22".to_owned(), "b".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "NAME"], &rows),
            "ID      NAME\nkey_1   a much longer name\nkey_22  b\n"
        );
    }

    #[test]
    fn a_created_entry_names_its_networks_only_when_it_has_some() {
        let now = at("2026-11-28T12:00:00Z");
        let created = json!({"action": "key.created", "name": "runner", "kind": "secret",
            "scopes": ["orders:read"], "expires_at": null});
        assert_eq!(
            details(&created, now),
            "name runner, kind secret, scopes orders:read, expires never"
        );
        let mut held = created.clone();
        held["allowed_ips"] = json!(["198.51.100.0/24", "2001:db8::7"]);
        assert_eq!(
            details(&held, now),
            "name runner, kind secret, scopes orders:read, expires never, allowed IPs 198.51.100.0/24,2001:db8::7"
        );
    }

    #[test]
    fn text_from_the_api_cannot_drive_the_terminal() {
        assert_eq!(text(&json!("a\u{1b}[31mred\u{7}")), "a?[31mred?");
        assert_eq!(text(&json!(["a", "b"])), "a,b");
        assert_eq!(text(&json!([])), "-");
    }

    #[test]
    fn a_person_is_named_by_their_email_and_subject_which_cannot_drive_the_terminal() {
        let person = json!({"type": "user", "id": "00u1", "name": "dana@example.com"});
        assert_eq!(actor_text(&person), "dana@example.com (00u1)");
        let hostile = json!({"type": "user", "id": "x\u{1b}]0", "name": "\u{1b}[2Jdana"});
        assert_eq!(actor_text(&hostile), "?[2Jdana (x?]0)");
        let key = json!({"type": "api_key", "id": "key_0123"});
        assert_eq!(actor_text(&key), "api_key key_0123");
        let nameless = json!({"type": "user", "id": "00u2"});
        assert_eq!(actor_text(&nameless), "user 00u2");
    }

    #[test]
    fn a_key_in_its_grace_says_when_its_grace_ends() {
        let now = at("2026-11-28T12:00:00Z");
        let key = json!({"status": "in_grace", "expires_at": "2026-11-29T12:00:00Z", "default": false,
            "rotation_policy": {"every": "P30D", "grace_period": "24h", "secret_id": "keyward/production/x"}});
        let row = key_row(&key, now);
        assert_eq!(row[3], "in grace, ends in 24h");
        assert_eq!(row[4], "never", "never used");
        assert_eq!(row[10], "every P30D");
        let shown = super::key(&key, now);
        assert!(
            shown.contains("rotation policy  every P30D, grace 24h, to keyward/production/x\n"),
            "{shown}"
        );
        assert!(shown.contains("default          no\n"), "{shown}");
        assert!(shown.contains("allowed IPs      any address\n"), "{shown}");
        let pinned = json!({"allowed_ips": ["198.51.100.0/24", "2001:db8::7"]});
        assert!(
            super::key(&pinned, now).contains("allowed IPs      198.51.100.0/24,2001:db8::7\n"),
            "{}",
            super::key(&pinned, now)
        );
        assert!(
            !shown.contains("seen from"),
            "only keys get reads where a key was seen"
        );
        let seen = json!({"seen_ips": [
            {"address": "198.51.100.7", "last_seen_hour": "2026-11-28T11:00:00Z"},
            {"address": "2001:db8::7\u{1b}", "last_seen_hour": "2026-11-27T23:00:00Z"}]});
        assert!(
            super::key(&seen, now).contains(
                "seen from        198.51.100.7 (last in 2026-11-28 11:00-12:00 UTC), 2001:db8::7? (last in 2026-11-27 23:00-00:00 UTC)\n"
            ),
            "{}",
            super::key(&seen, now)
        );
        assert!(
            super::key(&json!({"seen_ips": []}), now)
                .contains("seen from        no accepted check this week came with an address\n")
        );
        assert!(
            super::key(&json!({"seen_ips": "could not be read: x\u{7}"}), now)
                .contains("seen from        could not be read: x?\n")
        );
        assert_eq!(
            previous(
                &json!({"id": "key_1", "status": "in_grace", "expires_at": "2026-11-28T13:00:00Z"}),
                now
            ),
            "previous  key_1  works until 2026-11-28 13:00:00 UTC (in 1h)\n"
        );
        assert_eq!(
            previous(
                &json!({"id": "key_1", "status": "expired", "expires_at": "2026-11-28T12:00:00Z"}),
                now
            ),
            "previous  key_1  expired 2026-11-28 12:00:00 UTC (now)\n"
        );
    }

    #[test]
    fn usage_shows_a_key_beside_its_successor_and_says_when_the_grace_can_be_cut() {
        let now = at("2026-11-28T12:30:00Z");
        let hours = |counts: &[(u64, u64)]| {
            let hours: Vec<Value> = counts
                .iter()
                .enumerate()
                .map(|(i, (a, r))| json!({"hour": format!("2026-11-28T{:02}:00:00Z", 9 + i), "accepted": a, "refused": r}))
                .collect();
            json!({"hours": hours})
        };
        let old = |used: &str| {
            json!({"id": "key_old", "name": "billing", "status": "in_grace", "expires_at": "2026-11-29T10:00:00Z",
                   "last_used_at": used, "last_refused_at": null})
        };
        let new = json!({"id": "key_new", "name": "billing", "status": "active", "expires_at": null,
                         "last_used_at": "2026-11-28T12:29:00Z", "last_refused_at": null});
        let theirs = hours(&[(0, 0), (5, 0), (40, 0), (12, 0)]);
        let quiet = usage(
            &old("2026-11-28T10:41:00Z"),
            &hours(&[(90, 1), (30, 0), (0, 0), (0, 0)]),
            Some((&new, &theirs)),
            3,
            now,
        );
        assert!(
            quiet.contains(
                "key        key_old  billing  in grace, ends in 22h  2026-11-28 10:41 UTC (2h ago)"
            ),
            "{quiet}"
        );
        assert!(
            quiet.contains("successor  key_new  billing  active"),
            "{quiet}"
        );
        assert!(
            quiet.contains("2026-11-28 10:00  30        0        5                   0\n"),
            "{quiet}"
        );
        assert!(
            !quiet.contains("2026-11-28 09:00"),
            "only the last 3 hours: {quiet}"
        );
        assert!(
            quiet.contains("keyward keys grace key_old --grace now"),
            "{quiet}"
        );

        let busy = usage(
            &old("2026-11-28T12:01:00Z"),
            &hours(&[(0, 0), (0, 0), (3, 0), (1, 0)]),
            Some((&new, &theirs)),
            24,
            now,
        );
        assert!(
            !busy.contains("can be cut"),
            "still presented within the hour: {busy}"
        );
        let alone = usage(&new, &theirs, None, 24, now);
        assert!(
            alone.contains("HOUR (UTC)        ACCEPTED  REFUSED\n"),
            "{alone}"
        );
        assert!(!alone.contains("SUCCESSOR"), "{alone}");
    }

    #[test]
    fn each_action_shows_what_it_records() {
        let now = at("2026-11-28T12:00:00Z");
        for (entry, shown) in [
            (
                json!({"action": "key.rotated", "new_key_id": "key_2", "grace_period": "24h", "expires_at": "2026-11-29T12:00:00Z"}),
                "new key key_2, grace 24h, old key expires 2026-11-29 12:00:00 UTC (in 24h)",
            ),
            (
                json!({"action": "key.rotation_policy_changed", "rotation_policy": null}),
                "policy cleared",
            ),
            (
                json!({"action": "key.allowed_ips_changed", "previous": [], "allowed_ips": ["198.51.100.0/24", "2001:db8::7"]}),
                "allowed IPs 198.51.100.0/24,2001:db8::7; was any address",
            ),
            (
                json!({"action": "key.allowed_ips_changed", "previous": ["10.0.0.0/8"], "allowed_ips": []}),
                "allowed IPs any address; was 10.0.0.0/8",
            ),
            (
                json!({"action": "key.secret_delivery_failed", "secret_id": "s", "failures": 2, "retry_at": "2026-11-28T13:00:00Z"}),
                "to s, 2 in a row, retried 2026-11-28 13:00:00 UTC (in 1h)",
            ),
            (
                json!({"action": "key.grace_idle", "new_key_id": "key_2", "last_presented_at": "2026-11-28T10:40:00Z",
                       "successor_last_used_at": "2026-11-28T11:59:00Z", "expires_at": "2026-11-30T12:00:00Z"}),
                "no presentation recorded since 2026-11-28 10:40 UTC (1h ago) while key_2 was used 2026-11-28 11:59 UTC (1m ago); grace ends 2026-11-30 12:00:00 UTC (in 2d)",
            ),
            (
                json!({"action": "key.leaked", "url": "https://github.com/a/b/commit/1", "source": "commit", "leak_policy": "revoke"}),
                "reported leaked, found at https://github.com/a/b/commit/1 (commit); leak policy revoke",
            ),
            (
                json!({"action": "key.leaked", "url": null, "source": null, "leak_policy": "notify"}),
                "reported leaked; leak policy notify",
            ),
            (
                json!({"action": "environment.leak_policy_changed", "previous": "revoke", "leak_policy": "notify"}),
                "leak policy notify, was revoke",
            ),
            (json!({"action": "key.unheard_of"}), "-"),
        ] {
            assert_eq!(details(&entry, now), shown);
        }
    }
}
