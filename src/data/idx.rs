//! Reader for the IDX format of MNIST (and every dataset distributed like it: Fashion-MNIST,
//! KMNIST, …). Files may be gzip-compressed or raw.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use flate2::read::GzDecoder;

/// The only element type the image datasets use: unsigned bytes.
const UBYTE: u8 = 0x08;

/// A decoded IDX file: its dimensions and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path`, or `path.gz` if only the compressed file exists.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes).with_context(|| format!("{}: not a valid IDX file", path.display()))
}

/// Finds `<dir>/<stem>.gz` or `<dir>/<stem>`, preferring the compressed official file.
pub fn locate(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(format!("{stem}.gz")), dir.join(stem)]
        .into_iter()
        .find(|p| p.is_file())
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip data", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the IDX layout: two zero bytes, the element type, the number of dimensions, each
/// dimension as a big-endian u32, then the elements.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    ensure!(
        bytes.len() >= 4,
        "file is {} bytes, shorter than the 4-byte magic",
        bytes.len()
    );
    let (magic, rest) = bytes.split_at(4);
    if magic[0] != 0 || magic[1] != 0 {
        bail!("wrong magic number {magic:02x?}: expected 00 00 <type> <ndims>");
    }
    if magic[2] != UBYTE {
        bail!(
            "element type 0x{:02x} is not supported: expected 0x08 (unsigned byte)",
            magic[2]
        );
    }
    let ndims = magic[3] as usize;
    ensure!(ndims > 0, "zero dimensions in header");
    ensure!(
        rest.len() >= 4 * ndims,
        "header truncated: expected {ndims} dimension sizes"
    );
    let (header, data) = rest.split_at(4 * ndims);
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .with_context(|| format!("header dims {dims:?} overflow: no file holds that many bytes"))?;
    ensure!(
        data.len() == expected,
        "data truncated or padded: header dims {dims:?} need {expected} bytes, found {}",
        data.len()
    );
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// Serialises an array as IDX (used by tests and tools that write small datasets).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UBYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let parsed = parse_idx(&encode_idx(&[2, 3, 4], &data)).unwrap();
        assert_eq!(parsed.dims, vec![2, 3, 4]);
        assert_eq!(parsed.data, data);
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut bytes = encode_idx(&[1], &[3]);
        bytes[0] = 7;
        let err = parse_idx(&bytes).unwrap_err().to_string();
        assert!(err.contains("wrong magic"), "{err}");
    }

    #[test]
    fn non_byte_element_type_is_rejected() {
        let mut bytes = encode_idx(&[1], &[3]);
        bytes[2] = 0x0d;
        assert!(parse_idx(&bytes).unwrap_err().to_string().contains("0x0d"));
    }

    #[test]
    fn truncated_data_is_rejected_with_sizes() {
        let bytes = encode_idx(&[2, 2], &[1, 2, 3, 4]);
        let err = parse_idx(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("need 4 bytes, found 3"), "{err}");
    }
}
