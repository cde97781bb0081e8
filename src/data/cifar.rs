//! Reader for the CIFAR binary formats. A CIFAR-10 record is one label byte followed by 3,072
//! pixel bytes, the 32×32 red plane, then green, then blue, each row-major — already NCHW order.
//! A CIFAR-100 record has two label bytes, the coarse (20 superclasses) then the fine (100
//! classes), before the same pixels.
use std::path::Path;

use anyhow::{Context, Result, ensure};

pub const SIDE: usize = 32;
pub const CHANNELS: usize = 3;
pub const PIXELS: usize = CHANNELS * SIDE * SIDE;
/// A CIFAR-10 record's size.
pub const RECORD: usize = 1 + PIXELS;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// The label bytes of one flavour of the format, and which of them a dataset uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// Label bytes before each record's pixels.
    pub bytes: usize,
    /// The one used (0-based).
    pub used: usize,
    /// Labels are below this.
    pub classes: usize,
}

/// CIFAR-10: one label of 10 classes.
pub const CIFAR10_LABELS: Labels = Labels {
    bytes: 1,
    used: 0,
    classes: 10,
};
/// CIFAR-100 with its fine labels (100 classes).
pub const CIFAR100_FINE: Labels = Labels {
    bytes: 2,
    used: 1,
    classes: 100,
};
/// CIFAR-100 with its coarse labels (20 superclasses).
pub const CIFAR100_COARSE: Labels = Labels {
    bytes: 2,
    used: 0,
    classes: 20,
};

/// Labels and pixels (NCHW bytes) of the records in one or more batch files, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    pub labels: Vec<u8>,
    pub pixels: Vec<u8>,
}

pub fn read_batches(paths: &[impl AsRef<Path>], labels: Labels) -> Result<Records> {
    let mut records = Records::default();
    for path in paths {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        parse_into(&bytes, labels, &mut records).with_context(|| format!("{}", path.display()))?;
    }
    Ok(records)
}

/// Appends the records of one batch file's bytes to `records`.
pub fn parse_into(bytes: &[u8], labels: Labels, records: &mut Records) -> Result<()> {
    let record = labels.bytes + PIXELS;
    ensure!(
        !bytes.is_empty() && bytes.len().is_multiple_of(record),
        "size {} is not a positive multiple of the {record}-byte record (truncated file?)",
        bytes.len()
    );
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = r[labels.used];
        ensure!(
            usize::from(label) < labels.classes,
            "record {i}: label {label} out of range 0..={}",
            labels.classes - 1
        );
        records.labels.push(label);
        records.pixels.extend_from_slice(&r[labels.bytes..]);
    }
    Ok(())
}

/// Serialises records in the CIFAR binary format, each with `label_bytes` (its first label byte
/// repeated: tests and small generated datasets).
pub fn encode(label_bytes: usize, labels: &[u8], pixels: &[u8]) -> Vec<u8> {
    assert_eq!(
        pixels.len(),
        labels.len() * PIXELS,
        "pixels must be labels × 3072"
    );
    labels
        .iter()
        .zip(pixels.chunks_exact(PIXELS))
        .flat_map(|(&l, p)| std::iter::repeat_n(l, label_bytes).chain(p.iter().copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let labels = [3u8, 8, 0];
        let pixels: Vec<u8> = (0..3 * PIXELS).map(|i| (i * 7 % 251) as u8).collect();
        for format in [CIFAR10_LABELS, CIFAR100_FINE, CIFAR100_COARSE] {
            let mut records = Records::default();
            parse_into(
                &encode(format.bytes, &labels, &pixels),
                format,
                &mut records,
            )
            .unwrap();
            assert_eq!(records.labels, labels);
            assert_eq!(records.pixels, pixels);
        }
    }

    #[test]
    fn cifar100_reads_the_fine_or_the_coarse_label() {
        let mut bytes = encode(2, &[0], &[9; PIXELS]);
        (bytes[0], bytes[1]) = (17, 93);
        let read = |labels| {
            let mut records = Records::default();
            parse_into(&bytes, labels, &mut records).unwrap();
            records.labels[0]
        };
        assert_eq!((read(CIFAR100_FINE), read(CIFAR100_COARSE)), (93, 17));
    }

    #[test]
    fn truncated_record_is_rejected() {
        let bytes = encode(1, &[1], &[0; PIXELS]);
        let err = parse_into(
            &bytes[..RECORD - 5],
            CIFAR10_LABELS,
            &mut Records::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("3073-byte"), "{err}");
    }

    #[test]
    fn label_out_of_range_is_rejected() {
        let mut bytes = encode(1, &[1, 2], &[0; 2 * PIXELS]);
        bytes[RECORD] = 10;
        let err = parse_into(&bytes, CIFAR10_LABELS, &mut Records::default()).unwrap_err();
        assert!(err.to_string().contains("record 1: label 10"), "{err}");
        let mut bytes = encode(2, &[1], &[0; PIXELS]);
        bytes[0] = 20;
        let err = parse_into(&bytes, CIFAR100_COARSE, &mut Records::default()).unwrap_err();
        assert!(err.to_string().contains("out of range 0..=19"), "{err}");
    }
}
