//! Base62 in ASCII order (`0-9A-Za-z`), so that fixed-width encodings sort like the numbers
//! they encode.

use crate::SecureRng;

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `byte` is one of the 62 characters.
pub const fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// Writes `value` into `out` as fixed-width base62, most significant digit first.
/// Digits that do not fit are dropped, so `out` must be wide enough for the caller's range.
pub fn encode_fixed(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

/// Draws `len` characters uniformly from the alphabet.
pub fn random_string(rng: &mut impl SecureRng, len: usize) -> String {
    use rand::Rng;
    // `Alphanumeric` is exactly the base62 alphabet and samples by rejection, so it is unbiased.
    (0..len)
        .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_encoding_sorts_like_the_numbers() {
        let mut previous = [b'0'; 6];
        encode_fixed(0, &mut previous);
        assert_eq!(&previous, b"000000");
        for value in [1u64, 61, 62, 3843, 1 << 31, u64::from(u32::MAX)] {
            let mut current = [0u8; 6];
            encode_fixed(value, &mut current);
            assert!(current > previous, "{value}");
            previous = current;
        }
        let mut max = [0u8; 6];
        encode_fixed(u64::from(u32::MAX), &mut max);
        assert_eq!(&max, b"4gfFC3");
    }
}
