//! `keyward keys`: one function for each of its commands.

use std::io::IsTerminal;

use chrono::Utc;
use hyper::Method;
use keyward::domain::KeyId;
use serde_json::{Value, json};

use super::args::{
    CreateArgs, GetArgs, GraceArgs, IpsArgs, KeysCommand, KindArg, ListArgs, PolicyArgs,
    RevokeArgs, RotateArgs, UsageArgs,
};
use super::confirm;
use super::paging::{environment, not_keyward, on_key, pages};
use super::print::{
    print_json, print_key, print_list, print_with_secret, remove_unused, secret_file,
};
use crate::api::Failure;
use crate::show;

/// Runs a `keyward keys` command.
pub async fn keys(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::List(args) => list(args).await,
        KeysCommand::Create(args) => create(args).await,
        KeysCommand::Get(args) => get(args).await,
        KeysCommand::Usage(args) => usage(args).await,
        KeysCommand::Rotate(args) => rotate(args).await,
        KeysCommand::Grace(args) => grace(args).await,
        KeysCommand::Revoke(args) => revoke(args).await,
        KeysCommand::Policy(args) => policy(args).await,
        KeysCommand::Ips(args) => ips(args).await,
    }
}

async fn list(args: ListArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let env = environment(args.env, &api)?;
    let path = format!("/v1/environments/{env}/keys");
    let want = (!args.all).then_some(args.limit);
    let (keys, next) = pages(&api, &path, "keys", want).await?;
    print_list(
        "keys",
        keys,
        next,
        args.output,
        &show::KEY_COLUMNS,
        show::key_row,
    );
    Ok(())
}

async fn create(args: CreateArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let env = environment(args.env, &api)?;
    let output = args.output;
    let file = output.secret_file.as_deref().map(secret_file).transpose()?;
    let mut body = json!({
        "name": args.name,
        "kind": match args.kind { KindArg::Secret => "secret", KindArg::Publishable => "publishable" },
        "scopes": args.scopes,
    });
    if let Some(expires_at) = args.expires_at {
        body["expires_at"] = json!(expires_at);
    }
    if let (Some(every), Some(grace), Some(secret)) =
        (args.rotate_every, args.rotate_grace, args.rotate_secret)
    {
        body["rotation_policy"] =
            json!({"every": every, "grace_period": grace, "secret_id": secret});
    }
    if !args.allowed_ips.is_empty() {
        body["allowed_ips"] = json!(args.allowed_ips);
    }
    let path = format!("/v1/environments/{env}/keys");
    let answer = api.send(Method::POST, &path, Some(&body)).await;
    let answer = answer.inspect_err(|_| remove_unused(&output))?;
    print_with_secret(&answer, &api.key_prefix(), &output, file, |now| {
        show::key(&answer["key"], now)
    })
}

async fn get(args: GetArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let mut answer = on_key(&api, Method::GET, &args.key_id, "", None).await?;
    if !args.output.json {
        // The addresses the key was seen from come with its usage, and are shown beside its
        // allowed IPs, to build the list from.
        // The key was read: a usage that cannot be says so in its line, not in a failure.
        let seen = match on_key(&api, Method::GET, &args.key_id, "/usage", None).await {
            Ok(usage) => usage.get("seen_ips").cloned().unwrap_or_default(),
            Err(failure) => Value::String(format!("could not be read: {failure}")),
        };
        if let Some(key) = answer["key"].as_object_mut() {
            key.insert("seen_ips".to_owned(), seen);
        }
    }
    print_key(&answer, args.output)
}

async fn usage(args: UsageArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let key_id = &args.key_id;
    let usage = on_key(&api, Method::GET, key_id, "/usage", None).await?;
    if !usage["hours"].is_array() {
        return Err(not_keyward("hours"));
    }
    if args.output.json {
        print_json(&usage);
        return Ok(());
    }
    let key = on_key(&api, Method::GET, key_id, "", None).await?;
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
        show::usage(&key["key"], &usage, successor, args.hours, Utc::now())
    );
    Ok(())
}

async fn rotate(args: RotateArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let output = args.output;
    let file = output.secret_file.as_deref().map(secret_file).transpose()?;
    let body = json!({"grace_period": args.grace});
    let answer = on_key(&api, Method::POST, &args.key_id, "/rotate", Some(body)).await;
    let answer = answer.inspect_err(|_| remove_unused(&output))?;
    print_with_secret(&answer, &api.key_prefix(), &output, file, |now| {
        format!(
            "{}{}",
            show::key(&answer["key"], now),
            show::previous(&answer["previous"], now)
        )
    })
}

async fn grace(args: GraceArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let body = json!({"grace_period": args.grace});
    let answer = on_key(&api, Method::PUT, &args.key_id, "/grace-period", Some(body)).await?;
    print_key(&answer, args.output)
}

async fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let key_id = &args.key_id;
    if !args.yes {
        if args.connection.api_key_stdin || !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(
                "revoking without a terminal to ask on needs --yes: the key fails on its very next request".to_owned(),
            ));
        }
        let named = match on_key(&api, Method::GET, key_id, "", None).await {
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
    let answer = on_key(&api, Method::POST, key_id, "/revoke", None).await?;
    print_key(&answer, args.output)
}

async fn policy(args: PolicyArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let policy = match (args.clear, args.every, args.grace, args.secret) {
        (false, Some(every), Some(grace), Some(secret)) => {
            json!({"every": every, "grace_period": grace, "secret_id": secret})
        }
        _ => Value::Null,
    };
    let body = json!({"rotation_policy": policy});
    let answer = on_key(
        &api,
        Method::PUT,
        &args.key_id,
        "/rotation-policy",
        Some(body),
    )
    .await?;
    print_key(&answer, args.output)
}

async fn ips(args: IpsArgs) -> Result<(), Failure> {
    let api = args.connection.open()?;
    let body = json!({"allowed_ips": args.set});
    let answer = on_key(&api, Method::PUT, &args.key_id, "/allowed-ips", Some(body)).await?;
    print_key(&answer, args.output)
}
