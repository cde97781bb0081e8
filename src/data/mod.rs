//! Datasets: the official file formats, their download, deterministic subsets and normalised
//! tensors ready for training.
pub mod catalog;
pub mod cifar;
pub mod download;
pub mod folder;
pub mod holdout;
pub mod idx;
pub mod mat;
pub mod npz;
mod selection;
mod svhn;
mod user;

pub use holdout::Holdout;
pub use selection::{
    Normalisation, Selection, Subset, Tensors, prepare, subset_indices, test_images,
};
pub use user::{FOLDER, NPZ, content_hash, user_path};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

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
    match builtin(name).and_then(|b| b.format.split_files()) {
        Some((train, test)) => train
            .iter()
            .chain([&test])
            .map(|f| dir.join(f))
            .filter(|p| !p.is_file())
            .collect(),
        None => IDX_FILES
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
        let npz = name.starts_with(NPZ);
        if path.is_dir() {
            bail!(
                "dataset '{name}': {} is a folder; npz: names a .npz file (a folder of images \
                 is folder:PATH)",
                path.display()
            );
        }
        if path.exists() && !npz {
            bail!(
                "dataset '{name}': {} is a file; folder: names a folder holding train/<class>/ \
                 and test/<class>/ (a NumPy archive is npz:PATH)",
                path.display()
            );
        }
        bail!(
            "dataset '{name}': no such {} {}",
            if npz { "file" } else { "folder" },
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

/// What sizing a run needs of its dataset: the image shape, the classes and the sizes of the
/// training and test splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Channels, height, width of an image.
    pub shape: [usize; 3],
    pub classes: usize,
    /// Images in the training and test splits.
    pub sizes: (usize, usize),
}

impl Builtin {
    /// A built-in dataset's facts, from the catalog (no file read).
    pub fn facts(&self) -> Facts {
        Facts {
            shape: self.shape,
            classes: self.classes,
            sizes: self.sizes,
        }
    }
}

impl RawDataset {
    /// The facts of the dataset as read.
    pub fn facts(&self) -> Facts {
        Facts {
            shape: self.train.shape,
            classes: self.classes,
            sizes: (self.train.len(), self.test.len()),
        }
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
        Some(catalog::Format::Svhn { train, test }) => {
            let paths: Vec<PathBuf> = train.iter().map(|f| dir.join(f)).collect();
            (
                svhn::read_split(&paths)?,
                svhn::read_split(&[dir.join(test)])?,
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
