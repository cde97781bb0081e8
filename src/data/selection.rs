//! Which examples a run uses (deterministic subsets, the held-out split) and their normalised
//! tensors on the training device.
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{Holdout, RawDataset, Split, holdout};

/// How `--train-limit`/`--val-limit` choose their examples; both are deterministic.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    /// Balanced classes: take each class's examples in file order, round-robin over the classes.
    #[default]
    Stratified,
    /// The first N examples of the file.
    First,
}

/// Indices (ascending, file order) of the examples a limit keeps.
pub fn subset_indices(labels: &[u8], limit: Option<usize>, how: Subset) -> Vec<usize> {
    let n = labels.len();
    let limit = limit.unwrap_or(n).min(n);
    if limit == n || how == Subset::First {
        return (0..limit).collect();
    }
    let classes = labels
        .iter()
        .map(|&l| usize::from(l) + 1)
        .max()
        .unwrap_or(0);
    let mut by_class: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push_back(i);
    }
    let mut chosen = Vec::with_capacity(limit);
    while chosen.len() < limit {
        for class in by_class.iter_mut() {
            if chosen.len() < limit
                && let Some(i) = class.pop_front()
            {
                chosen.push(i);
            }
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Which examples of a dataset a run uses: everything that decides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub train_limit: Option<usize>,
    pub val_limit: Option<usize>,
    pub subset: Subset,
    /// Training examples held out for stopping and model selection ([`holdout`]).
    pub holdout: Option<Holdout>,
    /// Seeds the held-out split.
    pub data_seed: u64,
}

impl Selection {
    /// The whole training set for training, the whole test set for validation.
    pub fn all() -> Selection {
        Selection {
            train_limit: None,
            val_limit: None,
            subset: Subset::Stratified,
            holdout: None,
            data_seed: 0,
        }
    }

    /// Indices (ascending) of the held-out examples and of the examples trained on, in the
    /// official training split: the held-out split is carved first, then the training subset is
    /// taken from what remains.
    pub fn training_indices(&self, train_labels: &[u8]) -> Result<(Vec<usize>, Vec<usize>)> {
        let held = match self.holdout {
            Some(h) => {
                holdout::holdout_indices(train_labels, h.size(train_labels.len()), self.data_seed)?
            }
            None => Vec::new(),
        };
        let mut is_held = vec![false; train_labels.len()];
        for &i in &held {
            is_held[i] = true;
        }
        let pool: Vec<usize> = (0..train_labels.len()).filter(|&i| !is_held[i]).collect();
        let pool_labels: Vec<u8> = pool.iter().map(|&i| train_labels[i]).collect();
        let train = subset_indices(&pool_labels, self.train_limit, self.subset)
            .into_iter()
            .map(|i| pool[i])
            .collect();
        Ok((held, train))
    }
}

/// Normalised tensors of one dataset configuration, on the training device.
pub struct Tensors {
    pub train_x: Tensor,
    pub train_y: Tensor,
    /// The official test set (or its `val_limit` subset): reported, never used for a decision.
    pub val_x: Tensor,
    pub val_y: Tensor,
    /// The held-out split of the training set, when the run has one.
    pub holdout: Option<(Tensor, Tensor)>,
    /// Channels, height, width.
    pub shape: [usize; 3],
    /// Labels are below this (the net's outputs, M).
    pub classes: usize,
    /// How every image was normalised.
    pub normalisation: Normalisation,
}

/// The normalisation of a run's images: pixel values / 255, then per channel minus `mean` and
/// divided by `std` (statistics of the images trained on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalisation {
    /// `images` (N × C × H × W, pixel values / 255) normalised, on `device`.
    pub fn apply(&self, images: Tensor, device: Device) -> Tensor {
        let channel = |v: &[f64]| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .view([1, -1, 1, 1])
        };
        ((images - channel(&self.mean)) / channel(&self.std)).to_device(device)
    }
}

impl Tensors {
    pub fn train_len(&self) -> usize {
        self.train_y.size()[0] as usize
    }
}

/// Selects the examples and normalises every channel with the mean and standard deviation of the
/// selected training images (neither the held-out nor the test images leak into the statistics).
pub fn prepare(raw: &RawDataset, selection: &Selection, device: Device) -> Result<Tensors> {
    let (held, train) = selection
        .training_indices(&raw.train.labels)
        .map_err(|e| e.context(format!("dataset '{}'", raw.name)))?;
    let (train_x, train_y) = gather(&raw.train, &train);
    let test = subset_indices(&raw.test.labels, selection.val_limit, selection.subset);
    let (val_x, val_y) = gather(&raw.test, &test);
    let mean = train_x.mean_dim(&[0i64, 2, 3][..], true, Kind::Float);
    let std = train_x.std_dim(&[0i64, 2, 3][..], false, true);
    check_variance(&raw.name, &std, train.len())?;
    let normalise = |x: Tensor| ((x - &mean) / &std).to_device(device);
    let holdout = (!held.is_empty()).then(|| {
        let (x, y) = gather(&raw.train, &held);
        (normalise(x), y.to_device(device))
    });
    Ok(Tensors {
        train_x: normalise(train_x),
        train_y: train_y.to_device(device),
        val_x: normalise(val_x),
        val_y: val_y.to_device(device),
        holdout,
        shape: raw.train.shape,
        classes: raw.classes,
        normalisation: Normalisation {
            mean: Vec::try_from(mean.flatten(0, -1).to_kind(Kind::Double))?,
            std: Vec::try_from(std.flatten(0, -1).to_kind(Kind::Double))?,
        },
    })
}

/// Refuses training images with a channel whose pixels are all equal: normalising it would
/// divide by zero, and nothing could be learnt from it.
fn check_variance(dataset: &str, std: &Tensor, examples: usize) -> Result<()> {
    let std: Vec<f64> = Vec::try_from(std.flatten(0, -1).to_kind(Kind::Double))?;
    if let Some(channel) = std.iter().position(|&s| s.is_nan() || s < 1e-6) {
        anyhow::bail!(
            "dataset '{dataset}': channel {channel} of the {examples} selected training images \
             has no variance (every pixel the same value); nothing to normalise or learn from — \
             check the dataset's files, or select more examples (train_limit)"
        );
    }
    Ok(())
}

/// Images in [0, 1] as float NCHW and labels as int64, of the examples at `keep`.
/// The first `limit` (all if `None`) test images of `raw` picked as `subset` picks them, with
/// their labels, normalised by `normalisation`: a saved net's evaluation.
pub fn test_images(
    raw: &RawDataset,
    limit: Option<usize>,
    subset: Subset,
    normalisation: &Normalisation,
    device: Device,
) -> (Tensor, Tensor) {
    let keep = subset_indices(&raw.test.labels, limit, subset);
    let (x, y) = gather(&raw.test, &keep);
    (normalisation.apply(x, device), y.to_device(device))
}

fn gather(split: &Split, keep: &[usize]) -> (Tensor, Tensor) {
    let [c, h, w] = split.shape;
    let per_image = c * h * w;
    let mut images = Vec::with_capacity(keep.len() * per_image);
    for &i in keep {
        images.extend_from_slice(&split.images[i * per_image..(i + 1) * per_image]);
    }
    let labels: Vec<i64> = keep.iter().map(|&i| split.labels[i] as i64).collect();
    let x = Tensor::from_slice(&images)
        .view([keep.len() as i64, c as i64, h as i64, w as i64])
        .to_kind(Kind::Float)
        / 255.0;
    (x, Tensor::from_slice(&labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_subset_balances_classes_in_file_order() {
        // 30 examples: class = i % 3 for the first 15, then all class 0.
        let labels: Vec<u8> = (0..30).map(|i| if i < 15 { i % 3 } else { 0 }).collect();
        let keep = subset_indices(&labels, Some(9), Subset::Stratified);
        assert_eq!(keep, vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let keep = subset_indices(&labels, Some(12), Subset::Stratified);
        let count = |c| keep.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (4, 4, 4));
        assert!(keep.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stratified_subset_fills_up_from_larger_classes() {
        let labels = [0u8, 0, 0, 0, 1];
        assert_eq!(
            subset_indices(&labels, Some(4), Subset::Stratified),
            vec![0, 1, 2, 4]
        );
    }

    #[test]
    fn first_subset_and_no_limit() {
        let labels = [5u8, 1, 1, 2];
        assert_eq!(subset_indices(&labels, Some(2), Subset::First), vec![0, 1]);
        assert_eq!(
            subset_indices(&labels, None, Subset::Stratified),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            subset_indices(&labels, Some(99), Subset::First),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn prepare_normalises_with_training_statistics() {
        let split = Split {
            images: vec![0, 255, 0, 255],
            labels: vec![0, 1, 0, 1],
            shape: [1, 1, 1],
        };
        let raw = RawDataset {
            name: "t".into(),
            train: split.clone(),
            test: split,
            classes: 2,
        };
        let selection = Selection {
            subset: Subset::First,
            ..Selection::all()
        };
        let t = prepare(&raw, &selection, Device::Cpu).unwrap();
        let mean = t.train_x.mean(Kind::Float).double_value(&[]);
        let std = t.train_x.std(false).double_value(&[]);
        assert!(
            mean.abs() < 1e-6 && (std - 1.0).abs() < 1e-6,
            "{mean} {std}"
        );
        assert_eq!(Vec::<i64>::try_from(&t.val_y).unwrap(), vec![0, 1, 0, 1]);
    }
}
