//! Reader for a user's image folder in the torchvision `ImageFolder` convention:
//! `train/<class>/*.png|jpg` and `test/<class>/*`, classes numbered in the sorted order of the
//! training split's folder names. Images are decoded with the `image` crate: all grey images give
//! one channel, any colour image makes every image RGB; every image must have one size.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use image::DynamicImage;

use super::Split;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Reads the training and test splits of the folder `root`.
pub fn read(root: &Path) -> Result<(Split, Split)> {
    let classes = class_names(&root.join("train"))?;
    let train = read_split(&root.join("train"), &classes)?;
    let test = read_split(&root.join("test"), &classes)?;
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

/// Every image of a split with its class, in class then file-name order.
fn read_split(dir: &Path, classes: &[String]) -> Result<Vec<(u8, DynamicImage)>> {
    let mut images = Vec::new();
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
        for file in image_files(&path)? {
            let image = image::open(&file)
                .with_context(|| format!("cannot read image {}", file.display()))?;
            images.push((class as u8, file, image));
        }
    }
    images.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    ensure!(!images.is_empty(), "{}: no images", dir.display());
    let first = (images[0].2.width(), images[0].2.height());
    if let Some((_, file, image)) = images
        .iter()
        .find(|(_, _, i)| (i.width(), i.height()) != first)
    {
        bail!(
            "{}: {}×{} pixels, but {} is {}×{}: every image must have one size",
            file.display(),
            image.width(),
            image.height(),
            images[0].1.display(),
            first.0,
            first.1
        );
    }
    Ok(images.into_iter().map(|(c, _, i)| (c, i)).collect())
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
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
