//! Logging for every binary: Lambda's log level and format variables, as the runtime's own
//! default subscriber reads them, with one rule added so that no level reveals a secret.
//!
//! At `debug` and `trace`, the AWS SDK logs whole request bodies (`PutSecretValue`'s secret
//! among them), and the Lambda runtime logs every raw event (an `Authorization` header, a
//! key sent to `/v1/verify`). So only keyward's own crates, which never log a secret, follow
//! `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` below `info`; every other crate stays at `info` or
//! above, whatever those variables say. A crate that is not on the list is held back, so a
//! new dependency cannot start leaking.

use std::str::FromStr;

use lambda_http::tracing::subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use lambda_http::tracing::subscriber::fmt::MakeWriter;
use lambda_http::tracing::subscriber::layer::SubscriberExt;
use lambda_http::tracing::subscriber::util::SubscriberInitExt;
use lambda_http::tracing::subscriber::{Layer, fmt, registry};
use tracing::{Level, Metadata};

/// The crates whose log lines may go below `info`: keyward's own, which never log a secret.
const OWN_CRATES: &[&str] = &[
    "keyward",
    "keyward_cli",
    "activity_publisher",
    "authorizer",
    "change_grace_period",
    "create_key",
    "environment_activity",
    "get_key",
    "hello",
    "key_activity",
    "key_usage",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "scheduled_rotation",
    "set_allowed_ips",
    "set_rotation_policy",
    "verify_key",
];

/// Whether a span or event may be logged at all, whatever level was asked for: anything at
/// `info` or above, and anything from keyward's own crates.
pub fn may_log(metadata: &Metadata<'_>) -> bool {
    if *metadata.level() <= Level::INFO {
        return true;
    }
    let krate = metadata.target().split("::").next().unwrap_or_default();
    OWN_CRATES.contains(&krate)
}

/// Logging for a Lambda function: to standard output, where Lambda collects it.
pub fn init() {
    init_with_writer(std::io::stdout);
}

/// Logging to `writer`. The level is `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else `info`,
/// with `RUST_LOG`'s per-target directives; `AWS_LAMBDA_LOG_FORMAT=JSON` writes JSON lines.
/// Only the first call in a process takes effect.
pub fn init_with_writer<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    let default =
        LevelFilter::from_str(level.as_deref().unwrap_or("info")).unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .from_env_lossy();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let lines = fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(writer);
    let lines = if json {
        lines.json().boxed()
    } else {
        lines.boxed()
    };
    let _ = registry()
        .with(filter)
        .with(filter_fn(may_log))
        .with(lines)
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use lambda_http::tracing::subscriber::fmt::writer::MakeWriterExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn other_crates_stay_at_info_while_keyward_follows_the_asked_level() {
        let captured = Captured::default();
        let writer = {
            let c = captured.clone();
            move || c.clone()
        };
        let subscriber = registry()
            .with(LevelFilter::TRACE)
            .with(filter_fn(may_log))
            .with(
                fmt::layer()
                    .with_writer(writer.with_max_level(Level::TRACE))
                    .without_time(),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "wire body one");
            tracing::debug!(target: "hyper_util::client", "wire body two");
            tracing::trace!(target: "lambda_runtime::layers::api_response", "raw event three");
            tracing::trace!(target: "some_new_dependency", "anything four");
            tracing::info!(target: "aws_smithy_runtime", "an info line");
            tracing::trace!(target: "keyward::store", "keyward's own trace");
            tracing::debug!(target: "create_key", "a function's own debug");
        });
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for held_back in ["one", "two", "three", "four"] {
            assert!(!logged.contains(held_back), "{held_back}: {logged}");
        }
        for kept in [
            "an info line",
            "keyward's own trace",
            "a function's own debug",
        ] {
            assert!(logged.contains(kept), "{kept}: {logged}");
        }
    }
}
