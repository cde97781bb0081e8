//! Reader for a user's NumPy `.npz` archive in the Keras datasets convention: the arrays
//! `x_train`, `y_train`, `x_test`, `y_test`. Images are uint8 or float (in [0, 1] or [0, 255],
//! stored as bytes after rounding), of shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C ∈ {1,
//! 3}; labels are integers 0..M-1 of shape (N) or (N, 1). The `.npy` format is read here (its
//! header is a Python dict literal of three keys), the archive with the `zip` crate.
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use super::Split;

/// An array's element type, as `.npy` headers name them (`descr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Int { bytes: usize, signed: bool },
    Float { bytes: usize },
}

/// One decoded `.npy` array: its shape and its elements as `f64` (exact for every integer a
/// label or pixel can be).
#[derive(Debug)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
    integer: bool,
}

/// Reads the training and test splits of the archive at `path`.
pub fn read(path: &Path) -> Result<(Split, Split)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a NumPy .npz (zip) archive", path.display()))?;
    let mut array = |name: &str| -> Result<Array> {
        let mut entry = archive.by_name(&format!("{name}.npy")).with_context(|| {
            format!(
                "{}: no array '{name}' (expected x_train, y_train, x_test, y_test)",
                path.display()
            )
        })?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        parse_npy(&bytes).with_context(|| format!("{}: array '{name}'", path.display()))
    };
    let (x_train, y_train) = (array("x_train")?, array("y_train")?);
    let (x_test, y_test) = (array("x_test")?, array("y_test")?);
    let split = |x: Array, y: Array, names: (&str, &str)| {
        split_of(x, y).with_context(|| format!("{}: {} and {}", path.display(), names.0, names.1))
    };
    Ok((
        split(x_train, y_train, ("x_train", "y_train"))?,
        split(x_test, y_test, ("x_test", "y_test"))?,
    ))
}

/// Images and labels as a split: NCHW bytes and byte labels.
fn split_of(x: Array, y: Array) -> Result<Split> {
    let n = x.shape.first().copied().unwrap_or(0);
    let labels_ok = y.shape == [n] || y.shape == [n, 1];
    ensure!(
        labels_ok,
        "{n} images need labels of shape ({n},) or ({n}, 1), found {:?}",
        y.shape
    );
    ensure!(
        y.integer,
        "labels must be integers, found floating-point numbers"
    );
    let labels = y
        .values
        .iter()
        .map(|&l| {
            ensure!((0.0..=255.0).contains(&l), "label {l} is outside 0..=255");
            Ok(l as u8)
        })
        .collect::<Result<Vec<u8>>>()?;
    let (shape, channels_last) = image_layout(&x.shape)?;
    let scale = pixel_scale(&x)?;
    let pixels: Vec<u8> = x
        .values
        .iter()
        .map(|&v| (v * scale).round() as u8)
        .collect();
    let images = if channels_last {
        to_channels_first(&pixels, n, shape)
    } else {
        pixels
    };
    Ok(Split {
        images,
        labels,
        shape,
    })
}

/// The (C, H, W) of images of array shape `dims`, and whether they are stored channels-last.
fn image_layout(dims: &[usize]) -> Result<([usize; 3], bool)> {
    let is_channels = |d: usize| d == 1 || d == 3;
    match *dims {
        [_, h, w] => Ok(([1, h, w], false)),
        [_, a, b, c] if is_channels(c) && !is_channels(a) => Ok(([c, a, b], true)),
        [_, a, b, c] if is_channels(a) && !is_channels(c) => Ok(([a, b, c], false)),
        [_, a, b, c] => bail!(
            "images of shape (N, {a}, {b}, {c}): cannot tell channels-last (N, H, W, C) from \
             channels-first (N, C, H, W); save them as (N, H, W, C) with C = 1 or 3 and H, W \
             other than 1 and 3"
        ),
        _ => {
            bail!("images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), found {dims:?}")
        }
    }
}

/// The factor that brings pixels to 0..=255: 1 for bytes and floats in [0, 255], 255 for floats
/// in [0, 1].
fn pixel_scale(x: &Array) -> Result<f64> {
    if let Some(at) = x.values.iter().position(|v| !v.is_finite()) {
        let per_image = x.shape.iter().skip(1).product::<usize>().max(1);
        bail!(
            "pixel {at} (image {}) is {}: images must be finite numbers",
            at / per_image,
            x.values[at]
        );
    }
    let (lo, hi) = x
        .values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if x.values.is_empty() {
        return Ok(1.0);
    }
    ensure!(
        lo >= 0.0 && hi <= 255.0,
        "pixel values span [{lo}, {hi}]; expected [0, 1] or [0, 255]"
    );
    Ok(if !x.integer && hi <= 1.0 { 255.0 } else { 1.0 })
}

fn to_channels_first(pixels: &[u8], n: usize, [c, h, w]: [usize; 3]) -> Vec<u8> {
    let mut out = vec![0; pixels.len()];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    out[((i * c + k) * h + y) * w + x] = pixels[((i * h + y) * w + x) * c + k];
                }
            }
        }
    }
    out
}

/// Decodes one `.npy` file: magic, version, a header dict with `descr`, `fortran_order` and
/// `shape`, then the elements in C order.
pub fn parse_npy(bytes: &[u8]) -> Result<Array> {
    ensure!(
        bytes.len() >= 10 && bytes.starts_with(b"\x93NUMPY"),
        "not a .npy array (bad magic)"
    );
    let (len_bytes, start) = match bytes[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => bail!("unsupported .npy version {v}"),
    };
    ensure!(bytes.len() >= start, "truncated .npy header");
    let mut len = [0u8; 4];
    len[..len_bytes].copy_from_slice(&bytes[8..8 + len_bytes]);
    let end = start + u32::from_le_bytes(len) as usize;
    let header = bytes
        .get(start..end)
        .context("truncated .npy header")
        .and_then(|h| std::str::from_utf8(h).context("a .npy header that is not text"))?;
    ensure!(
        header_value(header, "fortran_order")? == "False",
        "Fortran-ordered arrays are not read; save the array in C order (np.ascontiguousarray)"
    );
    let (dtype, little) = dtype_of(header_value(header, "descr")?.trim_matches('\''))?;
    let shape = shape_of(header_value(header, "shape")?)?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let size = match dtype {
        Dtype::Int { bytes, .. } | Dtype::Float { bytes } => bytes,
    };
    let data = &bytes[end..];
    let expected = count.and_then(|c| c.checked_mul(size));
    ensure!(
        expected == Some(data.len()),
        "shape {shape:?} of {size}-byte elements needs {} bytes, the array has {}",
        expected.map_or("more than 2^64".to_owned(), |b| b.to_string()),
        data.len()
    );
    let values = data
        .chunks_exact(size)
        .map(|e| value(e, dtype, little))
        .collect();
    Ok(Array {
        shape,
        values,
        integer: matches!(dtype, Dtype::Int { .. }),
    })
}

/// The text of `key`'s value in a header dict: up to the next `,` outside parentheses.
fn header_value<'h>(header: &'h str, key: &str) -> Result<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .with_context(|| format!("the .npy header has no '{key}': {header}"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')
        .unwrap_or("");
    let rest = rest.trim_start();
    let mut depth = 0;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            depth += i32::from(c == '(') - i32::from(c == ')');
            depth == 0 && (c == ',' || c == '}')
        })
        .map_or(rest.len(), |(i, c)| if c == ')' { i + 1 } else { i });
    Ok(rest[..end].trim())
}

fn dtype_of(descr: &str) -> Result<(Dtype, bool)> {
    let (order, kind) = descr.split_at(descr.len().min(1));
    let little = match order {
        "<" | "|" => true,
        ">" => false,
        _ => bail!("unsupported dtype '{descr}'"),
    };
    let dtype = match kind {
        "u1" => Dtype::Int {
            bytes: 1,
            signed: false,
        },
        "i1" => Dtype::Int {
            bytes: 1,
            signed: true,
        },
        "u2" => Dtype::Int {
            bytes: 2,
            signed: false,
        },
        "i2" => Dtype::Int {
            bytes: 2,
            signed: true,
        },
        "u4" => Dtype::Int {
            bytes: 4,
            signed: false,
        },
        "i4" => Dtype::Int {
            bytes: 4,
            signed: true,
        },
        "u8" => Dtype::Int {
            bytes: 8,
            signed: false,
        },
        "i8" => Dtype::Int {
            bytes: 8,
            signed: true,
        },
        "f4" => Dtype::Float { bytes: 4 },
        "f8" => Dtype::Float { bytes: 8 },
        _ => bail!("unsupported dtype '{descr}': use uint8, an integer type, float32 or float64"),
    };
    Ok((dtype, little))
}

fn shape_of(text: &str) -> Result<Vec<usize>> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .with_context(|| format!("a .npy shape that is not a tuple: {text}"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse()
                .with_context(|| format!("bad .npy dimension '{d}'"))
        })
        .collect()
}

fn value(e: &[u8], dtype: Dtype, little: bool) -> f64 {
    let mut b = [0u8; 8];
    if little {
        b[..e.len()].copy_from_slice(e);
    } else {
        b[..e.len()].copy_from_slice(&e.iter().rev().copied().collect::<Vec<_>>());
    }
    match dtype {
        Dtype::Float { bytes: 4 } => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::Float { .. } => f64::from_le_bytes(b),
        Dtype::Int { bytes, signed } => {
            let raw = u64::from_le_bytes(b);
            let bits = 8 * bytes as u32;
            if signed && bits < 64 && raw >> (bits - 1) & 1 == 1 {
                (raw as i64 - (1i64 << bits)) as f64
            } else if signed {
                raw as i64 as f64
            } else {
                raw as f64
            }
        }
    }
}

/// Encodes a C-order `.npy` array of `descr` (for tests and generated datasets).
pub fn encode_npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_arrays_of_every_supported_dtype_decode() {
        let a = parse_npy(&encode_npy("|u1", &[2, 3], &[0, 1, 2, 253, 254, 255])).unwrap();
        assert_eq!(
            (a.shape.clone(), a.values.clone()),
            (vec![2, 3], vec![0., 1., 2., 253., 254., 255.])
        );
        let f: Vec<u8> = [0.5f32, 1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&encode_npy("<f4", &[2], &f)).unwrap();
        assert_eq!(a.values, [0.5, 1.0]);
        let i: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = parse_npy(&encode_npy("<i8", &[2], &i)).unwrap();
        assert_eq!((a.values.clone(), a.integer), (vec![-3.0, 7.0], true));
        let i: Vec<u8> = [-2i16, 300].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            parse_npy(&encode_npy(">i2", &[2], &i)).unwrap().values,
            [-2.0, 300.0]
        );
        let err = parse_npy(&encode_npy("|u1", &[2, 3], &[0; 5])).unwrap_err();
        assert!(err.to_string().contains("needs 6 bytes"), "{err}");
        assert!(parse_npy(&encode_npy("<c8", &[1], &[0; 8])).is_err());
    }

    #[test]
    fn images_are_read_channels_last_or_first_and_ambiguity_is_refused() {
        let array = |shape: &[usize]| Array {
            values: (0..shape.iter().product::<usize>())
                .map(|i| (i % 256) as f64)
                .collect(),
            shape: shape.to_vec(),
            integer: true,
        };
        let labels = |n| Array {
            shape: vec![n],
            values: vec![0.0; n],
            integer: true,
        };
        let nhwc = split_of(array(&[2, 4, 5, 3]), labels(2)).unwrap();
        assert_eq!(nhwc.shape, [3, 4, 5]);
        // Pixel (y 0, x 1) of channel 2 of the first image is element 1·3 + 2 channels-last.
        assert_eq!(nhwc.images[2 * 20 + 1], 5);
        let nchw = split_of(array(&[2, 3, 4, 5]), labels(2)).unwrap();
        assert_eq!((nchw.shape, nchw.images[21]), ([3, 4, 5], 21));
        let err = split_of(array(&[2, 3, 4, 3]), labels(2)).unwrap_err();
        assert!(
            err.to_string().contains("cannot tell channels-last"),
            "{err}"
        );
        let err = split_of(array(&[2, 4, 4]), labels(3)).unwrap_err();
        assert!(
            err.to_string().contains("need labels of shape (2,)"),
            "{err}"
        );
    }
}
