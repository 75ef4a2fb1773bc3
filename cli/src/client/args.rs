//! The commands' options, as clap reads them, and the help that explains them.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use keyward::domain::{EnvName, GracePeriod, KeyId, RotationInterval};

use crate::api::{Api, CallerKey, Failure};

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
    pub(super) url: String,
    /// Sends requests, and so the key, over plain http:// to a host other than this machine
    #[arg(long)]
    pub(super) insecure_http: bool,
}

/// The keyward to talk to, and the key to act with.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    #[command(flatten)]
    pub(super) target: Target,
    /// Reads the key to act with from this file's first line, instead of KEYWARD_API_KEY
    #[arg(long, value_name = "PATH", conflicts_with = "api_key_stdin")]
    pub(super) api_key_file: Option<PathBuf>,
    /// Reads the key to act with from stdin's first line, instead of KEYWARD_API_KEY
    #[arg(long)]
    pub(super) api_key_stdin: bool,
}

impl Connection {
    /// The client, with the caller's key from the file, stdin or `KEYWARD_API_KEY`.
    pub(super) fn open(&self) -> Result<Api, Failure> {
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
pub(super) fn first_line_of_stdin() -> Result<String, Failure> {
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
    pub(super) json: bool,
}

/// How a command that makes a key prints it.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretOutput {
    #[command(flatten)]
    pub(super) output: Output,
    /// Prints only the new secret and a newline, for a pipe; to keep it in a file, use
    /// --secret-file, which no other user can read
    #[arg(long, conflicts_with_all = ["json", "secret_file"])]
    pub(super) secret_only: bool,
    /// Writes the new secret to this file, made readable by its owner only (mode 0600); an
    /// existing file is refused, before the key is made
    #[arg(long, value_name = "PATH")]
    pub(super) secret_file: Option<PathBuf>,
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
    List(ListArgs),
    /// Makes a key and prints its secret, the only time it is ever shown
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    Create(CreateArgs),
    /// Shows one key, and the addresses its accepted checks came from this week
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(GET_HELP))]
    Get(GetArgs),
    /// Shows a key's checks per hour, beside its successor's while it is in its grace
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(USAGE_HELP))]
    Usage(UsageArgs),
    /// Rotates a key: the new key works at once, the old one until its grace ends
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(GRACE_HELP))]
    Rotate(RotateArgs),
    /// Changes how long a key in its grace keeps working, from now: longer, shorter or `now`
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(GRACE_HELP))]
    Grace(GraceArgs),
    /// Revokes a key: it fails on its very next request
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(REVOKE_HELP))]
    Revoke(RevokeArgs),
    /// Sets or clears a key's rotation policy
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(""))]
    Policy(PolicyArgs),
    /// Replaces the networks a key is accepted from, or lets every address in again
    #[command(after_help = EXIT_STATUS, after_long_help = long_help(IPS_HELP))]
    Ips(IpsArgs),
}

/// The options of `keyward keys list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The environment (by default the one of the key you act with)
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    pub(super) env: Option<EnvName>,
    /// How many keys to show at most
    #[arg(long, value_name = "N", value_parser = limit, default_value = "20", conflicts_with = "all")]
    pub(super) limit: usize,
    /// Shows every key, reading every page
    #[arg(long)]
    pub(super) all: bool,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Its name, 1 to 128 characters
    #[arg(long)]
    pub(super) name: String,
    /// Its kind
    #[arg(long, value_enum, default_value = "secret")]
    pub(super) kind: KindArg,
    /// A scope it carries (repeat for more; `*` is full access); none by default
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(super) scopes: Vec<String>,
    /// When it stops working, as an RFC 3339 time in the future
    #[arg(long, value_name = "TIME")]
    pub(super) expires_at: Option<String>,
    /// Rotates it on a schedule this often: an ISO-8601 duration from P1D to P365D
    #[arg(long, value_name = "DURATION", value_parser = every, requires_all = ["rotate_grace", "rotate_secret"])]
    pub(super) rotate_every: Option<String>,
    /// The grace each scheduled rotation gives the old key (at least 1h)
    #[arg(long, value_name = "GRACE", value_parser = grace, requires = "rotate_every")]
    pub(super) rotate_grace: Option<String>,
    /// The Secrets Manager secret each rotation delivers the new key to
    #[arg(long, value_name = "SECRET_ID", requires = "rotate_every")]
    pub(super) rotate_secret: Option<String>,
    /// An IPv4 or IPv6 address or CIDR range the key is accepted from (repeat, or separate
    /// with commas, for more, up to 100); any address by default
    #[arg(long = "allowed-ip", value_name = "ADDRESS_OR_CIDR", value_delimiter = ',', value_parser = trimmed)]
    pub(super) allowed_ips: Vec<String>,
    /// The environment (by default the one of the key you act with)
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    pub(super) env: Option<EnvName>,
    #[command(flatten)]
    pub(super) output: SecretOutput,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys usage`.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// How many of the last hours to show, up to 168 (a week)
    #[arg(long, value_name = "N", value_parser = hours, default_value = "24")]
    pub(super) hours: usize,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// How long the old key keeps working: now, 1h, 24h, 3d, 7d, an ISO-8601 duration or seconds
    #[arg(long, value_name = "GRACE", value_parser = grace)]
    pub(super) grace: String,
    #[command(flatten)]
    pub(super) output: SecretOutput,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys grace`.
#[derive(Debug, clap::Args)]
pub struct GraceArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// The new grace, from now: now, 1h, 24h, 3d, 7d, an ISO-8601 duration or seconds
    #[arg(long, value_name = "GRACE", value_parser = grace)]
    pub(super) grace: String,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// Revokes without asking
    #[arg(long)]
    pub(super) yes: bool,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys policy`.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// How often to rotate it: an ISO-8601 duration from P1D to P365D
    #[arg(long, value_name = "DURATION", value_parser = every, requires_all = ["grace", "secret"], required_unless_present = "clear")]
    pub(super) every: Option<String>,
    /// The grace each rotation gives the old key (at least 1h)
    #[arg(long, value_name = "GRACE", value_parser = grace, requires = "every")]
    pub(super) grace: Option<String>,
    /// The Secrets Manager secret each rotation delivers the new key to
    #[arg(long, value_name = "SECRET_ID", requires = "every")]
    pub(super) secret: Option<String>,
    /// Removes the policy
    #[arg(long, conflicts_with = "every")]
    pub(super) clear: bool,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// The options of `keyward keys ips`.
#[derive(Debug, clap::Args)]
pub struct IpsArgs {
    /// The key's id, key_...
    #[arg(value_parser = key_id)]
    pub(super) key_id: KeyId,
    /// An IPv4 or IPv6 address or CIDR range it is accepted from (repeat, or separate with
    /// commas, for more, up to 100); together they replace the list it has
    #[arg(
        long,
        value_name = "ADDRESS_OR_CIDR",
        value_delimiter = ',',
        value_parser = trimmed,
        required_unless_present = "clear"
    )]
    pub(super) set: Vec<String>,
    /// Accepts it from any address again
    #[arg(long, conflicts_with = "set")]
    pub(super) clear: bool,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

/// A value with the spaces around it gone, as after a comma in `--set "a, b"`.
fn trimmed(s: &str) -> Result<String, String> {
    Ok(s.trim().to_owned())
}

const IPS_HELP: &str =
    "The change holds from the key's next request: from an address outside the list the key is
refused (ip_not_allowed). The authorizer judges the address API Gateway saw, never
X-Forwarded-For, and only in a REQUEST authorizer. A key you act with that is itself held to
networks changes only keys held within them, into lists within them, and cannot clear one.
No key can hold itself away from the address it calls from (would_lock_out).";

const GRACE_HELP: &str =
    "A grace is now, 1h, 24h, 3d or 7d, an ISO-8601 duration such as P14D or PT36H, or a
number of seconds, up to 365 days. It never runs past an expiry the key already had.";

const GET_HELP: &str =
    "Beside the key's allowed IPs, \"seen from\" lists the addresses its accepted checks came from
this week (from its usage, GET /v1/keys/{key_id}/usage: each with the latest hour, at most 50),
to build the list from what is really used. --json prints the key's answer alone, without
them; keys usage --json has them.";

const USAGE_HELP: &str =
    "Counts reach keyward up to a minute or so after their check, so the current hour is still
filling. A key rotated to another is shown beside it; when the old key has not been presented
for an hour while the new one has, every service has switched and its grace can be cut.
--json prints the API's answer for the key alone: {\"hours\": [...], \"seen_ips\": [...]}.";

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
    pub(super) key_id: Option<KeyId>,
    /// Only entries of this action, such as key.rotated
    #[arg(long, value_name = "ACTION")]
    pub(super) action: Option<String>,
    /// How many entries to show at most (with --follow: before the new ones)
    #[arg(long, value_name = "N", value_parser = limit, default_value = "20", conflicts_with = "all")]
    pub(super) limit: usize,
    /// Shows every entry, reading every page
    #[arg(long, conflicts_with = "follow")]
    pub(super) all: bool,
    /// Keeps polling and prints new entries as they come, oldest first, until interrupted
    #[arg(long)]
    pub(super) follow: bool,
    /// How often --follow polls, in seconds
    #[arg(long, value_name = "SECONDS", value_parser = interval, default_value = "2", requires = "follow")]
    pub(super) interval: u64,
    /// The environment (by default the one of the key you act with)
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    pub(super) env: Option<EnvName>,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

const ACTIVITY_HELP: &str =
    "Entries are newest first. With --follow they are oldest first, as tail -f prints lines,
and --json prints one entry per line.";

/// `keyward env leak-policy`'s options.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS, after_long_help = long_help(LEAK_POLICY_HELP))]
pub struct LeakPolicyArgs {
    /// Sets it: revoke, rotate or notify (needs a * key); without it, shows it
    #[arg(value_name = "POLICY", value_parser = ["revoke", "rotate", "notify"])]
    pub(super) set: Option<String>,
    /// The environment (by default the one of the key you act with)
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    pub(super) env: Option<EnvName>,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) connection: Connection,
}

const LEAK_POLICY_HELP: &str =
    "What a confirmed leak of one of the environment's keys does, whoever reported it:
revoke (the default: the key dies now; the default key is rotated with no grace), rotate (the
key is rotated with no grace, and its rotation policy delivers the successor), or notify
(only the key.leaked entry and its event; the key keeps working).";

/// `keyward leaks report`'s options.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS, after_long_help = LEAKS_REPORT_HELP)]
pub struct LeakReportArgs {
    /// Where the keys were found, such as a commit's URL; recorded on each key's key.leaked
    #[arg(long, value_name = "URL")]
    pub(super) found_at: Option<String>,
    /// What kind of place they were found in, such as commit or npm; recorded with it
    #[arg(long, value_name = "SOURCE")]
    pub(super) source: Option<String>,
    #[command(flatten)]
    pub(super) target: Target,
}

const LEAKS_REPORT_HELP: &str =
    "Reads any text from stdin (a leaked .env file, a log, a paste) and reports every word in
it shaped like a secret key: `keyward leaks report --source commit < leaked.env`. Each that
is a key of this keyward has its leak recorded (key.leaked) and is revoked at once; an
environment's default key, which cannot be revoked, is rotated with no grace, and its
rotation policy, if it has one, delivers the successor. It needs no key of its own: holding
a key is the right to end it. keyward answers the same whatever the words were, so the
command says how many it sent, never which were keys. No key is printed.

Exit status: 0 when every word was reported; 1 when keyward refused the report; 2 for a usage
error (nothing shaped like a secret key on stdin); 3 when keyward could not be reached or
answered 5xx: worth retrying, since a report changes a key only once.";

/// `keyward verify`'s options.
#[derive(Debug, clap::Args)]
#[command(after_help = VERIFY_STATUS, after_long_help = VERIFY_HELP)]
pub struct VerifyArgs {
    /// A scope the key must hold (repeat for more)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(super) scopes: Vec<String>,
    /// The environment the key must belong to
    #[arg(long, value_name = "ENV", value_parser = env_name)]
    pub(super) env: Option<EnvName>,
    #[command(flatten)]
    pub(super) output: Output,
    #[command(flatten)]
    pub(super) target: Target,
}

const VERIFY_STATUS: &str =
    "Exit status: 0 only when the key is valid; 1 when it is not (its code on stderr); 2 for a
usage error; 3 when keyward could not be reached or answered 5xx.";

const VERIFY_HELP: &str =
    "Reads the key to check from stdin's first line, so that it never appears in a command
line: `keyward verify --scope orders:read < service.key`. It needs no key of its own.

Exit status: 0 only when the key is valid; 1 when it is not (its code on stderr); 2 for a
usage error; 3 when keyward could not be reached or answered 5xx.";
