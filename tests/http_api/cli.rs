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
fn bad_commands_and_options_exit_2_with_the_usage() {
    for args in [
        &["nonsense"][..],
        &["env", "create"],
        &["env", "create", "Not_Valid"],
        &["serve", "--store", "postgres:x"],
        &["serve", "--listen"],
        &["serve", "--colour"],
        &["serve", "--schedule-every", "0"],
        &["serve", "--schedule-every", "soon"],
        &["serve", "--secrets-file"],
        &["table", "create", "x"],
    ] {
        let (code, _, stderr) = keyward(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("keyward: ") && stderr.contains("usage:"),
            "{args:?}: {stderr}"
        );
    }
    let (code, stdout, _) = keyward(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("keyward serve"));
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
