//! The key format: `<prefix>_<kind>_<environment>_<32 random><6 checksum>`, where the prefix
//! is the deployment's ([`KeyPrefix`], `kw` unless it sets its own).
//!
//! The environment's `-` becomes `_`, which environment names never contain, so a key stays
//! within `[A-Za-z0-9_]` and one double-click selects it. The random part has 32 base62
//! characters (190 bits) from the caller's entropy, which is the OS CSPRNG in every function.
//! The checksum is the CRC32 of everything before it in 6 base62 characters, so a typo or a
//! forged string is refused without a store read, and a secret scanner matches a deployment's
//! secret keys with [`scanner_regex`] and few false hits.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::base62;
use super::mint::{KeyPrefix, Mint};
use super::names::{EnvName, Kind};

const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const TAIL_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// The longest well-formed key after its prefix: `_`, a kind tag, `_`, the longest
/// environment, `_`, the tail.
const MAX_LEN_AFTER_PREFIX: usize = 1 + 2 + 1 + EnvName::MAX_LEN + 1 + TAIL_LEN;

/// The regular expression that matches a deployment's secret keys, for a secret scanner such
/// as a GitHub custom pattern. Publishable keys are left out: they are meant to be public, and
/// a report of one would only be noise. It ends at a word boundary, so that it never takes the
/// start of a longer word for a key; it has none before, so that a key right after a word
/// character (`key%3D`, or a JSON `\n`) is still found. What it finds inside a longer word
/// (another prefix that ends with this one) fails the checksum, which covers the prefix.
pub fn scanner_regex(prefix: &KeyPrefix) -> String {
    format!(
        r"{prefix}_sk_[a-z0-9_]{{1,{}}}_[A-Za-z0-9]{{{TAIL_LEN}}}\b",
        EnvName::MAX_LEN
    )
}

fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    base62::fixed(u64::from(crc32fast::hash(body.as_bytes())))
}

/// A key's secret text. It is shown once, in a create or rotate response, and otherwise only
/// its hash is kept; `Debug` never prints it and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Makes a new key of `kind` for `environment`, its random part drawn from `mint`.
    pub fn generate(mint: &Mint, kind: Kind, environment: &EnvName) -> Self {
        let prefix = mint.key_prefix().as_str();
        let mut s = String::with_capacity(prefix.len() + MAX_LEN_AFTER_PREFIX);
        s.push_str(prefix);
        s.push('_');
        s.push_str(kind.tag());
        s.push('_');
        s.extend(
            environment
                .as_str()
                .chars()
                .map(|c| if c == '-' { '_' } else { c }),
        );
        s.push('_');
        s.push_str(&mint.random_base62(RANDOM_LEN));
        let sum = checksum(&s);
        s.extend(sum.iter().map(|&b| char::from(b)));
        Self(s)
    }

    /// The secret text, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret, which is what the store keeps.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The key's prefix and its last four characters, enough for a person to recognise it.
    pub fn hint(&self) -> String {
        let prefix_end = self.0.len() - TAIL_LEN;
        format!(
            "{}...{}",
            &self.0[..prefix_end],
            &self.0[self.0.len() - 4..]
        )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a presented string is not a keyward key at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    /// Wrong length, characters, prefix (another deployment's among them), kind or environment.
    #[error("the key is not in keyward's format")]
    Format,
    /// Well formed, but the checksum does not match: a typo or a forged key.
    #[error("the key's checksum does not match")]
    Checksum,
}

/// A presented key that passed the format and checksum check: what it claims, and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// The kind its prefix names.
    pub kind: Kind,
    /// The environment its prefix names.
    pub environment: EnvName,
    /// Its SHA-256, to look it up by.
    pub hash: KeyHash,
}

impl PresentedKey {
    /// Checks format and checksum without touching any store. A key that starts with any other
    /// prefix than `prefix`, the deployment's, is not one of its keys.
    pub fn parse(s: &str, prefix: &KeyPrefix) -> Result<Self, MalformedKey> {
        let prefix = prefix.as_str();
        if s.len() > prefix.len() + MAX_LEN_AFTER_PREFIX
            || s.len() <= prefix.len() + 1 + TAIL_LEN
            || !s.is_ascii()
        {
            return Err(MalformedKey::Format);
        }
        let (body, sum) = s.split_at(s.len() - CHECKSUM_LEN);
        let rest = body
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(MalformedKey::Format)?;
        let (tag, rest) = rest.split_once('_').ok_or(MalformedKey::Format)?;
        let kind = Kind::from_tag(tag).ok_or(MalformedKey::Format)?;
        let (env, random) = rest
            .len()
            .checked_sub(RANDOM_LEN)
            .map(|at| rest.split_at(at))
            .ok_or(MalformedKey::Format)?;
        let env = env.strip_suffix('_').ok_or(MalformedKey::Format)?;
        if env.contains('-') || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey::Format);
        }
        let environment =
            EnvName::parse(&env.replace('_', "-")).map_err(|_| MalformedKey::Format)?;
        if !sum.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedKey::Format);
        }
        if checksum(body).as_slice() != sum.as_bytes() {
            return Err(MalformedKey::Checksum);
        }
        Ok(Self {
            kind,
            environment,
            hash: KeyHash::of(s),
        })
    }
}

/// The SHA-256 of a key, in lowercase hex: the only form in which a key is stored.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The SHA-256 of any string: of a key, what is stored; of anything else, what a scanner's
    /// feedback names it by without repeating it.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The hash in lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for b in self.0 {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        hex
    }
}

impl TryFrom<String> for KeyHash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || "a key hash is 64 lowercase hex digits".to_owned();
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl From<KeyHash> for String {
    fn from(h: KeyHash) -> Self {
        h.to_hex()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::mint::test_mint;

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in any::<String>()) {
            let _ = PresentedKey::parse(&text, &KeyPrefix::default());
        }

        #[test]
        fn parsing_text_shaped_like_a_key_never_panics(text in "kw_(sk|pk|xx)_[a-z0-9_]{0,40}[A-Za-z0-9_]{0,60}") {
            let _ = PresentedKey::parse(&text, &KeyPrefix::default());
        }

        #[test]
        fn every_issued_key_parses_back_to_what_it_was_issued_as(
            environment in "[a-z0-9-]{1,32}",
            publishable in any::<bool>(),
        ) {
            let kind = if publishable { Kind::Publishable } else { Kind::Secret };
            let environment = EnvName::parse(&environment).unwrap();
            let secret = Secret::generate(test_mint(), kind, &environment);
            let parsed = PresentedKey::parse(secret.expose(), &kw()).unwrap();
            prop_assert_eq!(parsed.kind, kind);
            prop_assert_eq!(parsed.environment, environment);
            prop_assert_eq!(parsed.hash, secret.hash());
        }
    }

    fn env(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    fn kw() -> KeyPrefix {
        KeyPrefix::default()
    }

    #[test]
    fn a_deployment_with_its_own_prefix_makes_and_takes_only_its_own_keys() {
        let acme = KeyPrefix::parse("acme2").unwrap();
        let mint = crate::mint::test_mint_with_prefix(acme.clone());
        let secret = Secret::generate(&mint, Kind::Secret, &env("eu-west"));
        assert!(secret.expose().starts_with("acme2_sk_eu_west_"));
        assert!(secret.hint().starts_with("acme2_sk_eu_west_..."));
        let parsed = PresentedKey::parse(secret.expose(), &acme).unwrap();
        assert_eq!(parsed.hash, secret.hash());
        assert_eq!(parsed.environment, env("eu-west"));
        // The default deployment's keys, and this one's in the default's, are not keys at all.
        let other = Secret::generate(test_mint(), Kind::Secret, &env("eu-west"));
        assert_eq!(
            PresentedKey::parse(other.expose(), &acme),
            Err(MalformedKey::Format)
        );
        assert_eq!(
            PresentedKey::parse(secret.expose(), &kw()),
            Err(MalformedKey::Format)
        );
        // A prefix that begins another: `ab` must be followed by `_`, so it takes nothing of
        // `absk`, not even `absk_pk_...`, which would otherwise read as `ab`'s key of `pk-...`.
        let absk = crate::mint::test_mint_with_prefix(KeyPrefix::parse("absk").unwrap());
        let longer = Secret::generate(&absk, Kind::Publishable, &env("env"));
        assert_eq!(
            PresentedKey::parse(longer.expose(), &KeyPrefix::parse("ab").unwrap()),
            Err(MalformedKey::Format)
        );
        // The longest prefix and environment together still parse.
        let longest = KeyPrefix::parse("abcdefghij").unwrap();
        let mint = crate::mint::test_mint_with_prefix(longest.clone());
        let secret = Secret::generate(&mint, Kind::Publishable, &env(&"z".repeat(32)));
        assert_eq!(
            PresentedKey::parse(secret.expose(), &longest).unwrap().kind,
            Kind::Publishable
        );
    }

    #[test]
    fn key_prefixes_are_a_letter_then_one_to_nine_letters_or_digits() {
        for good in ["kw", "acme", "a1", "abcdefghij", "x0y9"] {
            assert_eq!(KeyPrefix::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "k",
            "1kw",
            "Kw",
            "kw_",
            "k-w",
            "abcdefghijk",
            "kw ",
            "_kw",
            "kwé",
        ] {
            assert_eq!(
                KeyPrefix::parse(bad),
                Err(crate::mint::InvalidKeyPrefix),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_scanner_regex_names_the_prefix_and_the_secret_kind_only() {
        assert_eq!(
            scanner_regex(&KeyPrefix::parse("acme").unwrap()),
            r"acme_sk_[a-z0-9_]{1,32}_[A-Za-z0-9]{38}\b"
        );
    }

    #[test]
    fn a_generated_key_parses_back_to_its_kind_environment_and_hash() {
        for (kind, name) in [
            (Kind::Secret, "production"),
            (Kind::Publishable, "eu-west-1"),
            (Kind::Secret, &"a".repeat(32)),
        ] {
            let secret = Secret::generate(test_mint(), kind, &env(name));
            let parsed = PresentedKey::parse(secret.expose(), &kw()).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.environment, env(name));
            assert_eq!(parsed.hash, secret.hash());
            assert!(
                secret
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            );
        }
    }

    #[test]
    fn the_prefix_shows_kind_and_environment() {
        let secret = Secret::generate(test_mint(), Kind::Publishable, &env("eu-west"));
        assert!(
            secret.expose().starts_with("kw_pk_eu_west_"),
            "{}",
            secret.expose().len()
        );
        assert_eq!(secret.expose().len(), "kw_pk_eu_west_".len() + 38);
        let hint = secret.hint();
        assert!(hint.starts_with("kw_pk_eu_west_..."));
        assert!(hint.ends_with(&secret.expose()[secret.expose().len() - 4..]));
    }

    #[test]
    fn keys_are_distinct_and_their_characters_are_spread_uniformly() {
        let mint = test_mint();
        let keys: Vec<Secret> = (0..2000)
            .map(|_| Secret::generate(mint, Kind::Secret, &env("p")))
            .collect();
        let distinct: std::collections::HashSet<&str> = keys.iter().map(Secret::expose).collect();
        assert_eq!(distinct.len(), keys.len());
        let mut counts = [0usize; 62];
        for k in &keys {
            let start = k.expose().len() - TAIL_LEN;
            let random = &k.expose()[start..start + RANDOM_LEN];
            for b in random.bytes() {
                counts[base62::ALPHABET.iter().position(|&c| c == b).unwrap()] += 1;
            }
        }
        // 64,000 draws: about 1,032 for each character; a biased sampler drifts far outside.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 850 && *max < 1250, "min {min} max {max}");
    }

    #[test]
    fn any_single_character_change_is_caught_by_format_or_checksum() {
        let secret = Secret::generate(test_mint(), Kind::Secret, &env("production"));
        let s = secret.expose();
        for i in 0..s.len() {
            let mut bytes = s.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(PresentedKey::parse(&typo, &kw()).is_err(), "position {i}");
        }
        let mut forged = s[..s.len() - 6].to_owned();
        forged.push_str("000000");
        assert_eq!(
            PresentedKey::parse(&forged, &kw()),
            Err(MalformedKey::Checksum)
        );
    }

    #[test]
    fn garbage_is_refused_as_format() {
        let long = "kw_sk_".to_owned() + &"a".repeat(200);
        for bad in [
            "",
            "kw_",
            "Bearer x",
            "kw_xx_prod_0123456789012345678901234567890123456789",
            "kw_sk__0123456789012345678901234567890123456789",
            "kw_sk_prod-x_0123456789012345678901234567890123456789",
            "kw_sk_prod_01234567890123456789012345678901234567é",
            &long,
        ] {
            assert_eq!(
                PresentedKey::parse(bad, &kw()),
                Err(MalformedKey::Format),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_and_hashes_do_not_print_the_secret() {
        let secret = Secret::generate(test_mint(), Kind::Secret, &env("p"));
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert!(!format!("{:?}", secret.hash()).contains(&secret.hash().to_hex()));
        let hex = secret.hash().to_hex();
        assert_eq!(KeyHash::try_from(hex.clone()).unwrap().to_hex(), hex);
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256 in lowercase hex, as every stored hash is written"
        );
        assert!(KeyHash::try_from("zz".repeat(32)).is_err());
    }
}
