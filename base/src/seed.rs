//! Seed derivation: every random stream of gantry (the data path's shuffles and synthetic
//! images, a training step's latents, penalty weights and dropout, sample grids, the
//! evaluation classifier) is seeded by [`mix`] from the parts it depends on, and from nothing
//! else. A stream that would otherwise share its parts with another carries a [`tag`] of its own
//! among them, so no two streams ever draw the same numbers.

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

/// The tags that keep random streams apart. Their values are part of every run's exact
/// reproducibility (a resumed run draws what an uninterrupted one would, a repacked dataset
/// shuffles the same): never change one.
pub mod tag {
    /// The reader's order of row groups in an epoch: `mix(&[seed, epoch, EPOCH_ORDER])`.
    pub const EPOCH_ORDER: u64 = 0;
    /// The reader's shuffle inside one window of row groups:
    /// `mix(&[seed, epoch, WINDOW_SHUFFLE, rank, world_size, window])`.
    pub const WINDOW_SHUFFLE: u64 = 1;
    /// Everything random in one training step of one rank (latents, the penalty's
    /// interpolation weights, dropout masks): `mix(&[seed, step, STEP, rank])`.
    pub const STEP: u64 = 0x57E9;
    /// The fixed latents of a run's sample grids and of `worker generate`:
    /// `mix(&[seed, SAMPLE_LATENTS])`.
    pub const SAMPLE_LATENTS: u64 = 0x5A_4D;
    /// The evaluation classifier's initial weights and its batch order:
    /// `mix(&[classifier_seed, CLASSIFIER])`.
    pub const CLASSIFIER: u64 = 0xC1A5;
    /// The latents and labels of the images an evaluation renders: `mix(&[seed, EVAL_RENDER])`.
    pub const EVAL_RENDER: u64 = 0xE7A1;
    /// The inputs of the collectives' guarantee check (`worker parallel-check`):
    /// `mix(&[seed, step, PARALLEL_CHECK])`.
    pub const PARALLEL_CHECK: u64 = 0xBA7C;

    /// Every tag, for the test that keeps them distinct.
    pub const ALL: [u64; 7] = [
        EPOCH_ORDER,
        WINDOW_SHUFFLE,
        STEP,
        SAMPLE_LATENTS,
        CLASSIFIER,
        EVAL_RENDER,
        PARALLEL_CHECK,
    ];
}

#[cfg(test)]
mod tests {
    use super::{mix, tag};

    #[test]
    fn mix_separates_its_inputs() {
        assert_ne!(mix(&[1, 0]), mix(&[0, 1]));
        assert_ne!(mix(&[0, 0, 1]), mix(&[0, 1]));
        assert_eq!(mix(&[7, 3]), mix(&[7, 3]));
    }

    #[test]
    fn every_stream_has_a_tag_of_its_own() {
        let mut tags = tag::ALL.to_vec();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), tag::ALL.len());
    }
}
