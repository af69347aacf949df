//! Seed derivation: every random stream of the data path (shuffles, synthetic images) is seeded
//! by [`mix`] from the parts it depends on, and from nothing else.

/// Mixes seed parts into one 64-bit seed (splitmix64 finaliser over a running sum); used for
/// every derived random stream so that each depends only on its parts.
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15u64, |acc, &part| {
        let mut z = acc.wrapping_add(part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[cfg(test)]
mod tests {
    use super::mix;

    #[test]
    fn mix_separates_its_inputs() {
        assert_ne!(mix(&[1, 0]), mix(&[0, 1]));
        assert_ne!(mix(&[0, 0, 1]), mix(&[0, 1]));
        assert_eq!(mix(&[7, 3]), mix(&[7, 3]));
    }
}
