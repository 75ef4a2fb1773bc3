//! JSON request bodies, and what is wrong with one, told from the structure of the failure
//! rather than from the text of serde's messages: the body's fields are handed to the
//! derived `Deserialize` through a deserializer whose error type records which of serde's
//! hooks fired (`missing_field`, `unknown_field`, or a field whose value did not fit).

use std::fmt;

use lambda_http::Request;
use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

use super::{ApiError, ErrorCode, MAX_BODY_BYTES};

/// Parses a JSON object body into `T`, whose fields should be plain strings, lists and JSON
/// values so that the domain can say precisely what is wrong. `shape` describes the body.
pub fn json_body<T: DeserializeOwned>(req: &Request, shape: &str) -> Result<T, ApiError> {
    json_body_within(req, shape, MAX_BODY_BYTES)
}

/// [`json_body`] for the one route that takes more than [`MAX_BODY_BYTES`]: a leak report's
/// list of secrets, up to `limit` bytes.
pub fn json_body_within<T: DeserializeOwned>(
    req: &Request,
    shape: &str,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = req.body().as_ref();
    if bytes.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON; expected {shape}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a JSON object; expected {shape}"),
        ));
    };
    let fields = object.into_iter().map(|(name, value)| {
        let field = Field {
            name: name.clone(),
            value,
        };
        (name, field)
    });
    T::deserialize(MapDeserializer::new(fields)).map_err(|e| e.into_api_error(shape))
}

/// What was wrong with a body's fields, as serde's hooks reported it.
#[derive(Debug)]
enum BodyError {
    /// A required field is absent.
    Missing(&'static str),
    /// A field that the body does not take. Its name is not kept: it is the caller's text,
    /// and a message never repeats what the caller sent.
    Unknown,
    /// A field whose value has the wrong type, named when it is known which. Only a field
    /// that the body declares gets this far (an unknown one fails at its name, or is
    /// ignored), so the name is one of the API's own.
    Invalid(Option<String>),
}

impl BodyError {
    /// The `400` that tells the caller what is wrong, against the body's `shape`.
    fn into_api_error(self, shape: &str) -> ApiError {
        match self {
            Self::Missing(field) => ApiError::new(
                ErrorCode::MissingField,
                format!("the field {field} is required; expected {shape}"),
            ),
            Self::Unknown => ApiError::new(
                ErrorCode::UnknownField,
                format!("a field is not part of this request; expected {shape}"),
            ),
            Self::Invalid(field) => {
                let name = field.map_or_else(
                    || "a field".to_owned(),
                    |field| format!("the field {field}"),
                );
                ApiError::new(
                    ErrorCode::InvalidField,
                    format!("{name} has the wrong type; expected {shape}"),
                )
            }
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(field) => write!(f, "missing field {field}"),
            Self::Unknown => f.write_str("unknown field"),
            Self::Invalid(_) => f.write_str("a field has the wrong type"),
        }
    }
}

impl std::error::Error for BodyError {}

impl serde::de::Error for BodyError {
    /// Any other failure, such as one from a hand-written `Deserialize`: which field is not
    /// known here, and serde's text may hold the caller's value, so it is dropped.
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self::Invalid(None)
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing(field)
    }

    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        Self::Unknown
    }
}

/// One field of the body: its value, deserialized as `serde_json` would, with any failure
/// inside it reported as that field's.
struct Field {
    /// The field's name, to say which field was wrong.
    name: String,
    /// Its value as the body has it.
    value: Value,
}

/// What a failure inside the field `name` is reported as.
fn invalid(name: String) -> impl FnOnce(serde_json::Error) -> BodyError {
    move |_| BodyError::Invalid(Some(name))
}

impl IntoDeserializer<'_, BodyError> for Field {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Forwards each `deserialize_*` method that takes only a visitor to the JSON value's own.
macro_rules! forward_to_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BodyError> {
                self.value.$method(visitor).map_err(invalid(self.name))
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Field {
    type Error = BodyError;

    forward_to_value! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        let field = self.name;
        self.value
            .deserialize_unit_struct(name, visitor)
            .map_err(invalid(field))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        let field = self.name;
        self.value
            .deserialize_newtype_struct(name, visitor)
            .map_err(invalid(field))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        self.value
            .deserialize_tuple(len, visitor)
            .map_err(invalid(self.name))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        let field = self.name;
        self.value
            .deserialize_tuple_struct(name, len, visitor)
            .map_err(invalid(field))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        let field = self.name;
        self.value
            .deserialize_struct(name, fields, visitor)
            .map_err(invalid(field))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        let field = self.name;
        self.value
            .deserialize_enum(name, variants, visitor)
            .map_err(invalid(field))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// A key as a caller might paste it where it does not belong.
    const KEY: &str = "kw_sk_production_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zABCDEF";

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        scopes: Option<Vec<String>>,
        policy: Option<Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Grace {
        grace_period: Value,
    }

    fn request(body: &str) -> Request {
        lambda_http::http::Request::builder()
            .body(lambda_http::Body::Text(body.to_owned()))
            .unwrap()
    }

    fn error(body: &str) -> (&'static str, String) {
        let e = json_body::<Body>(&request(body), "{...}").unwrap_err();
        let code = e.code();
        let response = e.into_response();
        let message: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        (
            code,
            message["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn each_kind_of_wrong_field_is_told_from_the_hook_that_fired() {
        let body = r#"{"name": "a", "scopes": null, "policy": {"x": [1]}}"#;
        let ok: Body = json_body(&request(body), "{...}").unwrap();
        assert_eq!((ok.name.as_str(), ok.scopes), ("a", None));
        assert_eq!(ok.policy, Some(serde_json::json!({"x": [1]})));
        let absent: Body = json_body(&request(r#"{"name": "a"}"#), "{...}").unwrap();
        assert_eq!((absent.scopes, absent.policy), (None, None));
        let null: Grace = json_body(&request(r#"{"grace_period": null}"#), "{...}").unwrap();
        assert_eq!(null.grace_period, Value::Null);
        let missing = json_body::<Grace>(&request("{}"), "{...}").unwrap_err();
        assert_eq!(missing.code(), "missing_field");
        let cases = [
            (
                r#"{"scopes": []}"#,
                "missing_field",
                "the field name is required",
            ),
            (
                r#"{"name": "a", "nmae": 1}"#,
                "unknown_field",
                "a field is not part",
            ),
            (
                r#"{"name": "a", "": 1}"#,
                "unknown_field",
                "a field is not part",
            ),
            (
                r#"{"name": 7}"#,
                "invalid_field",
                "the field name has the wrong type",
            ),
            (
                r#"{"name": null}"#,
                "invalid_field",
                "the field name has the wrong type",
            ),
            (
                r#"{"name": "a", "scopes": ["x", 2]}"#,
                "invalid_field",
                "the field scopes has",
            ),
            (
                r#"{"name": "a", "scopes": [["x"]]}"#,
                "invalid_field",
                "the field scopes has",
            ),
            (r#"[1]"#, "invalid_json", "not a JSON object"),
            (r#"{"name": "a""#, "invalid_json", "not valid JSON"),
        ];
        for (body, code, start) in cases {
            let (got, message) = error(body);
            assert_eq!(got, code, "{body}");
            assert!(message.contains(start), "{body}: {message}");
        }
    }

    #[test]
    fn no_message_repeats_what_the_caller_sent() {
        let lower = "kw_sk_production_".repeat(2);
        for body in [
            format!(r#"{{"name": "a", "{KEY}": 1}}"#),
            format!(r#"{{"name": "a", "{lower}": 1}}"#),
            format!(r#"{{"name": ["{KEY}"]}}"#),
            format!(r#"{{"name": "a", "scopes": [{{"{KEY}": "{KEY}"}}]}}"#),
            format!(r#"{{"name": "a", "policy": 1, "scopes": "{KEY}"}}"#),
        ] {
            let (_, message) = error(&body);
            assert!(
                !message.contains("kw_sk") && !message.contains(&lower),
                "{body}: {message}"
            );
        }
    }
}
