//! SVHN's cropped digits: each `.mat` file holds `X`, uint8 [height, width, channels, N] in
//! MATLAB's column-major order, and `y`, N labels 1..=10 where 10 stands for the digit 0.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use super::Split;
use super::mat::{self, Array, Values};

/// The images and labels of one or more SVHN files (train, then `extra`), as one split.
pub fn read_split(paths: &[PathBuf]) -> Result<Split> {
    let mut split: Option<Split> = None;
    for path in paths {
        let part = read_file(path)?;
        match &mut split {
            None => split = Some(part),
            Some(s) => {
                ensure!(
                    s.shape == part.shape,
                    "{}: images of {:?} (channels, height, width), the files before it hold {:?}",
                    path.display(),
                    part.shape,
                    s.shape
                );
                s.images.extend_from_slice(&part.images);
                s.labels.extend_from_slice(&part.labels);
            }
        }
    }
    split.context("an SVHN split names no file")
}

fn read_file(path: &Path) -> Result<Split> {
    let arrays = mat::read(path)?;
    let find = |name: &str| {
        arrays
            .iter()
            .find(|a| a.name == name)
            .with_context(|| format!("{}: no array named '{name}'", path.display()))
    };
    let (x, y) = (find("X")?, find("y")?);
    let [h, w, c, n] = x.dims[..] else {
        bail!(
            "{}: X has dimensions {:?}, expected 4 (height, width, channels, images)",
            path.display(),
            x.dims
        );
    };
    let Values::U8(pixels) = &x.values else {
        bail!("{}: X is not uint8", path.display());
    };
    Ok(Split {
        images: to_nchw(pixels, [h, w, c, n]),
        labels: labels(path, y, n)?,
        shape: [c, h, w],
    })
}

/// Column-major [height, width, channels, images] to row-major images × channels × rows × columns.
fn to_nchw(pixels: &[u8], [h, w, c, n]: [usize; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels.len());
    for image in 0..n {
        for channel in 0..c {
            let plane = &pixels[(image * c + channel) * h * w..][..h * w];
            for row in 0..h {
                out.extend((0..w).map(|col| plane[row + h * col]));
            }
        }
    }
    out
}

/// Labels 1..=10 as digits 0..=9.
fn labels(path: &Path, y: &Array, images: usize) -> Result<Vec<u8>> {
    ensure!(
        y.values.len() == images,
        "{}: y holds {} labels for {images} images",
        path.display(),
        y.values.len()
    );
    (0..images)
        .map(|i| match y.values.get(i) {
            10.0 => Ok(0),
            v if v.fract() == 0.0 && (1.0..10.0).contains(&v) => Ok(v as u8),
            v => bail!(
                "{}: label {v} of image {i} is not one of SVHN's 1..=10",
                path.display()
            ),
        })
        .collect()
}
