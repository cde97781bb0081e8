//! Reader for a user's image folder in the torchvision `ImageFolder` convention:
//! `train/<class>/*.png|jpg` and `test/<class>/*`, classes numbered in the sorted order of the
//! training split's folder names. Images are decoded with the `image` crate: all grey images give
//! one channel, any colour image makes every image RGB; every image must have one size.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use image::DynamicImage;

use super::Split;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The most image files a split may list: a bound on what reading a folder may take on (a
/// dataset this large belongs in another format).
pub const MAX_IMAGES: usize = 10_000_000;

/// Every file a folder dataset is made of, and nothing else: the image files directly in each
/// class folder of each split, in class then file-name order, with their classes. Nothing below
/// a class folder is visited, so no walk can loop: a symlinked class folder or image is followed
/// (one step, as any open does), a symlink or sub-folder inside a class folder is ignored.
#[derive(Debug)]
pub struct Listing {
    pub classes: Vec<String>,
    pub train: Vec<(u8, PathBuf)>,
    pub test: Vec<(u8, PathBuf)>,
}

impl Listing {
    /// The listing of the folder dataset `root`.
    pub fn of(root: &Path) -> Result<Listing> {
        let classes = class_names(&root.join("train"))?;
        let train = list_split(&root.join("train"), &classes, true)?;
        let test = list_split(&root.join("test"), &classes, false)?;
        Ok(Listing {
            classes,
            train,
            test,
        })
    }

    /// Every file, training split first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.train
            .iter()
            .chain(&self.test)
            .map(|(_, p)| p.as_path())
    }
}

/// Reads the training and test splits of the folder `root`.
pub fn read(root: &Path) -> Result<(Split, Split)> {
    let listing = Listing::of(root)?;
    let train = decode(&listing.train)?;
    let test = decode(&listing.test)?;
    let grey = train.iter().chain(&test).all(|(_, image)| is_grey(image));
    Ok((to_split(train, grey)?, to_split(test, grey)?))
}

/// The class folders of the training split, sorted: class i is the i-th name.
fn class_names(train: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(train)
        .with_context(|| format!("cannot read {} (expected train/<class>/…)", train.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    ensure!(
        names.len() >= 2 && names.len() <= 256,
        "{}: {} class folders; classification needs 2 to 256",
        train.display(),
        names.len()
    );
    Ok(names)
}

/// The image files of one split with their classes, in class then file-name order. Every class
/// folder of the training split must hold images (a class never trained on cannot be compared);
/// the test split may lack a class, never add one.
fn list_split(dir: &Path, classes: &[String], training: bool) -> Result<Vec<(u8, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some(class) = classes.iter().position(|c| *c == name) else {
            bail!(
                "{}: class folder '{name}' is not among the training split's classes",
                path.display()
            );
        };
        let images = image_files(&path)?;
        ensure!(
            !training || !images.is_empty(),
            "{}: class '{name}' has no images ({}): add images to it or remove the folder",
            path.display(),
            EXTENSIONS.join(", ")
        );
        files.extend(images.into_iter().map(|f| (class as u8, f)));
        ensure!(
            files.len() <= MAX_IMAGES,
            "{}: more than {MAX_IMAGES} images in one split",
            dir.display()
        );
    }
    files.sort();
    ensure!(!files.is_empty(), "{}: no images", dir.display());
    Ok(files)
}

/// Decodes the images of a split; all must have one size.
fn decode(files: &[(u8, PathBuf)]) -> Result<Vec<(u8, DynamicImage)>> {
    let mut images = Vec::with_capacity(files.len());
    for (class, file) in files {
        let image =
            image::open(file).with_context(|| format!("cannot read image {}", file.display()))?;
        images.push((*class, image));
    }
    let first = (images[0].1.width(), images[0].1.height());
    if let Some(at) = images
        .iter()
        .position(|(_, i)| (i.width(), i.height()) != first)
    {
        bail!(
            "{}: {}×{} pixels, but {} is {}×{}: every image must have one size",
            files[at].1.display(),
            images[at].1.width(),
            images[at].1.height(),
            files[0].1.display(),
            first.0,
            first.1
        );
    }
    Ok(images)
}

/// The image files directly in `dir` (regular files, or links to them), sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn is_grey(image: &DynamicImage) -> bool {
    !image.color().has_color()
}

/// Images as NCHW bytes (grey: one channel; else RGB) and their labels.
fn to_split(images: Vec<(u8, DynamicImage)>, grey: bool) -> Result<Split> {
    let (w, h) = (images[0].1.width() as usize, images[0].1.height() as usize);
    let c = if grey { 1 } else { 3 };
    let mut pixels = Vec::with_capacity(images.len() * c * h * w);
    let mut labels = Vec::with_capacity(images.len());
    for (label, image) in images {
        labels.push(label);
        if grey {
            pixels.extend(image.to_luma8().into_raw());
        } else {
            let rgb = image.to_rgb8().into_raw();
            for k in 0..3 {
                pixels.extend(rgb.iter().skip(k).step_by(3));
            }
        }
    }
    Ok(Split {
        images: pixels,
        labels,
        shape: [c, h, w],
    })
}
