//! Training-time augmentation on the device: the usual CIFAR recipe — pad each image by 4 pixels
//! (zeros, which after normalisation is the training mean), crop back to its size at a random
//! offset, and (crop-flip) flip it left–right with probability ½. The offsets and flips are drawn
//! from the run's seed, so both layouts of a family see the same augmented batches.
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The `augment` setting.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// The training images as they are.
    #[default]
    None,
    /// A random crop of the image padded by 4.
    Crop,
    /// A random crop and a horizontal flip with probability ½ (refused for digit and character
    /// datasets, whose classes a flip can change, unless `force_flip`).
    CropFlip,
}

impl Augment {
    pub fn is_none(&self) -> bool {
        *self == Augment::None
    }
}

/// Padding of the crop, in pixels.
pub const PAD: i64 = 4;
/// Separates the augmentation's random stream from the shuffle's, both seeded by the run's seed.
const AUGMENT_STREAM: u64 = 0x6175_676d_656e_7421;

/// Draws and applies a run's augmentation, batch by batch.
pub struct Augmenter {
    flip: bool,
    rng: ChaCha8Rng,
}

impl Augmenter {
    /// The augmenter of a run with `augment` and `seed`; `None` without augmentation.
    pub fn new(augment: Augment, seed: u64) -> Option<Augmenter> {
        (!augment.is_none()).then(|| Augmenter {
            flip: augment == Augment::CropFlip,
            rng: ChaCha8Rng::seed_from_u64(seed ^ AUGMENT_STREAM),
        })
    }

    /// How far its random stream has gone ([`Augmenter::seek`] goes back there).
    pub fn position(&self) -> u128 {
        self.rng.get_word_pos()
    }

    pub fn seek(&mut self, position: u128) {
        self.rng.set_word_pos(position);
    }

    /// `x` ([B, C, H, W]) with each image cropped at its own offset from its padded copy, and
    /// flipped where drawn: two gathers, on `x`'s device.
    pub fn apply(&mut self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("a batch of images");
        let device = x.device();
        let padded = x.constant_pad_nd([PAD, PAD, PAD, PAD]);
        let (mut rows, mut cols) = (Vec::with_capacity((b * h) as usize), Vec::new());
        cols.reserve((b * w) as usize);
        for _ in 0..b {
            let (dy, dx) = (
                self.rng.gen_range(0..=2 * PAD),
                self.rng.gen_range(0..=2 * PAD),
            );
            let flipped = self.flip && self.rng.gen_bool(0.5);
            rows.extend((0..h).map(|y| dy + y));
            cols.extend((0..w).map(|i| dx + if flipped { w - 1 - i } else { i }));
        }
        let index = |v: Vec<i64>, shape: [i64; 4], to: [i64; 4]| {
            Tensor::from_slice(&v)
                .to_device(device)
                .view(shape)
                .expand(to, false)
        };
        let rows = index(rows, [b, 1, h, 1], [b, c, h, w + 2 * PAD]);
        let cols = index(cols, [b, 1, 1, w], [b, c, h, w]);
        padded.gather(2, &rows, false).gather(3, &cols, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Every augmented image is, pixel for pixel, some crop (flipped or not) of its padded
    /// original; crop never flips, crop-flip flips about half; the same seed gives the same
    /// batches.
    #[test]
    fn augmented_images_are_crops_of_the_padded_originals() {
        let (b, c, h, w) = (64, 2, 5, 6);
        let x = Tensor::rand([b, c, h, w], (Kind::Float, tch::Device::Cpu)) + 1.0;
        let padded = x.constant_pad_nd([PAD, PAD, PAD, PAD]);
        for (augment, flips_expected) in [(Augment::Crop, false), (Augment::CropFlip, true)] {
            let mut a = Augmenter::new(augment, 7).unwrap();
            let y = a.apply(&x);
            assert_eq!(y.size(), [b, c, h, w]);
            assert_eq!(y.kind(), x.kind());
            let mut flips = 0;
            for i in 0..b {
                let found = (0..=2 * PAD)
                    .flat_map(|dy| (0..=2 * PAD).map(move |dx| (dy, dx)))
                    .flat_map(|(dy, dx)| [(dy, dx, false), (dy, dx, true)])
                    .find(|&(dy, dx, flip)| {
                        let crop = padded.get(i).narrow(1, dy, h).narrow(2, dx, w);
                        let crop = if flip { crop.flip([2]) } else { crop };
                        crop.equal(&y.get(i))
                    });
                let (_, _, flip) = found.unwrap_or_else(|| panic!("image {i} is no crop"));
                flips += usize::from(flip);
            }
            if flips_expected {
                assert!((16..=48).contains(&flips), "{flips} of {b} flipped");
            } else {
                assert_eq!(flips, 0);
            }
            let again = Augmenter::new(augment, 7).unwrap().apply(&x);
            assert!(again.equal(&y), "same seed, same batch");
            let other = Augmenter::new(augment, 8).unwrap().apply(&x);
            assert!(!other.equal(&y));
        }
        assert!(Augmenter::new(Augment::None, 7).is_none());
    }
}
