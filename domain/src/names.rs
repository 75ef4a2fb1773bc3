//! Validated names: every value here was parsed once and is known good afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::mint::{ID_BODY_LEN, Mint};

/// Why a piece of input was refused; each variant is one error code in the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// An environment name outside `a-z`, `0-9` and `-`, or of the wrong length.
    #[error("an environment name is 1 to 32 characters of a-z, 0-9 and -")]
    InvalidEnvironment,
    /// A key id that is not of the form `key_` followed by 22 letters and digits.
    #[error("a key id is key_ followed by 22 letters and digits")]
    InvalidKeyId,
    /// A key name that is empty, too long, or holds control or invisible format characters.
    #[error(
        "a key name is 1 to 128 characters with no control characters and no invisible format characters (such as a bidi control or a zero-width space)"
    )]
    InvalidName,
    /// A scope that is not lowercase words joined by `:`, or `*`.
    #[error(
        "scope {index} is malformed: a scope is `*` or lowercase words of a-z, 0-9, _ and - joined by :"
    )]
    InvalidScope {
        /// The position of the scope in the list, from 0.
        index: usize,
    },
    /// More scopes than a key may carry.
    #[error("a key carries at most {max} scopes", max = Scopes::MAX)]
    TooManyScopes,
    /// A publishable key asked for a management scope or `*`.
    #[error("a publishable key may carry only custom scopes, not `{0}`")]
    ScopeNotAllowed(String),
    /// An `allowed_ips` list with a bad entry, or too many.
    #[error("{0}")]
    InvalidAllowedIps(String),
    /// A grace period that is neither a preset, an ISO-8601 duration nor a number of seconds in range.
    #[error("{0}")]
    InvalidGracePeriod(String),
    /// A rotation policy whose interval or secret id is out of range.
    #[error("{0}")]
    InvalidRotationPolicy(String),
    /// An expiry that is not in the future.
    #[error("expires_at must be in the future")]
    ExpiresAtNotInFuture,
    /// A leak report's `url` or `source` that is too long, holds control or format
    /// characters, or holds what may be a secret key.
    #[error("{0}")]
    InvalidLeakDetails(String),
}

/// An environment's name: 1 to 32 characters of `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvName(String);

impl EnvName {
    /// The longest name an environment may have.
    pub const MAX_LEN: usize = 32;

    /// Checks a candidate name.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::InvalidEnvironment)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EnvName> for String {
    fn from(n: EnvName) -> Self {
        n.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|body| {
        body.len() == ID_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A key's public id, `key_` and 22 letters and digits; it names the key everywhere a secret must not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    const PREFIX: &'static str = "key_";

    /// A fresh id that sorts after every id made earlier.
    pub fn generate(mint: &Mint, now: Timestamp) -> Self {
        Self(mint.time_ordered_id(Self::PREFIX, now))
    }

    /// Checks a candidate id.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if is_id(s, Self::PREFIX) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::InvalidKeyId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An activity entry's id, `act_` and 22 letters and digits, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActivityId(String);

impl ActivityId {
    const PREFIX: &'static str = "act_";

    /// A fresh id that sorts after every id made earlier.
    pub fn generate(mint: &Mint, now: Timestamp) -> Self {
        Self(mint.time_ordered_id(Self::PREFIX, now))
    }

    /// Checks a candidate id.
    pub fn parse(s: &str) -> Option<Self> {
        is_id(s, Self::PREFIX).then(|| Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ActivityId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
            .ok_or_else(|| "an activity id is act_ followed by 22 letters and digits".to_owned())
    }
}

impl From<ActivityId> for String {
    fn from(id: ActivityId) -> Self {
        id.0
    }
}

/// A key's human name, such as `billing worker`: 1 to 128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

/// The ranges of Unicode's general category `Cf` (format characters, Unicode 15.1): bidi
/// controls, zero-width characters and the like, which a terminal or a page does not show
/// but obeys, so that `"test \u{202e}yek noitcudorp"` reads as "test production key".
const FORMAT_CHARACTERS: [(char, char); 21] = [
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` is an invisible format character (general category `Cf`), which a name may
/// not hold and which is shown escaped wherever a name from before that rule is printed.
pub fn is_format_character(c: char) -> bool {
    FORMAT_CHARACTERS
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&c))
}

impl KeyName {
    /// Checks a candidate name; surrounding white space is trimmed first. Control and
    /// invisible format characters are refused, so that a name cannot hide what it says.
    /// The 128 characters bound what is sent, as the OpenAPI schema's `maxLength` does,
    /// so a name the schema refuses is never accepted because its spaces were trimmed.
    pub fn parse(s: &str) -> Result<Self, InputError> {
        if s.chars().count() > 128 || s.chars().any(is_format_character) {
            return Err(InputError::InvalidName);
        }
        Self::stored(s)
    }

    /// A name as a stored key holds it, checked by the rule every stored name met: format
    /// characters were allowed until they were refused, so a name stored before that can
    /// still be read (each surface shows them escaped) instead of failing every read of its
    /// environment's keys.
    fn stored(s: &str) -> Result<Self, InputError> {
        let s = s.trim();
        let ok = (1..=128).contains(&s.chars().count()) && !s.chars().any(char::is_control);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::InvalidName)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a leak was seen, as its reporter says: recorded on the `key.leaked` entry for the
/// key's owners to follow up, and trusted for nothing else. The `url` is an `http(s)://` URL
/// and the `source` a word or two, and neither may hold what looks like a secret key (`_sk_`,
/// in any case, or with its `_` percent-encoded), so that a report cannot write one into the
/// activity log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakDetails {
    /// Where the secret was found, such as a commit's URL.
    pub url: Option<String>,
    /// What kind of place it was found in, such as `commit` or `npm`.
    pub source: Option<String>,
}

impl LeakDetails {
    /// The longest `url` a report may give.
    pub const MAX_URL: usize = 2048;
    /// The longest `source` a report may give.
    pub const MAX_SOURCE: usize = 100;

    /// Checks a report's `url` and `source`.
    pub fn parse(url: Option<&str>, source: Option<&str>) -> Result<Self, InputError> {
        let refused = |why: String| Err(InputError::InvalidLeakDetails(why));
        let holds_a_key = |value: &str| {
            value
                .to_ascii_lowercase()
                .replace("%5f", "_")
                .contains("_sk_")
        };
        if let Some(url) = url {
            let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
            let web = lower.starts_with("https://") || lower.starts_with("http://");
            let plain = url.chars().all(|c| c.is_ascii_graphic());
            if !web || !plain || url.len() > Self::MAX_URL {
                return refused(format!(
                    "url is an http:// or https:// URL of at most {} characters, with no spaces or control characters",
                    Self::MAX_URL
                ));
            }
            if holds_a_key(url) {
                return refused(
                    "url may not hold a secret key (_sk_): the activity log records it".to_owned(),
                );
            }
        }
        if let Some(source) = source {
            let word = |c: char| c.is_ascii_alphanumeric() || " _-.".contains(c);
            if source.is_empty() || source.len() > Self::MAX_SOURCE || !source.chars().all(word) {
                return refused(format!(
                    "source is 1 to {} letters, digits, spaces, _, - and .",
                    Self::MAX_SOURCE
                ));
            }
            if holds_a_key(source) {
                return refused(
                    "source may not hold a secret key (_sk_): the activity log records it"
                        .to_owned(),
                );
            }
        }
        Ok(Self {
            url: url.map(str::to_owned),
            source: source.map(str::to_owned),
        })
    }
}

/// How a stored key's name is read back (serde): by [`KeyName::stored`]'s rule, never by
/// [`KeyName::parse`]'s newer one, which is for names that come in. So a request body must
/// never deserialize a `KeyName`: it takes a `String` and calls [`KeyName::parse`].
impl TryFrom<String> for KeyName {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::stored(&s)
    }
}

impl From<KeyName> for String {
    fn from(n: KeyName) -> Self {
        n.0
    }
}

/// Where a key may be used: on a server, or embedded in a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A server-side key; it may carry any scope.
    Secret,
    /// A client-side key, safe to embed; it carries only custom scopes.
    Publishable,
}

impl Kind {
    /// The two letters that name the kind inside a key's prefix.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Secret => "sk",
            Kind::Publishable => "pk",
        }
    }

    /// The kind a prefix tag names.
    pub fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "sk" => Some(Kind::Secret),
            "pk" => Some(Kind::Publishable),
            _ => None,
        }
    }
}

/// One permission: `*`, or lowercase words of `a-z`, `0-9`, `_` and `-` joined by `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    /// Full access.
    pub const ALL: &'static str = "*";
    /// Read keys.
    pub const KEYS_READ: &'static str = "keys:read";
    /// Create, rotate, change and revoke keys.
    pub const KEYS_WRITE: &'static str = "keys:write";
    /// Read the activity log.
    pub const ACTIVITY_READ: &'static str = "activity:read";
    const MAX_LEN: usize = 100;

    /// Checks a candidate scope; `index` is its position, for the error message.
    pub fn parse(s: &str, index: usize) -> Result<Self, InputError> {
        let word_ok = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if s == Self::ALL || (s.len() <= Self::MAX_LEN && s.split(':').all(word_ok)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InputError::InvalidScope { index })
        }
    }

    /// Whether this is `*` or one of keyward's own management scopes.
    pub fn is_management(&self) -> bool {
        matches!(
            self.0.as_str(),
            Self::ALL | Self::KEYS_READ | Self::KEYS_WRITE | Self::ACTIVITY_READ
        )
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = InputError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s, 0)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> Self {
        s.0
    }
}

/// The scopes a key carries, without duplicates, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// The most scopes one key may carry.
    pub const MAX: usize = 50;

    /// Checks a list of candidate scopes; duplicates are dropped.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, InputError> {
        if items.len() > Self::MAX {
            return Err(InputError::TooManyScopes);
        }
        let mut scopes: Vec<Scope> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let scope = Scope::parse(item.as_ref(), index)?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Self(scopes))
    }

    /// Full access: the scopes of an environment's default key.
    pub fn all() -> Self {
        Self(vec![Scope(Scope::ALL.to_owned())])
    }

    /// Whether these scopes grant `required`: it is among them, or `*` is.
    pub fn grants(&self, required: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.as_str() == required || s.as_str() == Scope::ALL)
    }

    /// Whether these scopes hold full access (`*`).
    pub fn is_all(&self) -> bool {
        self.0.iter().any(|s| s.as_str() == Scope::ALL)
    }

    /// The first of these scopes that `holder` does not grant, if any: a key may hand out,
    /// or act on a key with, only scopes that it holds itself.
    pub fn first_not_granted_by<'a>(&'a self, holder: &Scopes) -> Option<&'a Scope> {
        self.0.iter().find(|s| !holder.grants(s.as_str()))
    }

    /// The first management scope in the list, which a publishable key may not carry.
    pub fn first_management(&self) -> Option<&Scope> {
        self.0.iter().find(|s| s.is_management())
    }

    /// These scopes and those of `other` that are not among them: what a person holds through
    /// several groups. A union is not a key's list, so it is not held to [`Scopes::MAX`].
    pub fn with(&self, other: &Scopes) -> Scopes {
        let mut union = self.0.clone();
        for scope in &other.0 {
            if !union.contains(scope) {
                union.push(scope.clone());
            }
        }
        union.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Scopes(union)
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mint::test_mint;
    use chrono::TimeZone;

    #[test]
    fn environment_names_follow_the_contract() {
        for good in ["production", "a", "eu-west-1", &"x".repeat(32)] {
            assert!(EnvName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Prod", "eu_west", "a b", "é", &"x".repeat(33)] {
            assert_eq!(
                EnvName::parse(bad),
                Err(InputError::InvalidEnvironment),
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_follow_the_contract() {
        for good in ["*", "orders:read", "keys:write", "a", "a-b_c:d0:e"] {
            assert!(Scope::parse(good, 0).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Orders:read",
            "orders::read",
            ":read",
            "orders:",
            "a b",
            "**",
            "orders:*",
            "ä",
        ] {
            assert_eq!(
                Scope::parse(bad, 3),
                Err(InputError::InvalidScope { index: 3 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_drop_duplicates_and_cap_their_number() {
        let scopes = Scopes::parse(&["a:b", "c", "a:b"]).unwrap();
        assert_eq!(
            scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
            ["a:b", "c"]
        );
        let many: Vec<String> = (0..=Scopes::MAX).map(|i| format!("s{i}")).collect();
        assert_eq!(Scopes::parse(&many), Err(InputError::TooManyScopes));
    }

    #[test]
    fn wildcard_grants_everything_and_others_grant_only_themselves() {
        assert!(Scopes::all().grants("keys:write"));
        let scopes = Scopes::parse(&["keys:read"]).unwrap();
        assert!(scopes.grants("keys:read"));
        assert!(!scopes.grants("keys:write"));
        assert_eq!(
            scopes.first_management().map(Scope::as_str),
            Some("keys:read")
        );
        assert_eq!(
            Scopes::parse(&["orders:read"]).unwrap().first_management(),
            None
        );
    }

    #[test]
    fn a_holder_grants_only_what_it_holds_and_star_holds_everything() {
        let writer = Scopes::parse(&["keys:write", "orders:read"]).unwrap();
        let wanted = Scopes::parse(&["orders:read", "orders:write"]).unwrap();
        assert_eq!(
            wanted.first_not_granted_by(&writer).map(Scope::as_str),
            Some("orders:write")
        );
        assert_eq!(wanted.first_not_granted_by(&Scopes::all()), None);
        assert_eq!(
            Scopes::all()
                .first_not_granted_by(&writer)
                .map(Scope::as_str),
            Some("*")
        );
        assert_eq!(
            Scopes::default().first_not_granted_by(&Scopes::default()),
            None
        );
        assert!(Scopes::all().is_all() && !writer.is_all());
    }

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mint = test_mint();
        let earlier = KeyId::generate(mint, t0);
        let later = KeyId::generate(mint, t0 + chrono::TimeDelta::milliseconds(1));
        assert!(earlier < later);
        assert_eq!(KeyId::parse(later.as_str()), Ok(later.clone()));
        assert_eq!(later.as_str().len(), 4 + ID_BODY_LEN);
        assert_eq!(KeyId::parse("key_short"), Err(InputError::InvalidKeyId));
        assert_eq!(
            KeyId::parse(&later.as_str().replace("key_", "act_")),
            Err(InputError::InvalidKeyId)
        );
        assert!(ActivityId::parse(ActivityId::generate(mint, t0).as_str()).is_some());
    }

    #[test]
    fn ids_made_at_one_instant_still_sort_in_the_order_they_were_made() {
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mint = test_mint();
        let ids: Vec<ActivityId> = (0..1000).map(|_| ActivityId::generate(mint, t0)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn key_names_are_trimmed_and_bounded() {
        assert_eq!(KeyName::parse("  billing  ").unwrap().as_str(), "billing");
        assert_eq!(KeyName::parse("   "), Err(InputError::InvalidName));
        assert_eq!(KeyName::parse("a\nb"), Err(InputError::InvalidName));
        for hidden in [
            '\u{202E}',
            '\u{200B}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            let name = format!("test {hidden}yek noitcudorp");
            assert_eq!(
                KeyName::parse(&name),
                Err(InputError::InvalidName),
                "{hidden:?}"
            );
        }
        let stored: KeyName = serde_json::from_value(serde_json::json!("test \u{202E}yek"))
            .expect("a name stored before the rule is still read");
        assert_eq!(stored.as_str(), "test \u{202E}yek");
        for shown in [
            "billing worker",
            "café",
            "Zürich – prod",
            "日本",
            "\u{05D0}\u{05D1}",
        ] {
            assert!(KeyName::parse(shown).is_ok(), "{shown}");
        }
        assert!(KeyName::parse(&"é".repeat(128)).is_ok());
        assert_eq!(
            KeyName::parse(&"é".repeat(129)),
            Err(InputError::InvalidName)
        );
        assert_eq!(
            KeyName::parse(&format!("\u{00A0}{}", "*".repeat(128))),
            Err(InputError::InvalidName),
            "the bound is on what is sent, before trimming"
        );
    }
}
