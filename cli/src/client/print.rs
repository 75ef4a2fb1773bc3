//! Printing answers: tables, a key's fields, the API's JSON, and new secrets, which go to a
//! file, a pipe or the terminal, once.

use std::io::Write;

use chrono::{DateTime, Utc};
use keyward::domain::{KeyPrefix, PresentedKey};
use serde_json::{Value, json};

use super::args::{Output, SecretOutput};
use super::paging::not_keyward;
use crate::api::Failure;
use crate::show;

/// The file a new secret goes to, made before the key is, so that a key is never made whose
/// secret has nowhere to go: owner-only, and never one that exists (it may be another's).
pub(super) fn secret_file(path: &std::path::Path) -> Result<std::fs::File, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Failure::Usage(format!(
                "--secret-file {}: {e} (it must not exist yet; no key was made)",
                path.display()
            ))
        })
}

/// Writes to stdout, or says which key was made when stdout is gone (a closed pipe), so that
/// a script knows to revoke it; never its secret.
pub(super) fn to_stdout(answer: &Value, text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            Failure::Failed(format!(
                "the key {} was made, but its answer could not be written to stdout: {e}",
                show::clean(answer["key"]["id"].as_str().unwrap_or("-"))
            ))
        })
}

/// Prints a JSON value as the API sent it, indented.
pub(super) fn print_json(value: &Value) {
    println!("{}", pretty(value));
}

/// `value` as indented JSON.
pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values always serialize")
}

/// Prints a list read by [`pages`]: a table, with a note on stderr when more remain, or with
/// `--json` the API's answer shape, `{field: [...], "next_cursor"}`.
pub(super) fn print_list(
    field: &str,
    items: Vec<Value>,
    next: Value,
    output: Output,
    columns: &[&str],
    row: fn(&Value, DateTime<Utc>) -> Vec<String>,
) {
    if output.json {
        print_json(&json!({field: items, "next_cursor": next}));
        return;
    }
    let now = Utc::now();
    let rows: Vec<_> = items.iter().map(|item| row(item, now)).collect();
    print!("{}", show::table(columns, &rows));
    if !next.is_null() {
        eprintln!("There are more {field}: --all shows every one, --limit N more of them.");
    }
}

/// Prints one key, or the API's answer with `--json`.
pub(super) fn print_key(answer: &Value, output: Output) -> Result<(), Failure> {
    if !answer["key"]["id"].is_string() {
        return Err(not_keyward("key"));
    }
    if output.json {
        print_json(answer);
    } else {
        print!("{}", show::key(&answer["key"], Utc::now()));
    }
    Ok(())
}

/// Removes the secret file made for a key that was not made, so that a retry can use it.
pub(super) fn remove_unused(output: &SecretOutput) {
    if let Some(path) = &output.secret_file {
        let _ = std::fs::remove_file(path);
    }
}

/// Prints an answer that holds a new secret: to `file` (made by [`secret_file`] before the
/// request) with the answer on stdout without it, or the secret alone with `--secret-only`,
/// or else the answer with a warning on stderr that names no secret. A secret that is not a
/// key with `prefix`, the deployment's, is refused, so that no server can write terminal
/// controls through it.
pub(super) fn print_with_secret(
    answer: &Value,
    prefix: &KeyPrefix,
    output: &SecretOutput,
    file: Option<std::fs::File>,
    describe: impl FnOnce(DateTime<Utc>) -> String,
) -> Result<(), Failure> {
    let Some(secret) = answer["secret"]
        .as_str()
        .filter(|s| PresentedKey::parse(s, prefix).is_ok())
    else {
        remove_unused(output);
        return Err(match answer["key"]["id"].as_str() {
            // A key was made, so this is no answer to retry blindly: say which to revoke.
            Some(id) => Failure::Failed(format!(
                "the key {} was made, but the answer's secret is not a keyward key: revoke it",
                show::clean(id)
            )),
            None => not_keyward("secret"),
        });
    };
    if let (Some(mut file), Some(path)) = (file, &output.secret_file) {
        writeln!(file, "{secret}")
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                Failure::Failed(format!(
                    "the key {} was made, but its secret could not be written to {}: {e}",
                    show::clean(answer["key"]["id"].as_str().unwrap_or("-")),
                    path.display()
                ))
            })?;
        let mut shown = answer.clone();
        shown["secret"] = Value::Null;
        shown["secret_file"] = json!(path.display().to_string());
        let text = if output.output.json {
            format!("{}\n", pretty(&shown))
        } else {
            format!(
                "{}secret  written to {}\n",
                describe(Utc::now()),
                path.display()
            )
        };
        // The secret is safe in its file already: a closed stdout loses only the description.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
        return Ok(());
    }
    if output.secret_only {
        return to_stdout(answer, &format!("{secret}\n"));
    }
    if output.output.json {
        to_stdout(answer, &format!("{}\n", pretty(answer)))?;
    } else {
        to_stdout(
            answer,
            &format!("{}secret  {secret}\n", describe(Utc::now())),
        )?;
    }
    let _ = writeln!(
        std::io::stderr(),
        "warning: the secret is shown only this once and cannot be read again: store it now (--secret-file PATH keeps it readable by you only)"
    );
    Ok(())
}
