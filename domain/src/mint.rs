//! Where everything new comes from: random text, and ids that sort by the time they were
//! made. The domain reads no clock and draws no randomness of its own: its caller builds one
//! [`Mint`] over a source of [`Entropy`] (the operating system's, in every function) and
//! passes it in with `now`, so a test can own its mint and move its clock freely.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Timestamp;
use super::base62;

/// A source of random bytes: the one thing the domain needs from outside to make a secret.
pub trait Entropy: Send + Sync {
    /// Fills `bytes` with random bytes, each uniform and independent.
    fn fill(&self, bytes: &mut [u8]);
}

/// Length of an id after its prefix: 10 characters of time, 12 of randomness.
pub(crate) const ID_BODY_LEN: usize = 22;
const ID_TIME_LEN: usize = 10;

/// The word every key of a deployment starts with, before `_sk_` or `_pk_`: `kw` unless the
/// deployment sets its own, so that a secret scanner can tell its keys from anyone else's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

/// Why a candidate key prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key prefix is a lowercase letter followed by 1 to 9 lowercase letters or digits")]
pub struct InvalidKeyPrefix;

impl KeyPrefix {
    /// The prefix of a deployment that sets none.
    pub const DEFAULT: &'static str = "kw";
    /// The longest prefix, so that a key's length stays bounded.
    pub const MAX_LEN: usize = 10;

    /// Checks a candidate: `[a-z][a-z0-9]{1,9}`.
    pub fn parse(s: &str) -> Result<Self, InvalidKeyPrefix> {
        let mut bytes = s.bytes();
        let ok = (2..=Self::MAX_LEN).contains(&s.len())
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidKeyPrefix)
        }
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes random text and time-ordered ids from one source of entropy. Ids made by one mint
/// are strictly increasing, so one process that shares one mint never makes two ids out of
/// order, even within a millisecond.
///
/// Its keys start with its [`KeyPrefix`], the deployment's.
pub struct Mint {
    entropy: Box<dyn Entropy>,
    /// The time part of the last id this mint made, in microseconds.
    last_id_micros: AtomicU64,
    key_prefix: KeyPrefix,
}

impl Mint {
    /// A mint over `entropy`, whose keys start with the default prefix.
    pub fn new(entropy: Box<dyn Entropy>) -> Self {
        Self {
            entropy,
            last_id_micros: AtomicU64::new(0),
            key_prefix: KeyPrefix::default(),
        }
    }

    /// The same mint, its keys starting with `prefix`.
    pub fn with_key_prefix(self, prefix: KeyPrefix) -> Self {
        Self {
            key_prefix: prefix,
            ..self
        }
    }

    /// The prefix of the keys this mint makes.
    pub fn key_prefix(&self) -> &KeyPrefix {
        &self.key_prefix
    }

    /// `len` base62 characters drawn uniformly from the entropy.
    pub(crate) fn random_base62(&self, len: usize) -> String {
        // Bytes at or above 248 (= 4 * 62) are skipped, so `b % 62` is uniform.
        let mut out = String::with_capacity(len);
        let mut buf = [0u8; 64];
        while out.len() < len {
            self.entropy.fill(&mut buf);
            out.extend(
                buf.iter()
                    .filter(|&&b| b < 248)
                    .take(len - out.len())
                    .map(|&b| char::from(base62::ALPHABET[usize::from(b % 62)])),
            );
        }
        out
    }

    /// `<prefix><time><random>`: ids sort by the time they were made, so "newest first" is a
    /// plain descending order on the id, in SQLite and in a DynamoDB sort key alike. Times are
    /// whole milliseconds, so two changes in one millisecond would tie and fall to the random
    /// part; instead the microseconds serve as a sequence within the millisecond, as monotonic
    /// ULIDs do.
    pub(crate) fn time_ordered_id(&self, prefix: &str, at: Timestamp) -> String {
        let wanted = u64::try_from(at.timestamp_micros()).unwrap_or(0);
        let previous = self
            .last_id_micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(wanted.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        let micros = wanted.max(previous + 1);
        let mut id = String::with_capacity(prefix.len() + ID_BODY_LEN);
        id.push_str(prefix);
        id.extend(base62::fixed::<ID_TIME_LEN>(micros).map(char::from));
        id.push_str(&self.random_base62(ID_BODY_LEN - ID_TIME_LEN));
        id
    }
}

impl fmt::Debug for Mint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mint")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The entropy of the domain's own tests: SplitMix64 from a fixed seed, which is uniform
/// enough for the distribution tests and needs no operating system.
#[cfg(test)]
struct SplitMix(std::sync::Mutex<u64>);

#[cfg(test)]
impl Entropy for SplitMix {
    fn fill(&self, bytes: &mut [u8]) {
        let mut state = self.0.lock().unwrap();
        for chunk in bytes.chunks_mut(8) {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The mint of the domain's own tests, over [`SplitMix`]. One is shared, as one process shares
/// one in production.
#[cfg(test)]
pub(crate) fn test_mint() -> &'static Mint {
    static MINT: std::sync::OnceLock<Mint> = std::sync::OnceLock::new();
    MINT.get_or_init(|| Mint::new(Box::new(SplitMix(std::sync::Mutex::new(0x6B65_7977)))))
}

/// A mint of a test's own whose keys start with `prefix`, as a deployment's with its own.
#[cfg(test)]
pub(crate) fn test_mint_with_prefix(prefix: KeyPrefix) -> Mint {
    Mint::new(Box::new(SplitMix(std::sync::Mutex::new(0x6163_6D65)))).with_key_prefix(prefix)
}
