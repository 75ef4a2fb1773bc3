//! `keyward keys`, `keyward activity` and `keyward verify`: the HTTP API from a terminal or a
//! script. Each command answers a table or a key's fields on stdout, or the API's own JSON
//! with `--json`; errors go to stderr, and the exit status says which class of failure it was.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper::Method;
use keyward::domain::{EnvName, GracePeriod, KeyId, PresentedKey, RotationInterval};
use serde_json::{Value, json};

use crate::api::{Api, CallerKey, Failure, encode};
use crate::show;

/// What each exit status means, for every command's `--help`.
pub const EXIT_STATUS: &str = "Exit status:
  0  success
  1  keyward refused the request (its error code and message on stderr, as
     `error: code: message`), or the command failed
  2  a usage error: a bad option or value, or no key to act with
  3  keyward could not be reached, or answered 5xx: worth retrying";

/// Where the key that commands act with comes from, for `--help`.
const KEY_SOURCES: &str =
    "The key to act with comes from the variable KEYWARD_API_KEY, or from --api-key-file or
--api-key-stdin. No option takes a key as its value, because a command line is visible to
every user of the machine.";

/// The keyward to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// keyward's base URL: on AWS, the API's stage URL (https:// trusts the system's roots)
    #[arg(
        long,
        env = "KEYWARD_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Sends requests, and so the key, over plain http:// to a host other than this machine
    #[arg(long)]
    insecure_http: bool,
}

/// The keyward to talk to, and the key to act with.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    #[command(flatten)]
    target: Target,
    /// Reads the key to act with from this file's first line, instead of KEYWARD_API_KEY
    #[arg(long, value_name = "PATH", conflicts_with = "api_key_stdin")]
    api_key_file: Option<PathBuf>,
    /// Reads the key to act with from stdin's first line, instead of KEYWARD_API_KEY
    #[arg(long)]
    api_key_stdin: bool,
}

impl Connection {
    /// The client, with the caller's key from the file, stdin or `KEYWARD_API_KEY`.
    fn open(&self) -> Result<Api, Failure> {
        let key = if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!("cannot read the key file {}: {e}", path.display()))
            })?;
            CallerKey::new(
                text.lines().next().unwrap_or(""),
                &format!("the key file {}", path.display()),
            )?
        } else if self.api_key_stdin {
            CallerKey::new(&first_line_of_stdin()?, "stdin")?
        } else {
            match std::env::var("KEYWARD_API_KEY") {
                Ok(text) => CallerKey::new(&text, "KEYWARD_API_KEY")?,
                Err(_) => {
                    return Err(Failure::Usage(
                        "no key to act with: set KEYWARD_API_KEY, or pass --api-key-file PATH or --api-key-stdin".to_owned(),
                    ));
                }
            }
        };
        Api::new(&self.target.url, Some(key), self.target.insecure_http)
    }
}

/// Reads stdin's first line, without its end.
fn first_line_of_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(4096)
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Prints the API's own JSON, untouched, instead of a table
    #[arg(long)]
    json: bool,
}

/// How a command that makes a key prints it.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretOutput {
    #[command(flatten)]
    output: Output,
    /// Prints only the new secret and a newline, for a pipe; to keep it in a file, use
    /// --secret-file, which no other user can read
    #[arg(long, conflicts_with_all = ["json", "secret_file"])]
    secret_only: bool,
    /// Writes the new secret to this file, made readable by its owner only (mode 0600); an
    /// existing file is refused, before the key is made
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

/// The file a new secret goes to, made before the key is, so that a key is never made whose
/// secret has nowhere to go: owner-only, and never one that exists (it may be another's).
fn secret_file(path: &std::path::Path) -> Result<std::fs::File, Failure> {
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
fn to_stdout(answer: &Value, text: &str) -> Result<(), Failure> {
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

fn env_name(s: &str) -> Result<EnvName, String> {
    EnvName::parse(s).map_err(|e| e.to_string())
}

fn key_id(s: &str) -> Result<KeyId, String> {
    KeyId::parse(s).map_err(|e| e.to_string())
}

fn grace(s: &str) -> Result<String, String> {
    GracePeriod::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn every(s: &str) -> Result<String, String> {
    RotationInterval::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn limit(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| "a number from 1 to 10000".to_owned())
}

fn hours(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=168).contains(&n) => Ok(n),
        _ => Err("a whole number of hours from 1 to 168".to_owned()),
    }
}

fn interval(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=3_600).contains(n))
        .ok_or_else(|| "a number of seconds from 1 to 3600".to_owned())
}

/// A key's kind, as `--kind` takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// A server-side key, which may carry any scope
    Secret,
    /// A client-side key, which may carry only custom scopes
    Publishable,
}

/// The `keyward keys` commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Lists the environment's keys, newest first
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    List {
        /// The environment (by default the one of the key you act with)
        #[arg(long, value_name = "ENV", value_parser = env_name)]
        env: Option<EnvName>,
        /// How many keys to show at most
        #[arg(long, value_name = "N", value_parser = limit, default_value = "20", conflicts_with = "all")]
        limit: usize,
        /// Shows every key, reading every page
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Makes a key and prints its secret, the only time it is ever shown
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    Create {
        /// Its name, 1 to 128 characters
        #[arg(long)]
        name: String,
        /// Its kind
        #[arg(long, value_enum, default_value = "secret")]
        kind: KindArg,
        /// A scope it carries (repeat for more; `*` is full access); none by default
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// When it stops working, as an RFC 3339 time in the future
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// Rotates it on a schedule this often: an ISO-8601 duration from P1D to P365D
        #[arg(long, value_name = "DURATION", value_parser = every, requires_all = ["rotate_grace", "rotate_secret"])]
        rotate_every: Option<String>,
        /// The grace each scheduled rotation gives the old key (at least 1h)
        #[arg(long, value_name = "GRACE", value_parser = grace, requires = "rotate_every")]
        rotate_grace: Option<String>,
        /// The Secrets Manager secret each rotation delivers the new key to
        #[arg(long, value_name = "SECRET_ID", requires = "rotate_every")]
        rotate_secret: Option<String>,
        /// The environment (by default the one of the key you act with)
        #[arg(long, value_name = "ENV", value_parser = env_name)]
        env: Option<EnvName>,
        #[command(flatten)]
        output: SecretOutput,
        #[command(flatten)]
        connection: Connection,
    },
    /// Shows one key
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    Get {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Shows a key's checks per hour, beside its successor's while it is in its grace
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(USAGE_HELP))]
    Usage {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        /// How many of the last hours to show, up to 168 (a week)
        #[arg(long, value_name = "N", value_parser = hours, default_value = "24")]
        hours: usize,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Rotates a key: the new key works at once, the old one until its grace ends
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(GRACE_HELP))]
    Rotate {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        /// How long the old key keeps working: now, 1h, 24h, 3d, 7d, an ISO-8601 duration or seconds
        #[arg(long, value_name = "GRACE", value_parser = grace)]
        grace: String,
        #[command(flatten)]
        output: SecretOutput,
        #[command(flatten)]
        connection: Connection,
    },
    /// Changes how long a key in its grace keeps working, from now: longer, shorter or `now`
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(GRACE_HELP))]
    Grace {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        /// The new grace, from now: now, 1h, 24h, 3d, 7d, an ISO-8601 duration or seconds
        #[arg(long, value_name = "GRACE", value_parser = grace)]
        grace: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Revokes a key: it fails on its very next request
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(REVOKE_HELP))]
    Revoke {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        /// Revokes without asking
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
    /// Sets or clears a key's rotation policy
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    Policy {
        /// The key's id, key_...
        #[arg(value_parser = key_id)]
        key_id: KeyId,
        /// How often to rotate it: an ISO-8601 duration from P1D to P365D
        #[arg(long, value_name = "DURATION", value_parser = every, requires_all = ["grace", "secret"], required_unless_present = "clear")]
        every: Option<String>,
        /// The grace each rotation gives the old key (at least 1h)
        #[arg(long, value_name = "GRACE", value_parser = grace, requires = "every")]
        grace: Option<String>,
        /// The Secrets Manager secret each rotation delivers the new key to
        #[arg(long, value_name = "SECRET_ID", requires = "every")]
        secret: Option<String>,
        /// Removes the policy
        #[arg(long, conflicts_with = "every")]
        clear: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        connection: Connection,
    },
}

const GRACE_HELP: &str =
    "A grace is now, 1h, 24h, 3d or 7d, an ISO-8601 duration such as P14D or PT36H, or a
number of seconds, up to 365 days. It never runs past an expiry the key already had.";

const USAGE_HELP: &str =
    "Counts reach keyward up to a minute or so after their check, so the current hour is still
filling. A key rotated to another is shown beside it; when the old key has not been presented
for an hour while the new one has, every service has switched and its grace can be cut.
--json prints the API's answer for the key alone: {\"hours\": [...]}.";

const REVOKE_HELP: &str =
    "On a terminal it asks first; --yes skips the question. Without a terminal on stdin it
revokes only with --yes. An environment's default key must be rotated before it can be
revoked.";

/// A command's long help: what it says, where its key comes from, and the exit statuses.
fn long_help(extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra}\n\n")
    };
    format!("{extra}{KEY_SOURCES}\n\n{EXIT_STATUS}")
}

/// `keyward activity`'s options.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS, after_long_help = long_help(ACTIVITY_HELP))]
pub struct ActivityArgs {
    /// Only the entries of this key, key_... (a rotation shows under both keys)
    #[arg(long = "key", value_name = "KEY_ID", value_parser = key_id)]
    key_id: Option<KeyId>,
    /// Only entries of this action, such as key.rotated
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// How many entries to show at most (with --follow: before the new ones)
    #[arg(long, value_name = "N", value_parser = limit, default_value = "20", conflicts_with = "all")]
    limit: usize,
    /// Shows every entry, reading every page
    #[arg(long, conflicts_with = "follow")]
    all: bool,
    /// Keeps polling and prints new entries as they come, oldest first, until interrupted
    #[arg(long)]
    follow: bool,
    /// How often --follow polls, in seconds
    #[arg(long, value_name = "SECONDS", value_parser = interval, default_value = "2", requires = "follow")]
    interval: u64,
    /// The environment (by default the one of the key you act with)
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    env: Option<EnvName>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

const ACTIVITY_HELP: &str =
    "Entries are newest first. With --follow they are oldest first, as tail -f prints lines,
and --json prints one entry per line.";

/// `keyward verify`'s options.
#[derive(Debug, clap::Args)]
#[command(after_help = VERIFY_STATUS, after_long_help = VERIFY_HELP)]
pub struct VerifyArgs {
    /// A scope the key must hold (repeat for more)
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// The environment the key must belong to
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    env: Option<EnvName>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    target: Target,
}

const VERIFY_STATUS: &str =
    "Exit status: 0 only when the key is valid; 1 when it is not (its code on stderr); 2 for a
usage error; 3 when keyward could not be reached or answered 5xx.";

const VERIFY_HELP: &str =
    "Reads the key to check from stdin's first line, so that it never appears in a command
line: `keyward verify --scope orders:read < service.key`. It needs no key of its own.

Exit status: 0 only when the key is valid; 1 when it is not (its code on stderr); 2 for a
usage error; 3 when keyward could not be reached or answered 5xx.";

/// The environment named, or else the one that the caller's key names in its prefix.
fn environment(named: Option<EnvName>, api: &Api) -> Result<EnvName, Failure> {
    if let Some(env) = named {
        return Ok(env);
    }
    let key = api.key().map(CallerKey::expose).unwrap_or("");
    PresentedKey::parse(key)
        .map(|presented| presented.environment)
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot tell the environment from the key you act with ({e}); pass --env"
            ))
        })
}

/// One page's URL: `path` with its filters, the page's size, and where it starts.
fn page_url(path: &str, size: usize, cursor: Option<&str>) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{separator}limit={size}");
    if let Some(cursor) = cursor {
        url.push_str(&format!("&cursor={}", encode(cursor)));
    }
    url
}

/// Reads pages of a list until `want` items (or every page), and answers them with the last
/// page's `next_cursor`.
async fn pages(
    api: &Api,
    path: &str,
    field: &str,
    want: Option<usize>,
) -> Result<(Vec<Value>, Value), Failure> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let size = want.map_or(100, |w| (w - items.len()).min(100));
        let url = page_url(path, size, cursor.as_deref());
        let page = api.send(Method::GET, &url, None).await?;
        let Some(found) = page[field].as_array() else {
            return Err(not_keyward(field));
        };
        items.extend(found.iter().cloned());
        let full = want.is_some_and(|w| items.len() >= w);
        match page["next_cursor"].as_str() {
            Some(next) if !full => cursor = Some(next.to_owned()),
            _ => return Ok((items, page["next_cursor"].clone())),
        }
    }
}

/// An answer that lacks what keyward's API always sends.
fn not_keyward(field: &str) -> Failure {
    Failure::Unreachable(format!(
        "the answer has no `{field}`: the URL does not lead to keyward's API"
    ))
}

/// Sends a request to one key's route: `/v1/keys/{key_id}` followed by `route`.
async fn on_key(
    api: &Api,
    method: Method,
    key_id: &KeyId,
    route: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    api.send(method, &format!("/v1/keys/{key_id}{route}"), body.as_ref())
        .await
}

/// Prints a JSON value as the API sent it, indented.
fn print_json(value: &Value) {
    println!("{}", pretty(value));
}

/// `value` as indented JSON.
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values always serialize")
}

/// Prints a list read by [`pages`]: a table, with a note on stderr when more remain, or with
/// `--json` the API's answer shape, `{field: [...], "next_cursor"}`.
fn print_list(
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
fn print_key(answer: &Value, output: Output) -> Result<(), Failure> {
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
fn remove_unused(output: &SecretOutput) {
    if let Some(path) = &output.secret_file {
        let _ = std::fs::remove_file(path);
    }
}

/// Prints an answer that holds a new secret: to `file` (made by [`secret_file`] before the
/// request) with the answer on stdout without it, or the secret alone with `--secret-only`,
/// or else the answer with a warning on stderr that names no secret. A secret that is not a
/// key's is refused, so that no server can write terminal controls through it.
fn print_with_secret(
    answer: &Value,
    output: &SecretOutput,
    file: Option<std::fs::File>,
    describe: impl FnOnce(DateTime<Utc>) -> String,
) -> Result<(), Failure> {
    let Some(secret) = answer["secret"]
        .as_str()
        .filter(|s| PresentedKey::parse(s).is_ok())
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

/// Asks on stderr and reads the answer from `input`: only `y` or `yes` agrees.
pub fn confirm(question: &str, input: &mut impl BufRead) -> Result<bool, Failure> {
    eprint!("{question} [y/N] ");
    std::io::stderr()
        .flush()
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let mut answer = String::new();
    input
        .read_line(&mut answer)
        .map_err(|e| Failure::Failed(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs a `keyward keys` command.
pub async fn keys(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::List {
            env,
            limit,
            all,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let env = environment(env, &api)?;
            let path = format!("/v1/environments/{env}/keys");
            let (keys, next) = pages(&api, &path, "keys", (!all).then_some(limit)).await?;
            print_list(
                "keys",
                keys,
                next,
                output,
                &show::KEY_COLUMNS,
                show::key_row,
            );
            Ok(())
        }
        KeysCommand::Create {
            name,
            kind,
            scopes,
            expires_at,
            rotate_every,
            rotate_grace,
            rotate_secret,
            env,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let env = environment(env, &api)?;
            let file = output.secret_file.as_deref().map(secret_file).transpose()?;
            let mut body = json!({
                "name": name,
                "kind": match kind { KindArg::Secret => "secret", KindArg::Publishable => "publishable" },
                "scopes": scopes,
            });
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            if let (Some(every), Some(grace), Some(secret)) =
                (rotate_every, rotate_grace, rotate_secret)
            {
                body["rotation_policy"] =
                    json!({"every": every, "grace_period": grace, "secret_id": secret});
            }
            let path = format!("/v1/environments/{env}/keys");
            let answer = api.send(Method::POST, &path, Some(&body)).await;
            let answer = answer.inspect_err(|_| remove_unused(&output))?;
            print_with_secret(&answer, &output, file, |now| show::key(&answer["key"], now))
        }
        KeysCommand::Get {
            key_id,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let answer = on_key(&api, Method::GET, &key_id, "", None).await?;
            print_key(&answer, output)
        }
        KeysCommand::Usage {
            key_id,
            hours,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let usage = on_key(&api, Method::GET, &key_id, "/usage", None).await?;
            if !usage["hours"].is_array() {
                return Err(not_keyward("hours"));
            }
            if output.json {
                print_json(&usage);
                return Ok(());
            }
            let key = on_key(&api, Method::GET, &key_id, "", None).await?;
            let successor = match key["key"]["rotated_to"].as_str().map(KeyId::parse) {
                Some(Ok(next)) => Some((
                    on_key(&api, Method::GET, &next, "", None).await?,
                    on_key(&api, Method::GET, &next, "/usage", None).await?,
                )),
                _ => None,
            };
            let successor = successor.as_ref().map(|(k, u)| (&k["key"], u));
            print!(
                "{}",
                show::usage(&key["key"], &usage, successor, hours, Utc::now())
            );
            Ok(())
        }
        KeysCommand::Rotate {
            key_id,
            grace,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let file = output.secret_file.as_deref().map(secret_file).transpose()?;
            let body = json!({"grace_period": grace});
            let answer = on_key(&api, Method::POST, &key_id, "/rotate", Some(body)).await;
            let answer = answer.inspect_err(|_| remove_unused(&output))?;
            print_with_secret(&answer, &output, file, |now| {
                format!(
                    "{}{}",
                    show::key(&answer["key"], now),
                    show::previous(&answer["previous"], now)
                )
            })
        }
        KeysCommand::Grace {
            key_id,
            grace,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let body = json!({"grace_period": grace});
            let answer = on_key(&api, Method::PUT, &key_id, "/grace-period", Some(body)).await?;
            print_key(&answer, output)
        }
        KeysCommand::Revoke {
            key_id,
            yes,
            output,
            connection,
        } => {
            let api = connection.open()?;
            if !yes {
                if connection.api_key_stdin || !std::io::stdin().is_terminal() {
                    return Err(Failure::Usage(
                        "revoking without a terminal to ask on needs --yes: the key fails on its very next request".to_owned(),
                    ));
                }
                let named = match on_key(&api, Method::GET, &key_id, "", None).await {
                    Ok(current) => current["key"]["name"]
                        .as_str()
                        .map(|name| format!(" ({})", show::clean(name))),
                    // A key may write without reading; it is asked without the key's name.
                    Err(Failure::Refused { code, .. }) if code == "insufficient_scope" => None,
                    Err(failure) => return Err(failure),
                };
                let question = format!(
                    "Revoke {key_id}{}? It fails on its very next request.",
                    named.unwrap_or_default()
                );
                if !confirm(&question, &mut std::io::stdin().lock())? {
                    return Err(Failure::Failed(
                        "not revoked: the answer was not yes".to_owned(),
                    ));
                }
            }
            let answer = on_key(&api, Method::POST, &key_id, "/revoke", None).await?;
            print_key(&answer, output)
        }
        KeysCommand::Policy {
            key_id,
            every,
            grace,
            secret,
            clear,
            output,
            connection,
        } => {
            let api = connection.open()?;
            let policy = match (clear, every, grace, secret) {
                (false, Some(every), Some(grace), Some(secret)) => {
                    json!({"every": every, "grace_period": grace, "secret_id": secret})
                }
                _ => Value::Null,
            };
            let body = json!({"rotation_policy": policy});
            let answer = on_key(&api, Method::PUT, &key_id, "/rotation-policy", Some(body)).await?;
            print_key(&answer, output)
        }
    }
}

/// Runs `keyward activity`.
pub async fn activity(args: ActivityArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let env = environment(args.env, &api)?;
    let mut path = format!("/v1/environments/{env}/activity");
    let mut filters = Vec::new();
    if let Some(key_id) = &args.key_id {
        filters.push(format!("key_id={}", encode(key_id.as_str())));
    }
    if let Some(action) = &args.action {
        filters.push(format!("action={}", encode(action)));
    }
    if !filters.is_empty() {
        path = format!("{path}?{}", filters.join("&"));
    }
    let want = (!args.all).then_some(args.limit);
    let (entries, next) = pages(&api, &path, "entries", want).await?;
    if args.follow {
        return follow(
            &api,
            &path,
            entries,
            args.limit,
            Duration::from_secs(args.interval),
            args.output,
        )
        .await;
    }
    print_list(
        "entries",
        entries,
        next,
        args.output,
        &show::ACTIVITY_COLUMNS,
        show::activity_row,
    );
    Ok(())
}

/// The most entries `--follow` remembers having printed, to print none twice.
const FOLLOW_MEMORY: usize = 10_000;

/// The most pages one poll of `--follow` reads when everything it sees is new.
const FOLLOW_PAGES: usize = 10;

/// Prints `first` oldest first, then polls for entries it has not printed until interrupted.
async fn follow(
    api: &Api,
    path: &str,
    first: Vec<Value>,
    limit: usize,
    every: Duration,
    output: Output,
) -> Result<(), Failure> {
    // Entries older than the oldest one shown at the start were left out on purpose (by
    // --limit); a poll's page reaches back past it, so they stay left out.
    let floor: Option<String> = (first.len() >= limit)
        .then(|| {
            first
                .last()
                .and_then(|e| e["id"].as_str())
                .map(str::to_owned)
        })
        .flatten();
    let mut seen: HashSet<String> = HashSet::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let print = |entries: Vec<Value>, seen: &mut HashSet<String>, order: &mut VecDeque<String>| {
        let now = Utc::now();
        for entry in entries.into_iter().rev() {
            let Some(id) = entry["id"].as_str().map(str::to_owned) else {
                continue;
            };
            if floor.as_deref().is_some_and(|floor| id.as_str() < floor) || !seen.insert(id.clone())
            {
                continue;
            }
            order.push_back(id);
            if order.len() > FOLLOW_MEMORY {
                order.pop_front().map(|old| seen.remove(&old));
            }
            if output.json {
                println!("{entry}");
            } else {
                println!("{}", show::activity_line(&entry, now));
            }
        }
    };
    if !output.json {
        println!("{}", show::activity_line_header());
    }
    print(first, &mut seen, &mut order);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let mut fresh = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..FOLLOW_PAGES {
            let url = page_url(path, 100, cursor.as_deref());
            let page = match api.send(Method::GET, &url, None).await {
                Ok(page) => page,
                // Like tail -f, a blip does not end it: it says so and polls again.
                Err(failure @ Failure::Unreachable(_)) => {
                    eprintln!(
                        "warning: {}; polling again",
                        crate::api::redact(&failure.to_string())
                    );
                    break;
                }
                Err(failure) => return Err(failure),
            };
            let Some(entries) = page["entries"].as_array() else {
                return Err(not_keyward("entries"));
            };
            let all_new = entries
                .iter()
                .all(|e| !seen.contains(e["id"].as_str().unwrap_or("")));
            fresh.extend(entries.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) if all_new => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        print(fresh, &mut seen, &mut order);
    }
}

/// What `verify` says of each refusal.
fn refusal(code: &str) -> &'static str {
    match code {
        "not_found" => "keyward has no such key",
        "malformed" => "this is not a keyward key, or it has a typo",
        "expired" => "the key has expired",
        "revoked" => "the key was revoked",
        "wrong_environment" => "the key belongs to another environment",
        "insufficient_scope" => "the key lacks a scope asked for",
        _ => "the key is not valid",
    }
}

/// Runs `keyward verify`: exit status 0 only for a valid key.
pub async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let api = Api::new(&args.target.url, None, args.target.insecure_http)?;
    if std::io::stdin().is_terminal() {
        eprintln!("Paste the key to check, then press Enter:");
    }
    let key = first_line_of_stdin()?;
    if key.trim().is_empty() {
        return Err(Failure::Usage(
            "no key on stdin: keyward verify reads the key to check from its first line".to_owned(),
        ));
    }
    let mut body = json!({"key": key.trim()});
    if !args.scopes.is_empty() {
        body["scopes"] = json!(args.scopes);
    }
    if let Some(env) = &args.env {
        body["environment"] = json!(env);
    }
    let verdict = api.send(Method::POST, "/v1/verify", Some(&body)).await?;
    let Some(valid) = verdict["valid"].as_bool() else {
        return Err(not_keyward("valid"));
    };
    if args.output.json {
        print_json(&verdict);
    } else {
        print!("{}", show::verdict(&verdict, Utc::now()));
    }
    if valid {
        return Ok(());
    }
    let code = verdict["code"].as_str().unwrap_or("invalid");
    Err(Failure::Refused {
        code: code.to_owned(),
        message: refusal(code).to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for (typed, agreed) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \n", true),
            ("\n", false),
            ("n\n", false),
            ("yes please\n", false),
            ("", false),
        ] {
            assert_eq!(
                confirm("Revoke?", &mut typed.as_bytes()),
                Ok(agreed),
                "{typed:?}"
            );
        }
    }

    #[test]
    fn the_environment_comes_from_the_option_or_else_from_the_key() {
        let production = EnvName::parse("production").unwrap();
        let key = keyward::domain::Secret::generate(
            &keyward::mint(),
            keyward::domain::Kind::Secret,
            &EnvName::parse("eu-west").unwrap(),
        );
        let api = |text: &str| {
            Api::new(
                "http://127.0.0.1:1",
                Some(CallerKey::new(text, "KEYWARD_API_KEY").unwrap()),
                false,
            )
            .unwrap()
        };
        let with_key = api(key.expose());
        assert_eq!(
            environment(Some(production.clone()), &with_key),
            Ok(production)
        );
        assert_eq!(
            environment(None, &with_key).map(|e| e.to_string()),
            Ok("eu-west".to_owned())
        );
        let failure = environment(None, &api("not-a-key")).unwrap_err();
        assert_eq!(failure.exit_status(), 2);
        assert!(failure.to_string().contains("--env"), "{failure}");
        assert!(!failure.to_string().contains("not-a-key"), "{failure}");
    }
}
