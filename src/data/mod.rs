//! Datasets: the official file formats, their download, deterministic subsets and normalised
//! tensors ready for training.
pub mod catalog;
pub mod cifar;
pub mod download;
pub mod folder;
pub mod holdout;
pub mod idx;
pub mod npz;

pub use holdout::Holdout;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use catalog::{BUILTIN, Builtin, builtin};

pub const CIFAR10: &str = "cifar10";
pub const MNIST: &str = "mnist";
const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Where datasets live: the `--data-dir` flag, else `$SHALLOW_DATA`, else `./data`.
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("SHALLOW_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// The prefix of a dataset that is a user's NumPy archive: `npz:PATH`.
pub const NPZ: &str = "npz:";
/// The prefix of a dataset that is a user's image folder: `folder:PATH`.
pub const FOLDER: &str = "folder:";

/// The file or folder of a user's dataset (`npz:PATH`, `folder:PATH`): PATH, relative to the
/// data directory unless absolute (so that workers on other machines find it in their own data
/// directories).
pub fn user_path(data_dir: &Path, name: &str) -> Option<PathBuf> {
    [NPZ, FOLDER]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .map(|path| data_dir.join(path))
}

/// The SHA-256 of a user's data (the `npz:` file, or every file of a `folder:` with its path),
/// which becomes part of its runs' identity; `None` for other datasets.
pub fn content_hash(data_dir: &Path, name: &str) -> Result<Option<String>> {
    let Some(path) = user_path(data_dir, name) else {
        return Ok(None);
    };
    let mut hash = <sha2::Sha256 as sha2::Digest>::new();
    let mut files = vec![];
    collect_files(&path, &mut files)?;
    files.sort();
    for file in files {
        let relative = file.strip_prefix(&path).unwrap_or(&file);
        sha2::Digest::update(&mut hash, relative.to_string_lossy().as_bytes());
        let mut f = std::fs::File::open(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        std::io::copy(&mut f, &mut hash)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(Some(hex::encode(sha2::Digest::finalize(hash))))
}

/// `path` if a file, else every file below it.
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if !path.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let entries =
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
    for entry in entries {
        collect_files(&entry?.path(), files)?;
    }
    Ok(())
}

/// The folder holding one dataset: a built-in one's (CIFAR's is its extracted archive), a user
/// archive's path, else the folder of that name, of the four IDX files named as MNIST's.
pub fn dataset_dir(data_dir: &Path, name: &str) -> PathBuf {
    user_path(data_dir, name)
        .unwrap_or_else(|| data_dir.join(builtin(name).map_or(name, |b| b.folder)))
}

/// The files a dataset needs that are not in `data_dir` (IDX files may be gzipped or raw).
pub fn missing_files(data_dir: &Path, name: &str) -> Vec<PathBuf> {
    if let Some(path) = user_path(data_dir, name) {
        let there = if name.starts_with(NPZ) {
            path.is_file()
        } else {
            path.is_dir()
        };
        return if there { vec![] } else { vec![path] };
    }
    let dir = dataset_dir(data_dir, name);
    match builtin(name).map(|b| b.format) {
        Some(catalog::Format::Cifar { train, test, .. }) => train
            .iter()
            .chain([&test])
            .map(|f| dir.join(f))
            .filter(|p| !p.is_file())
            .collect(),
        Some(catalog::Format::Idx) | None => IDX_FILES
            .iter()
            .filter(|stem| idx::locate(&dir, stem).is_none())
            .map(|stem| dir.join(format!("{stem}.gz")))
            .collect(),
    }
}

/// Makes sure a dataset is on disk: downloads it when it is missing and one of the datasets with
/// an official source, unless `offline` forbids it.
pub fn ensure_available(data_dir: &Path, name: &str, offline: bool) -> Result<()> {
    if let Some(source) = needs_download(data_dir, name, offline)? {
        tracing::info!(
            "dataset '{name}' missing from {}, downloading",
            data_dir.display()
        );
        download::fetch(source, data_dir, &download::mirror_from_env())?;
    }
    Ok(())
}

/// Whether a dataset can be had, without downloading anything: `None` when its files are there,
/// its download source when it is missing but may be downloaded, an error naming the missing files
/// otherwise (an unknown dataset, or `offline`).
pub fn needs_download(
    data_dir: &Path,
    name: &str,
    offline: bool,
) -> Result<Option<&'static Builtin>> {
    let missing = missing_files(data_dir, name);
    if missing.is_empty() {
        return Ok(None);
    }
    let list = missing
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n");
    if let Some(path) = user_path(data_dir, name) {
        bail!(
            "dataset '{name}': no such file or folder {}",
            path.display()
        );
    }
    let Some(source) = builtin(name) else {
        bail!(
            "unknown dataset '{name}': it is none of the built-in datasets ({}, which can be \
             downloaded) nor a complete IDX dataset in {}; missing files:\n{list}",
            catalog::names().join(", "),
            data_dir.display()
        );
    };
    if offline {
        bail!(
            "dataset '{name}' is incomplete and --offline forbids downloading it; missing files:\n{list}\n\
             (data directory: {}; set it with --data-dir or SHALLOW_DATA)",
            data_dir.display()
        );
    }
    Ok(Some(source))
}

/// Images as bytes in NCHW order, with their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    /// Channels, height, width of one image.
    pub shape: [usize; 3],
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A dataset as decoded from its files: the training split and the official test split, which
/// serves as validation set.
#[derive(Debug, Clone)]
pub struct RawDataset {
    pub name: String,
    pub train: Split,
    pub test: Split,
    /// Labels are below this: a built-in dataset's count, else one more than the largest label.
    pub classes: usize,
}

/// Decodes a dataset from `data_dir` (no download; see [`ensure_available`]).
pub fn load(data_dir: &Path, name: &str) -> Result<RawDataset> {
    let dir = dataset_dir(data_dir, name);
    let (train, test) = match builtin(name).map(|b| b.format) {
        _ if name.starts_with(NPZ) => npz::read(&dir)?,
        _ if name.starts_with(FOLDER) => folder::read(&dir)?,
        Some(catalog::Format::Cifar {
            labels,
            train,
            test,
        }) => {
            let paths: Vec<PathBuf> = train.iter().map(|f| dir.join(f)).collect();
            (
                cifar_split(cifar::read_batches(&paths, labels)?),
                cifar_split(cifar::read_batches(&[dir.join(test)], labels)?),
            )
        }
        Some(catalog::Format::Idx) | None => (
            idx_split(&dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
            idx_split(&dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
        ),
    };
    check_splits(&dir, &train, &test)?;
    let classes = match builtin(name) {
        Some(b) => b.classes,
        None => classes_of(&dir, &train)?,
    };
    check_labels(&dir, &train, &test, classes)?;
    Ok(RawDataset {
        name: name.to_owned(),
        train,
        test,
        classes,
    })
}

/// The classes of a dataset of the user's: labels 0..M, every one of them in the training split
/// (a class never trained on has no place in a comparison of how well nets learn).
fn classes_of(dir: &Path, train: &Split) -> Result<usize> {
    let classes = train.labels.iter().max().map_or(0, |&t| usize::from(t) + 1);
    ensure!(
        classes >= 2,
        "{}: the training labels name {classes} class(es); classification needs at least 2",
        dir.display()
    );
    let mut seen = vec![false; classes];
    for &l in &train.labels {
        seen[usize::from(l)] = true;
    }
    if let Some(empty) = seen.iter().position(|s| !s) {
        bail!(
            "{}: class {empty} of 0..={} has no training example (labels must be 0..M-1, each \
             class present)",
            dir.display(),
            classes - 1
        );
    }
    Ok(classes)
}

/// Every label of both splits below `classes`.
fn check_labels(dir: &Path, train: &Split, test: &Split, classes: usize) -> Result<()> {
    for (split, what) in [(train, "training"), (test, "test (validation)")] {
        if let Some(at) = split.labels.iter().position(|&l| usize::from(l) >= classes) {
            bail!(
                "{}: the {what} split's label {} at index {at} is outside the dataset's classes \
                 0..={}",
                dir.display(),
                split.labels[at],
                classes - 1
            );
        }
    }
    Ok(())
}

/// A dataset the nets can train on: images in both splits, of one shape.
fn check_splits(dir: &Path, train: &Split, test: &Split) -> Result<()> {
    for (split, what) in [(train, "training"), (test, "test (validation)")] {
        ensure!(
            !split.is_empty(),
            "{}: the {what} split holds no images",
            dir.display()
        );
        ensure!(
            split.shape.iter().all(|&d| d > 0),
            "{}: the {what} images have an empty dimension ({})",
            dir.display(),
            shape_text(split.shape)
        );
    }
    ensure!(
        train.shape == test.shape,
        "{}: training images are {} but test (validation) images are {}: both splits must share \
         one shape and channel count",
        dir.display(),
        shape_text(train.shape),
        shape_text(test.shape)
    );
    Ok(())
}

fn shape_text([c, h, w]: [usize; 3]) -> String {
    format!("{c}×{h}×{w} (channels×height×width)")
}

fn cifar_split(records: cifar::Records) -> Split {
    Split {
        images: records.pixels,
        labels: records.labels,
        shape: [cifar::CHANNELS, cifar::SIDE, cifar::SIDE],
    }
}

fn idx_split(dir: &Path, images_stem: &str, labels_stem: &str) -> Result<Split> {
    let find = |stem: &str| {
        idx::locate(dir, stem)
            .with_context(|| format!("missing {}/{stem}.gz (or uncompressed)", dir.display()))
    };
    let (images_path, labels_path) = (find(images_stem)?, find(labels_stem)?);
    let images = idx::read_idx(&images_path)?;
    let labels = idx::read_idx(&labels_path)?;
    let [n, h, w] = images.dims[..] else {
        bail!(
            "{}: expected 3 dimensions (count, rows, columns), found {:?}",
            images_path.display(),
            images.dims
        );
    };
    ensure!(
        labels.dims == [n],
        "{}: expected {n} labels to match {}, found dimensions {:?}",
        labels_path.display(),
        images_path.display(),
        labels.dims
    );
    Ok(Split {
        images: images.data,
        labels: labels.data,
        shape: [1, h, w],
    })
}

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
