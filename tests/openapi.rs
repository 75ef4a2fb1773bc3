//! `openapi.yaml` against the code: the JSON that is served says what the YAML says, its
//! operations are exactly the routes of `keyward serve` and of the template, and every error
//! code the API's code can give is listed in it. (What the server answers, route by route, is
//! held against it by the HTTP tests, through `tests/http_api/contract.rs`, and by
//! schemathesis in `./scripts/test`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use keyward::domain::{Action, ActorType, Kind, Status, Verdict};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn document() -> Value {
    let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
}

/// The `(METHOD, path)` of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[test]
fn the_served_json_says_what_the_yaml_says() {
    let served: Value = serde_json::from_str(console::OPENAPI_JSON).unwrap();
    assert!(
        served == document(),
        "openapi.json is not openapi.yaml: run ./scripts/openapi-json"
    );
}

#[test]
fn the_operations_are_exactly_the_routes_of_serve_and_of_the_template() {
    let serve: BTreeSet<(String, String)> = keyward_cli::ROUTES
        .iter()
        .map(|(method, path, _, _)| (method.to_string(), (*path).to_owned()))
        .collect();
    assert_eq!(operations(&document()), serve);

    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    let template: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut deployed = BTreeSet::new();
    for resource in template["Resources"].as_mapping().unwrap().values() {
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|event| event["Type"] == "Api")
        {
            let path = event["Properties"]["Path"].as_str().unwrap();
            if path.starts_with("/v1/") {
                let method = event["Properties"]["Method"].as_str().unwrap();
                deployed.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    assert_eq!(operations(&document()), deployed);
}

#[test]
fn each_operation_says_who_may_call_it() {
    let document = document();
    let scopes = ["keys:read", "keys:write", "activity:read"];
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let public = ["/v1/verify", "/v1/openapi.json"].contains(&path.as_str());
        if public {
            assert_eq!(
                operation["security"],
                serde_json::json!([]),
                "{method} {path}"
            );
            assert!(operation["x-keyward-scope"].is_null(), "{method} {path}");
        } else {
            assert!(
                operation["security"].is_null(),
                "{method} {path}: the default"
            );
            let scope = operation["x-keyward-scope"].as_str().unwrap_or_default();
            assert!(scopes.contains(&scope), "{method} {path}: {scope:?}");
            for status in ["401", "403"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} needs a key, so it documents {status}"
                );
            }
        }
    }
}

/// The string literal that starts at `text`'s first `"`, if it is a snake_case code.
fn first_code(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let end = start + text[start..].find('"')?;
    let code = &text[start..end];
    let snake = !code.is_empty()
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && !code.starts_with('_');
    snake.then_some(code)
}

/// Every error code in the API's code: the first string of each `ApiError` constructor,
/// and each code that `error.rs` maps a domain error to. Test modules are left out, and so
/// are the authorizer and the example backend behind it, which are not routes of `/v1`.
fn codes_in_code() -> BTreeSet<String> {
    let mut files = vec![root().join("cli/src/lib.rs")];
    for dir in ["shared/src/http", "functions"] {
        let mut stack = vec![root().join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let not_api = ["hello", "authorizer"].iter().any(|f| path.ends_with(f));
                if path.is_dir() && !not_api {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
    }
    let mut codes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let constructors = [
            "new(",
            "bad_request(",
            "unauthorized(",
            "forbidden(",
            "not_found(",
        ];
        for call in constructors
            .iter()
            .flat_map(|c| [format!("ApiError::{c}"), format!("Self::{c}")])
        {
            for (at, _) in text.match_indices(&call) {
                let args = &text[at + call.len()..];
                let args = &args[..args.find(')').unwrap_or(args.len())];
                codes.extend(first_code(args).map(str::to_owned));
            }
        }
        if file.ends_with("shared/src/http/error.rs") {
            for (at, _) in text.match_indices("=> \"") {
                codes.extend(first_code(&text[at..]).map(str::to_owned));
            }
        }
    }
    codes
}

/// Every code that some response of the document lists.
fn documented_codes(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(codes) = map
                .get("error")
                .and_then(|e| e["properties"]["code"]["enum"].as_array())
            {
                found.extend(codes.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            map.values().for_each(|v| documented_codes(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| documented_codes(v, found)),
        _ => {}
    }
}

#[test]
fn every_error_code_the_code_can_give_is_in_the_document() {
    let in_code = codes_in_code();
    for code in [
        "invalid_scope",
        "secret_in_use",
        "key_not_found",
        "route_not_found",
    ] {
        assert!(in_code.contains(code), "the scan finds {code}: {in_code:?}");
    }
    let mut documented = BTreeSet::new();
    documented_codes(&document(), &mut documented);
    let description = document()["info"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    // Only a scheduled rotation of a key without a policy meets this; no route can.
    let no_route = ["no_rotation_policy"];
    let missing: Vec<&String> = in_code
        .iter()
        .filter(|code| !documented.contains(*code) && !no_route.contains(&code.as_str()))
        .filter(|code| !description.contains(&format!("`{}", code_with_status(code))))
        .collect();
    assert!(missing.is_empty(), "not in openapi.yaml: {missing:?}");
}

/// How the document's description names the router's own answers.
fn code_with_status(code: &str) -> String {
    match code {
        "route_not_found" => "404 route_not_found".to_owned(),
        "method_not_allowed" => "405 method_not_allowed".to_owned(),
        other => other.to_owned(),
    }
}

/// Found by schemathesis: the document let `?cursor=` be any string, and the server refused
/// the empty one (`400 invalid_cursor`, as it should). Each cursor is now the id it is, so
/// that a generator sends only cursors that can be valid.
#[test]
fn a_cursor_is_an_id_and_never_empty() {
    let document = document();
    for (name, pattern) in [
        ("KeyCursor", "^key_[A-Za-z0-9]{22}$"),
        ("ActivityCursor", "^act_[A-Za-z0-9]{22}$"),
    ] {
        let parameter = &document["components"]["parameters"][name];
        let schema = parameter["schema"]["$ref"].as_str().unwrap();
        let schema = &document["components"]["schemas"][schema.rsplit('/').next().unwrap()];
        assert_eq!(schema["pattern"], pattern, "{name}");
    }
}

/// The strings of an enum schema of the document.
fn schema_enum(document: &Value, pointer: &str) -> BTreeSet<String> {
    document
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{pointer} is an enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Every value of each of the domain's enums that the API shows, so that a new variant
/// fails here until the document has it. The `match`es make the lists complete: a new
/// variant does not compile until it is added to them.
#[test]
fn the_documents_enums_are_the_domains() {
    let document = document();
    let names = |values: Vec<Value>| -> BTreeSet<String> {
        values
            .into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let actors = [
        ActorType::ApiKey,
        ActorType::Operator,
        ActorType::Schedule,
        ActorType::System,
    ];
    for actor in actors {
        match actor {
            ActorType::ApiKey | ActorType::Operator | ActorType::Schedule | ActorType::System => {}
        }
    }
    assert_eq!(
        schema_enum(&document, "/components/schemas/Actor/properties/type/enum"),
        names(actors.map(|a| serde_json::to_value(a).unwrap()).to_vec())
    );
    let statuses = [
        Status::Active,
        Status::InGrace,
        Status::Expired,
        Status::Revoked,
    ];
    for status in statuses {
        match status {
            Status::Active | Status::InGrace | Status::Expired | Status::Revoked => {}
        }
    }
    assert_eq!(
        schema_enum(&document, "/components/schemas/Status/enum"),
        names(statuses.map(|s| serde_json::to_value(s).unwrap()).to_vec())
    );
    let kinds = [Kind::Secret, Kind::Publishable];
    for kind in kinds {
        match kind {
            Kind::Secret | Kind::Publishable => {}
        }
    }
    assert_eq!(
        schema_enum(&document, "/components/schemas/Kind/enum"),
        names(kinds.map(|k| serde_json::to_value(k).unwrap()).to_vec())
    );
    let verdicts = [
        Verdict::Valid,
        Verdict::NotFound,
        Verdict::Malformed,
        Verdict::Expired,
        Verdict::Revoked,
        Verdict::WrongEnvironment,
        Verdict::InsufficientScope,
    ];
    for verdict in verdicts {
        match verdict {
            Verdict::Valid
            | Verdict::NotFound
            | Verdict::Malformed
            | Verdict::Expired
            | Verdict::Revoked
            | Verdict::WrongEnvironment
            | Verdict::InsufficientScope => {}
        }
    }
    assert_eq!(
        schema_enum(
            &document,
            "/components/schemas/Verdict/properties/code/enum"
        ),
        verdicts.iter().map(|v| v.code().to_owned()).collect()
    );
    let actions = schema_enum(&document, "/components/schemas/Action/enum");
    let all = Action::ALL;
    for action in all {
        match action {
            Action::Created
            | Action::Rotated
            | Action::GracePeriodChanged
            | Action::Revoked
            | Action::Expired
            | Action::Expiring
            | Action::RotationPolicyChanged
            | Action::SecretDelivered
            | Action::SecretDeliveryFailed
            | Action::GraceIdle => {}
        }
    }
    assert_eq!(actions, all.iter().map(|a| a.as_str().to_owned()).collect());
}
