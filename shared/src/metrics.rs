//! Metrics of key checks for operators, as CloudWatch Embedded Metric Format lines on standard
//! output: Lambda sends them to CloudWatch Logs, which turns them into metrics, so a check makes
//! no call of its own to publish them.
//!
//! Each check writes one line: `Checks` (1) and `CheckLatency` (milliseconds) by `FunctionName`,
//! by `FunctionName` and `Outcome`, and by `FunctionName`, `Environment` and `Outcome`; and
//! `Refused` (1 or 0) by `FunctionName`, which the template's alarm watches. `Environment` is only ever a known key's
//! environment or the authorizer's own, never a name the caller sent, so that a caller cannot
//! make new metrics (each costs money) by presenting made-up keys.

use std::io::Write;
use std::sync::OnceLock;

use crate::check::Outcome;
use crate::domain::{EnvName, Timestamp};

/// The CloudWatch namespace of keyward's metrics.
pub const NAMESPACE: &str = "keyward";
/// The dimension that names the function (the Lambda function's name), so that two stacks'
/// metrics, and the two authorizers', stay apart.
pub const FUNCTION_DIMENSION: &str = "FunctionName";
/// One per check.
pub const CHECKS: &str = "Checks";
/// How long the check took, from the event to the answer, in milliseconds.
pub const CHECK_LATENCY: &str = "CheckLatency";
/// 1 for a check that did not let the key through, whatever the reason, else 0.
pub const REFUSED: &str = "Refused";
/// The `Environment` of a check whose key is unknown and whose checker serves any environment.
pub const UNKNOWN_ENVIRONMENT: &str = "unknown";

/// One check, as a metric.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// What came of it, named by its code (a `/v1/verify` code, `missing` or
    /// `unlisted_route`); `None` when the store could not be read, named `error`.
    pub outcome: Option<Outcome>,
    /// The environment of the key that was found, else of the authorizer.
    pub environment: Option<&'a EnvName>,
    /// How long it took.
    pub latency: std::time::Duration,
}

/// The metric directives of every line, the same for every check.
const DIRECTIVES: &str = concat!(
    r#"[{"Namespace":"keyward","Dimensions":[["FunctionName"],["FunctionName","Outcome"],"#,
    r#"["FunctionName","Environment","Outcome"]],"#,
    r#""Metrics":[{"Name":"Checks","Unit":"Count"},{"Name":"CheckLatency","Unit":"Milliseconds"}]},"#,
    r#"{"Namespace":"keyward","Dimensions":[["FunctionName"]],"#,
    r#""Metrics":[{"Name":"Refused","Unit":"Count"}]}]"#,
);

/// The line's first member, the function's name as JSON, which a process works out once.
fn function_member(function: &str) -> String {
    format!(
        "\"{FUNCTION_DIMENSION}\":{}",
        serde_json::Value::from(function)
    )
}

/// The EMF line of `check` made by `function` at `at`.
pub fn line(function: &str, check: &Check<'_>, at: Timestamp) -> String {
    line_after(&function_member(function), check, at)
}

/// The line, written with `format!` rather than through a JSON tree, since it is on every
/// check's path: the outcome is one of a fixed set of snake_case words and an environment
/// name holds only `a-z`, `0-9` and `-`, so neither needs escaping.
fn line_after(function: &str, check: &Check<'_>, at: Timestamp) -> String {
    let environment = check
        .environment
        .map_or(UNKNOWN_ENVIRONMENT, EnvName::as_str);
    format!(
        r#"{{{function},"Outcome":"{}","Environment":"{environment}","{CHECKS}":1,"{CHECK_LATENCY}":{},"{REFUSED}":{},"_aws":{{"Timestamp":{},"CloudWatchMetrics":{DIRECTIVES}}}}}"#,
        check.outcome.map_or("error", Outcome::code),
        check.latency.as_secs_f64() * 1000.0,
        u8::from(!check.outcome.is_some_and(Outcome::accepted)),
        at.timestamp_millis(),
    )
}

/// Writes the line of `check` to standard output when running on Lambda (the function's name
/// is in `AWS_LAMBDA_FUNCTION_NAME`, which is also its `FunctionName`); elsewhere, such as in
/// `keyward serve`, it writes nothing.
pub fn publish(check: &Check<'_>, at: Timestamp) {
    static FUNCTION: OnceLock<Option<String>> = OnceLock::new();
    let function = FUNCTION.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .map(|f| function_member(&f))
    });
    if let Some(function) = function {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", line_after(function, check, at));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::Verdict;

    #[test]
    fn a_line_is_embedded_metric_format_with_bounded_dimensions() {
        let production = EnvName::parse("production").unwrap();
        let at: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        let check = Check {
            outcome: Some(Outcome::Checked(Verdict::Revoked)),
            environment: Some(&production),
            latency: std::time::Duration::from_micros(1500),
        };
        let line: serde_json::Value =
            serde_json::from_str(&line("authorizer", &check, at)).unwrap();
        assert_eq!(line["_aws"]["Timestamp"], at.timestamp_millis());
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            (
                &line[FUNCTION_DIMENSION],
                &line["Outcome"],
                &line["Environment"]
            ),
            (
                &json!("authorizer"),
                &json!("revoked"),
                &json!("production")
            )
        );
        assert_eq!(
            (&line[CHECKS], &line[CHECK_LATENCY], &line[REFUSED]),
            (&json!(1), &json!(1.5), &json!(1))
        );
        let unknown = Check {
            outcome: Some(Outcome::Checked(Verdict::Valid)),
            environment: None,
            latency: std::time::Duration::ZERO,
        };
        let line: serde_json::Value =
            serde_json::from_str(&super::line("verify", &unknown, at)).unwrap();
        assert_eq!(line["Environment"], UNKNOWN_ENVIRONMENT);
        assert_eq!(line[REFUSED], 0);
        let directives = &line["_aws"]["CloudWatchMetrics"];
        assert_eq!(
            directives[0]["Dimensions"],
            json!([
                [FUNCTION_DIMENSION],
                [FUNCTION_DIMENSION, "Outcome"],
                [FUNCTION_DIMENSION, "Environment", "Outcome"]
            ])
        );
        let names: Vec<&str> = directives
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["Metrics"].as_array().unwrap())
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [CHECKS, CHECK_LATENCY, REFUSED]);
        assert!(
            directives
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["Namespace"] == NAMESPACE)
        );
        let quoted: serde_json::Value =
            serde_json::from_str(&super::line("a \"quoted\" name", &unknown, at)).unwrap();
        assert_eq!(quoted[FUNCTION_DIMENSION], "a \"quoted\" name");
    }
}
