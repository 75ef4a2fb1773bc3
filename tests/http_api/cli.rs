//! The `keyward` command's own errors: each is a clear message and a non-zero exit.

use std::process::Command;

use crate::support::{Backend, Server};

fn keyward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .output()
        .expect("keyward runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_commands_and_options_exit_2_and_name_what_is_wrong() {
    for (args, named) in [
        (&["nonsense"][..], "nonsense"),
        (&["env", "create"], "<NAME>"),
        (&["env", "create", "Not_Valid"], "Not_Valid"),
        (&["serve", "--store", "postgres:x"], "postgres:x"),
        (&["serve", "--listen"], "--listen"),
        (&["serve", "--colour"], "--colour"),
        (&["serve", "--schedule-every", "0"], "--schedule-every"),
        (&["serve", "--schedule-every", "soon"], "--schedule-every"),
        (
            &["serve", "--schedule-every", "5", "--no-schedule"],
            "--no-schedule",
        ),
        (&["serve", "--store", "sqlite:a.db", "--db", "b.db"], "--db"),
        (&["serve", "--secrets-file"], "--secrets-file"),
        (&["table", "create", "x"], "x"),
        (&["completions", "tcsh"], "tcsh"),
    ] {
        let (code, stdout, stderr) = keyward(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(named),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn help_version_and_completions_answer_on_stdout() {
    let (code, stdout, _) = keyward(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "env", "table", "completions", "Exit status"] {
        assert!(stdout.contains(word), "{word}: {stdout}");
    }
    for command in [
        &["serve", "--help"][..],
        &["env", "create", "--help"],
        &["table", "create", "--help"],
    ] {
        let (code, stdout, _) = keyward(command);
        assert_eq!(code, 0, "{command:?}");
        assert!(stdout.contains("Usage: keyward"), "{command:?}: {stdout}");
    }
    let (code, stdout, _) = keyward(&["--version"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, concat!("keyward ", env!("CARGO_PKG_VERSION")))
    );
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, _) = keyward(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        assert!(
            stdout.contains("keyward") && stdout.contains("schedule-every"),
            "{shell}: {stdout}"
        );
    }
}

#[test]
fn an_environment_is_created_once_and_a_second_try_fails_clearly() {
    let server = Server::start(Backend::Sqlite);
    let out = server.keyward(&["env", "create", "development"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the environment development exists already"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no key is printed for an environment that was not made"
    );
    let made = server.keyward(&["env", "create", "staging"]);
    assert!(made.status.success());
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(
        stdout.contains("Created the environment staging") && stdout.contains("kw_sk_staging_"),
        "{stdout}"
    );
}

#[test]
fn a_store_that_cannot_be_opened_fails_with_its_cause() {
    let (code, _, stderr) = keyward(&[
        "env",
        "create",
        "x",
        "--db",
        "/nonexistent-folder/keyward.db",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}

#[test]
fn a_second_serve_of_one_file_stops_at_once_and_env_create_runs_beside_the_first() {
    let server = Server::start(Backend::Sqlite);
    let second = server.keyward(&["serve", "--listen", "127.0.0.1:0", "--no-schedule"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another process serves"), "{stderr}");
    let staging = server.create_environment("staging");
    let listed = server.call("GET", "/v1/environments/staging/keys", &staging, None);
    assert_eq!(listed.status, 200, "{listed:?}");
}
