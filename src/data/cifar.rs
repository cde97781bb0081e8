//! Reader for the CIFAR-10 binary format: each record is one label byte followed by 3,072 pixel
//! bytes, the 32×32 red plane, then green, then blue, each row-major — already NCHW order.
use std::path::Path;

use anyhow::{Context, Result, ensure};

pub const SIDE: usize = 32;
pub const CHANNELS: usize = 3;
pub const PIXELS: usize = CHANNELS * SIDE * SIDE;
pub const RECORD: usize = 1 + PIXELS;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// Labels and pixels (NCHW bytes) of the records in one or more batch files, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    pub labels: Vec<u8>,
    pub pixels: Vec<u8>,
}

pub fn read_batches(paths: &[impl AsRef<Path>]) -> Result<Records> {
    let mut records = Records::default();
    for path in paths {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        parse_into(&bytes, &mut records).with_context(|| format!("{}", path.display()))?;
    }
    Ok(records)
}

/// Appends the records of one batch file's bytes to `records`.
pub fn parse_into(bytes: &[u8], records: &mut Records) -> Result<()> {
    ensure!(
        !bytes.is_empty() && bytes.len().is_multiple_of(RECORD),
        "size {} is not a positive multiple of the {RECORD}-byte CIFAR-10 record (truncated file?)",
        bytes.len()
    );
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        ensure!(
            record[0] < 10,
            "record {i}: label {} out of range 0..=9",
            record[0]
        );
        records.labels.push(record[0]);
        records.pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Serialises records in the CIFAR-10 binary format (for tests and small generated datasets).
pub fn encode(labels: &[u8], pixels: &[u8]) -> Vec<u8> {
    assert_eq!(
        pixels.len(),
        labels.len() * PIXELS,
        "pixels must be labels × 3072"
    );
    labels
        .iter()
        .zip(pixels.chunks_exact(PIXELS))
        .flat_map(|(&l, p)| std::iter::once(l).chain(p.iter().copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let labels = [3u8, 8, 0];
        let pixels: Vec<u8> = (0..3 * PIXELS).map(|i| (i * 7 % 251) as u8).collect();
        let mut records = Records::default();
        parse_into(&encode(&labels, &pixels), &mut records).unwrap();
        assert_eq!(records.labels, labels);
        assert_eq!(records.pixels, pixels);
    }

    #[test]
    fn truncated_record_is_rejected() {
        let bytes = encode(&[1], &[0; PIXELS]);
        let err = parse_into(&bytes[..RECORD - 5], &mut Records::default()).unwrap_err();
        assert!(err.to_string().contains("3073-byte"), "{err}");
    }

    #[test]
    fn label_out_of_range_is_rejected() {
        let mut bytes = encode(&[1, 2], &[0; 2 * PIXELS]);
        bytes[RECORD] = 10;
        let err = parse_into(&bytes, &mut Records::default()).unwrap_err();
        assert!(err.to_string().contains("record 1: label 10"), "{err}");
    }
}
