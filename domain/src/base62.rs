//! Base62 in ASCII order, the alphabet of keys and ids.

/// The base62 alphabet in ASCII order, so fixed-width base62 strings sort like their numbers.
pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in exactly `N` base62 digits, most significant first (higher digits are dropped).
pub(crate) fn fixed<const N: usize>(mut n: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_text_sorts_like_its_number() {
        let numbers = [0u64, 1, 61, 62, 3_843, 3_844, u64::from(u32::MAX), 1 << 40];
        let texts: Vec<[u8; 8]> = numbers.iter().map(|&n| fixed(n)).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(&fixed::<3>(62), b"010");
    }
}
