//! The held-out validation split: carved from the official training set before any training
//! subset is taken, stratified (each class keeps its share), drawn with `data_seed` — so every
//! layout and every seed of a configuration holds out the same examples — and disjoint from the
//! examples trained on. It alone drives stopping and model selection; the official test set is
//! only reported.
use std::fmt;
use std::str::FromStr;

use anyhow::{Result, anyhow, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How many training examples are held out: a count (`holdout = 5000`) or a fraction of the
/// official training set (`holdout = 0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Holdout {
    Count(u64),
    Fraction(f64),
}

/// A whole number is a count, any other number a fraction; anything else is refused saying what
/// a holdout is.
impl<'de> Deserialize<'de> for Holdout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Holdout;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count of examples (holdout = 5000) or a fraction in (0, 1) (0.1)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Holdout, E> {
                Ok(Holdout::Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Holdout, E> {
                u64::try_from(v).map(Holdout::Count).map_err(|_| {
                    E::custom(format!(
                        "holdout must be a positive count of examples, got {v}"
                    ))
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Holdout, E> {
                Ok(Holdout::Fraction(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Holdout {
    /// The number of examples held out of `n`.
    pub fn size(self, n: usize) -> usize {
        match self {
            Holdout::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            Holdout::Fraction(f) => (f * n as f64).round() as usize,
        }
    }

    pub fn validate(self) -> Result<()> {
        match self {
            Holdout::Count(c) => ensure!(c >= 1, "holdout must be at least 1 example, got {c}"),
            Holdout::Fraction(f) => ensure!(
                f.is_finite() && f > 0.0 && f < 1.0,
                "holdout must be a count of examples (an integer) or a fraction in (0, 1), got {f}"
            ),
        }
        Ok(())
    }
}

impl fmt::Display for Holdout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holdout::Count(c) => write!(f, "{c}"),
            Holdout::Fraction(x) => write!(f, "{x}"),
        }
    }
}

impl FromStr for Holdout {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Holdout> {
        if let Ok(count) = text.parse::<u64>() {
            return Ok(Holdout::Count(count));
        }
        let fraction: f64 = text.parse().map_err(|_| {
            anyhow!("holdout: expected a count of examples or a fraction in (0, 1), got '{text}'")
        })?;
        let holdout = Holdout::Fraction(fraction);
        holdout.validate()?;
        Ok(holdout)
    }
}

/// Keeps the split's random stream apart from every other use of the same seed.
const HOLDOUT_STREAM: u64 = 0x401d_0075_7eed;

/// The indices (ascending) of the `size` examples held out of a training set with `labels`:
/// each class a share proportional to its size (largest remainders), drawn at random with
/// `seed`. Refused when nothing would be left to train on, or when a class present in the
/// training set would be missing from either side.
pub fn holdout_indices(labels: &[u8], size: usize, seed: u64) -> Result<Vec<usize>> {
    let n = labels.len();
    ensure!(
        size < n,
        "holdout of {size} examples leaves nothing to train on: the training set has {n}"
    );
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let quotas = proportional_quotas(&by_class.iter().map(Vec::len).collect::<Vec<_>>(), size);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ HOLDOUT_STREAM);
    let mut chosen = Vec::with_capacity(size);
    for (class, (members, quota)) in by_class.iter_mut().zip(quotas).enumerate() {
        if members.is_empty() {
            continue;
        }
        if quota == 0 {
            bail!(
                "holdout of {size} examples leaves class {class} empty in the held-out split (it \
                 has {} training examples); hold out more",
                members.len()
            );
        }
        if quota == members.len() {
            bail!(
                "holdout of {size} examples takes every training example of class {class}; hold \
                 out fewer"
            );
        }
        members.shuffle(&mut rng);
        chosen.extend_from_slice(&members[..quota]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// Splits `total` over groups of `sizes` in proportion (largest remainders; ties to the lower
/// index).
fn proportional_quotas(sizes: &[usize], total: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let exact: Vec<f64> = sizes
        .iter()
        .map(|&s| total as f64 * s as f64 / n as f64)
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let missing = total - quotas.iter().sum::<usize>();
    for &i in order.iter().take(missing) {
        quotas[i] += 1;
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_fractions() {
        assert_eq!("5000".parse::<Holdout>().unwrap(), Holdout::Count(5000));
        assert_eq!("0.1".parse::<Holdout>().unwrap(), Holdout::Fraction(0.1));
        assert!("1.5".parse::<Holdout>().is_err());
        assert!("-3".parse::<Holdout>().is_err());
        assert!("x".parse::<Holdout>().is_err());
        assert_eq!(Holdout::Fraction(0.1).size(60_000), 6000);
    }

    #[test]
    fn stratified_disjoint_and_seeded() {
        // 3 classes of 60, 30, 10 examples, interleaved.
        let labels: Vec<u8> = (0..100)
            .map(|i| match i % 10 {
                0..=5 => 0,
                6..=8 => 1,
                _ => 2,
            })
            .collect();
        let held = holdout_indices(&labels, 20, 7).unwrap();
        assert_eq!(held.len(), 20);
        assert!(held.windows(2).all(|w| w[0] < w[1]));
        let count = |c| held.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (12, 6, 2));
        assert_eq!(held, holdout_indices(&labels, 20, 7).unwrap());
        assert_ne!(held, holdout_indices(&labels, 20, 8).unwrap());
    }

    #[test]
    fn refuses_splits_that_empty_a_class_or_the_training_set() {
        let labels = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let e = holdout_indices(&labels, 2, 0).unwrap_err().to_string();
        assert!(e.contains("class 1"), "{e}");
        let e = holdout_indices(&labels, 10, 0).unwrap_err().to_string();
        assert!(e.contains("nothing to train on"), "{e}");
        let labels = [0u8, 0, 1, 1];
        let e = holdout_indices(&labels, 3, 0).unwrap_err().to_string();
        assert!(e.contains("every training example"), "{e}");
    }

    #[test]
    fn quotas_add_up() {
        assert_eq!(proportional_quotas(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(proportional_quotas(&[5, 3, 2], 10), vec![5, 3, 2]);
        assert_eq!(proportional_quotas(&[0, 7], 3), vec![0, 3]);
    }
}
