//! A run's random draws during training, each its own stream of the run's seed: the order of
//! the examples each epoch, and the augmentation of each batch.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::RunConfig;
use super::augment::Augmenter;

/// Keeps the shuffling stream apart from the weight-initialisation stream of the same seed.
const SHUFFLE_STREAM: u64 = 0x5eed_da7a;

pub(super) struct Draws {
    pub order: ChaCha8Rng,
    pub augment: Option<Augmenter>,
}

impl Draws {
    /// The draws of run `cfg` before its first epoch.
    pub fn new(cfg: &RunConfig) -> Draws {
        Draws {
            order: order_stream(cfg.seed),
            augment: Augmenter::new(cfg.augment, cfg.seed),
        }
    }
}

/// The shuffling stream of a run of `seed`.
pub(super) fn order_stream(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ SHUFFLE_STREAM)
}
