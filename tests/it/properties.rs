//! No panic is reachable from input files: arbitrary bytes to the IDX and CIFAR-10 readers and
//! arbitrary TOML to the grid parser give a value or an error, never a panic.
use proptest::prelude::*;
use shallow::data::{cifar, idx};
use shallow::sweep::grid;

/// A TOML value of any type the grid might be given.
fn toml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9_]{0,10}".prop_map(|s| format!("\"{s}\"")),
        Just("\"mnist\"".to_owned()),
        Just("\"parallel\"".to_owned()),
    ];
    prop_oneof![
        scalar.clone(),
        prop::collection::vec(scalar, 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
}

/// The grid's own setting names and a few others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "dataset",
            "layout",
            "layers",
            "filters",
            "kernel",
            "activation",
            "pool",
            "batchnorm",
            "head",
            "lr",
            "batch_size",
            "epochs",
            "seed",
            "train_limit",
            "val_limit",
            "subset",
            "precision",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

/// Key = value lines, each key once.
fn table() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), toml_value()), 0..8).prop_map(|entries| {
        let mut seen = std::collections::HashSet::new();
        entries
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect::<String>()
    })
}

const SVHN_TRAIN: &[u8] = include_bytes!("../fixtures/svhn-train.mat");
const SVHN_TEST: &[u8] = include_bytes!("../fixtures/svhn-test.mat");

fn grid_text() -> impl Strategy<Value = String> {
    (table(), prop::collection::vec(table(), 0..3)).prop_map(|(runs, excludes)| {
        let mut text = format!("name = \"p\"\n[runs]\n{runs}");
        for rule in excludes {
            text += &format!("[[exclude]]\n{rule}");
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn idx_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = idx::parse_idx(&bytes);
    }

    #[test]
    fn idx_reader_never_panics_on_valid_magic(dims in prop::collection::vec(any::<u32>(), 0..5),
                                              tail in prop::collection::vec(any::<u8>(), 0..32)) {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in &dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(&tail);
        let _ = idx::parse_idx(&bytes);
    }

    #[test]
    fn cifar_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..8000)) {
        let mut records = cifar::Records::default();
        let _ = cifar::parse_into(&bytes, cifar::CIFAR100_FINE, &mut records);
        let _ = cifar::parse_into(&bytes, cifar::CIFAR10_LABELS, &mut records);
    }

    #[test]
    fn npy_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = shallow::data::npz::parse_npy(&bytes);
        // Past the magic, with a header length that points into the bytes.
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend((bytes.len().min(400) as u16).to_le_bytes());
        npy.extend(&bytes);
        let _ = shallow::data::npz::parse_npy(&npy);
    }

    #[test]
    fn mat_reader_never_panics(tail in prop::collection::vec(any::<u8>(), 0..300), big in any::<bool>()) {
        let _ = shallow::data::mat::parse(&tail);
        let mut bytes = vec![b' '; 126];
        bytes.extend(if big { b"MI" } else { b"IM" });
        bytes.extend(&tail);
        let _ = shallow::data::mat::parse(&bytes);
    }

    /// A SciPy-written file, cut short or with one byte changed, is an error or a read, never a
    /// panic.
    #[test]
    fn mat_reader_never_panics_on_damaged_files(cut in 0usize..2000, at in 0usize..2000, byte in any::<u8>(),
                                                 compressed in any::<bool>()) {
        let file: &[u8] = if compressed { SVHN_TRAIN } else { SVHN_TEST };
        let _ = shallow::data::mat::parse(&file[..cut.min(file.len())]);
        let mut changed = file.to_vec();
        let at = 128 + at % (changed.len() - 128);
        changed[at] = byte;
        let _ = shallow::data::mat::parse(&changed);
    }

    /// Any header the reader accepts is read back exactly: a valid array of any shape and dtype.
    #[test]
    fn npy_arrays_round_trip(dims in prop::collection::vec(1usize..5, 1..4), wide in any::<bool>()) {
        let count: usize = dims.iter().product();
        let (descr, size) = if wide { ("<i4", 4) } else { ("|u1", 1) };
        let values: Vec<u8> = (0..count).map(|i| (i * 37 % 200) as u8).collect();
        let data: Vec<u8> = values
            .iter()
            .flat_map(|&v| {
                let mut e = vec![0u8; size];
                e[0] = v;
                e
            })
            .collect();
        let array = shallow::data::npz::parse_npy(&shallow::data::npz::encode_npy(descr, &dims, &data)).unwrap();
        prop_assert_eq!(&array.shape, &dims);
        prop_assert_eq!(array.values, values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    }

    #[test]
    fn grid_parser_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = grid::parse(&text, "fuzz.toml");
    }

    #[test]
    fn grid_parser_never_panics_on_any_grid(text in grid_text()) {
        let _ = grid::parse(&text, "fuzz.toml");
    }
}
