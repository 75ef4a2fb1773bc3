//! `keyward keys`, `keyward activity` and `keyward verify`: the HTTP API from a terminal or a
//! script. Each command answers a table or a key's fields on stdout, or the API's own JSON
//! with `--json`; errors go to stderr, and the exit status says which class of failure it was.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Duration;

use chrono::Utc;
use hyper::Method;
use serde_json::{Value, json};

use crate::api::{Api, Failure, encode};
use crate::show;

mod args;
mod keys;
mod paging;
mod print;

pub use args::*;
pub use keys::keys;

use args::first_line_of_stdin;
use paging::{environment, not_keyward, page_url, pages};
use print::{print_json, print_list};

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

/// Runs `keyward env leak-policy`: shows the environment's leak policy, or sets it.
pub async fn leak_policy(args: LeakPolicyArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let env = environment(args.env, &api)?;
    let path = format!("/v1/environments/{env}/leak-policy");
    let answer = match &args.set {
        Some(policy) => {
            let body = json!({ "leak_policy": policy });
            api.send(Method::PUT, &path, Some(&body)).await?
        }
        None => api.send(Method::GET, &path, None).await?,
    };
    let Some(policy) = answer["leak_policy"].as_str() else {
        return Err(not_keyward("leak_policy"));
    };
    if args.output.json {
        print_json(&answer);
        return Ok(());
    }
    let does = match policy {
        "revoke" => "revoked at once (a default key is rotated with no grace)",
        "rotate" => "rotated with no grace; its rotation policy delivers the successor",
        "notify" => "recorded as key.leaked, and it keeps working",
        _ => "handled as keyward says",
    };
    println!("{env}: {policy}. A key reported leaked is {does}.");
    Ok(())
}

/// The most `keyward leaks report` reads from stdin.
const MAX_LEAKED_TEXT: u64 = 16 * 1024 * 1024;

/// Runs `keyward leaks report`: every word of stdin shaped like a secret key, sent in reports
/// of at most the 1,000 strings that one takes.
pub async fn report_leaks(args: LeakReportArgs) -> Result<(), Failure> {
    let api = Api::new(&args.target.url, None, args.target.insecure_http)?;
    if std::io::stdin().is_terminal() {
        eprintln!("Paste the text that holds the keys, then press Ctrl-D:");
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_LEAKED_TEXT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
    if bytes.len() as u64 > MAX_LEAKED_TEXT {
        return Err(Failure::Usage(
            "stdin holds more than 16 MiB: report it in parts".to_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    let format = api.send(Method::GET, "/v1/token-format", None).await?;
    let prefix = format["prefix"]
        .as_str()
        .and_then(|p| keyward::key_prefix(Some(p)).ok())
        .ok_or_else(|| not_keyward("prefix"))?;
    let secrets = crate::api::secret_keys_in(&text, &prefix);
    if secrets.is_empty() {
        return Err(Failure::Usage(format!(
            "nothing on stdin is shaped like a secret key of this keyward ({}_sk_...)",
            prefix.as_str()
        )));
    }
    for batch in secrets.chunks(keyward::leak::MAX_SECRETS) {
        let body = json!({"secrets": batch, "url": args.found_at, "source": args.source});
        api.send(Method::POST, "/v1/leaks/report", Some(&body))
            .await?;
    }
    println!(
        "Reported {} word{} shaped like a secret key. Each that is a key of this keyward is \
         ended now, and its activity says key.leaked.",
        secrets.len(),
        if secrets.len() == 1 { "" } else { "s" }
    );
    Ok(())
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
}
