//! The built-in datasets, each defined once: its folder in the data directory, its file format,
//! its classes, its official source with the pinned SHA-256 of every file, its download size and
//! licence. Any other dataset name is a folder of the four IDX files named as MNIST's.
use super::cifar::{self, Labels};

/// A file and its official SHA-256.
pub type Checked = (&'static str, &'static str);

/// How a dataset's files are laid out.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    /// The four IDX files of MNIST (gzipped or not).
    Idx,
    /// CIFAR binary batches: the training files, the test file, and which label byte is used.
    Cifar {
        labels: Labels,
        train: &'static [&'static str],
        test: &'static str,
    },
    /// SVHN's MATLAB files: the training files (train, then `extra` if used), the test file.
    Svhn {
        train: &'static [&'static str],
        test: &'static str,
    },
}

impl Format {
    /// The training files and the test file, for formats that name theirs (not IDX folders).
    pub fn split_files(&self) -> Option<(&'static [&'static str], &'static str)> {
        match *self {
            Format::Idx => None,
            Format::Cifar { train, test, .. } | Format::Svhn { train, test } => Some((train, test)),
        }
    }
}

/// How a dataset is downloaded.
#[derive(Debug, Clone, Copy)]
pub enum Files {
    /// Each file on its own.
    Each(&'static [Checked]),
    /// One tar.gz archive, whose `members` under its folder `root` are extracted and checked.
    Archive {
        archive: &'static str,
        root: &'static str,
        members: &'static [Checked],
    },
}

/// A dataset `shallow` knows: `shallow data fetch NAME` downloads it, and a run naming it fetches
/// it when missing.
#[derive(Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub title: &'static str,
    /// Its folder in the data directory.
    pub folder: &'static str,
    pub format: Format,
    pub classes: usize,
    /// Whether a left–right flip keeps an image's class: not for digits and characters
    /// (`augment = crop-flip` is refused for them unless forced).
    pub flips: bool,
    /// Channels, height, width of an image.
    pub shape: [usize; 3],
    /// Images in the official training and test splits.
    pub sizes: (usize, usize),
    /// Base URLs tried in order.
    pub mirrors: &'static [&'static str],
    pub files: Files,
    /// Download size, in MB.
    pub megabytes: u32,
    pub licence: &'static str,
}

const IDX_TRAIN_TEST: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The four IDX files with their SHA-256s, in [`IDX_TRAIN_TEST`] order.
const fn idx_files(sha: [&'static str; 4]) -> [Checked; 4] {
    [
        (IDX_TRAIN_TEST[0], sha[0]),
        (IDX_TRAIN_TEST[1], sha[1]),
        (IDX_TRAIN_TEST[2], sha[2]),
        (IDX_TRAIN_TEST[3], sha[3]),
    ]
}

const MNIST_FILES: [Checked; 4] = idx_files([
    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
]);

const FASHION_FILES: [Checked; 4] = idx_files([
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
]);

const KMNIST_FILES: [Checked; 4] = idx_files([
    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
]);

/// The members of `cifar-10-binary.tar.gz`; the archive has no published checksum, its members
/// are checked one by one.
const CIFAR10_MEMBERS: [Checked; 7] = [
    (
        "data_batch_1.bin",
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    ),
    (
        "data_batch_2.bin",
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    ),
    (
        "data_batch_3.bin",
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    ),
    (
        "data_batch_4.bin",
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    ),
    (
        "data_batch_5.bin",
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    ),
    (
        "test_batch.bin",
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    ),
    (
        "batches.meta.txt",
        "558e74b5e208382e186da55784b4bac2cd52e558448e1b5800990fdb28ed8033",
    ),
];

const CIFAR100_MEMBERS: [Checked; 2] = [
    (
        "train.bin",
        "f31298fc616915fa142368359df1c4ca2ae984d6915ca468b998a5ec6aeebf29",
    ),
    (
        "test.bin",
        "d8b1e6b7b3bee4020055f0699b111f60b1af1e262aeb93a0b659061746f8224a",
    ),
];

/// SVHN's train, test and extra files (their SHA-256s as published with torchvision's and other
/// loaders; the site publishes none).
const SVHN_FILES: [Checked; 3] = [
    (
        "train_32x32.mat",
        "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
    ),
    (
        "test_32x32.mat",
        "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
    ),
    (
        "extra_32x32.mat",
        "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",
    ),
];
const STANFORD: &[&str] = &["http://ufldl.stanford.edu/housenumbers/"];
const SVHN_LICENCE: &str = "non-commercial use only; cite Netzer et al. (2011)";

const TORONTO: &[&str] = &["https://www.cs.toronto.edu/~kriz/"];
const CIFAR_LICENCE: &str = "none stated; cite Krizhevsky (2009)";

const CIFAR100_FILES: Files = Files::Archive {
    archive: "cifar-100-binary.tar.gz",
    root: "cifar-100-binary",
    members: &CIFAR100_MEMBERS,
};

const fn cifar100(labels: Labels) -> Format {
    Format::Cifar {
        labels,
        train: &["train.bin"],
        test: "test.bin",
    }
}

/// Every built-in dataset.
pub const BUILTIN: [Builtin; 8] = [
    Builtin {
        name: "mnist",
        title: "MNIST handwritten digits (28×28 grey)",
        folder: "mnist",
        format: Format::Idx,
        classes: 10,
        flips: false,
        shape: [1, 28, 28],
        sizes: (60_000, 10_000),
        mirrors: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        files: Files::Each(&MNIST_FILES),
        megabytes: 12,
        licence: "none stated; cite LeCun et al. (1998)",
    },
    Builtin {
        name: "fashion",
        title: "Fashion-MNIST clothing (28×28 grey)",
        folder: "fashion",
        format: Format::Idx,
        classes: 10,
        flips: true,
        shape: [1, 28, 28],
        sizes: (60_000, 10_000),
        mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        files: Files::Each(&FASHION_FILES),
        megabytes: 31,
        licence: "MIT (Zalando SE)",
    },
    Builtin {
        name: "kmnist",
        title: "Kuzushiji-MNIST cursive Japanese characters (28×28 grey)",
        folder: "kmnist",
        format: Format::Idx,
        classes: 10,
        flips: false,
        shape: [1, 28, 28],
        sizes: (60_000, 10_000),
        mirrors: &["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
        files: Files::Each(&KMNIST_FILES),
        megabytes: 21,
        licence: "CC BY-SA 4.0 (ROIS-DS CODH)",
    },
    Builtin {
        name: "cifar10",
        title: "CIFAR-10 photographs (32×32 colour)",
        folder: "cifar-10-batches-bin",
        format: Format::Cifar {
            labels: cifar::CIFAR10_LABELS,
            train: &cifar::TRAIN_FILES,
            test: cifar::TEST_FILE,
        },
        classes: 10,
        flips: true,
        shape: [3, 32, 32],
        sizes: (50_000, 10_000),
        mirrors: TORONTO,
        files: Files::Archive {
            archive: "cifar-10-binary.tar.gz",
            root: "cifar-10-batches-bin",
            members: &CIFAR10_MEMBERS,
        },
        megabytes: 163,
        licence: CIFAR_LICENCE,
    },
    Builtin {
        name: "cifar100",
        title: "CIFAR-100 photographs, 100 fine classes (32×32 colour)",
        folder: "cifar-100-binary",
        format: cifar100(cifar::CIFAR100_FINE),
        classes: 100,
        flips: true,
        shape: [3, 32, 32],
        sizes: (50_000, 10_000),
        mirrors: TORONTO,
        files: CIFAR100_FILES,
        megabytes: 161,
        licence: CIFAR_LICENCE,
    },
    Builtin {
        name: "cifar100-coarse",
        title: "CIFAR-100 photographs, 20 coarse superclasses (the same files)",
        folder: "cifar-100-binary",
        format: cifar100(cifar::CIFAR100_COARSE),
        classes: 20,
        flips: true,
        shape: [3, 32, 32],
        sizes: (50_000, 10_000),
        mirrors: TORONTO,
        files: CIFAR100_FILES,
        megabytes: 161,
        licence: CIFAR_LICENCE,
    },
    Builtin {
        name: "svhn",
        title: "SVHN house-number digits, cropped (32×32 colour)",
        folder: "svhn",
        format: Format::Svhn {
            train: &["train_32x32.mat"],
            test: "test_32x32.mat",
        },
        classes: 10,
        flips: false,
        shape: [3, 32, 32],
        sizes: (73_257, 26_032),
        mirrors: STANFORD,
        files: Files::Each(SVHN_FILES.split_at(2).0),
        megabytes: 246,
        licence: SVHN_LICENCE,
    },
    Builtin {
        name: "svhn-extra",
        title: "SVHN trained on its train and extra splits (604,388 images)",
        folder: "svhn",
        format: Format::Svhn {
            train: &["train_32x32.mat", "extra_32x32.mat"],
            test: "test_32x32.mat",
        },
        classes: 10,
        flips: false,
        shape: [3, 32, 32],
        sizes: (604_388, 26_032),
        mirrors: STANFORD,
        files: Files::Each(&SVHN_FILES),
        megabytes: 1_575,
        licence: SVHN_LICENCE,
    },
];

impl Builtin {
    /// Every file of the dataset with its pinned SHA-256, as it lies in the dataset's folder
    /// (an archive's members, not the archive).
    pub fn pinned(&self) -> &'static [Checked] {
        match self.files {
            Files::Each(files) => files,
            Files::Archive { members, .. } => members,
        }
    }
}

/// The built-in dataset of this name.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|b| b.name == name)
}

/// The names of the built-in datasets, for help texts and errors.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_complete_and_names_are_unique() {
        for b in &BUILTIN {
            assert_eq!(BUILTIN.iter().filter(|o| o.name == b.name).count(), 1);
            assert!(b.classes >= 2 && !b.mirrors.is_empty() && b.megabytes > 0);
            let checked = b.pinned();
            for (file, sha) in checked {
                assert!(
                    sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                    "{file}"
                );
            }
            if let Format::Cifar { labels, .. } = b.format {
                assert_eq!(labels.classes, b.classes, "{}", b.name);
            }
            // Every file the reader opens is downloaded and checked.
            if let Some((train, test)) = b.format.split_files() {
                for file in train.iter().chain([&test]) {
                    assert!(checked.iter().any(|(f, _)| f == file), "{}: {file}", b.name);
                }
            }
        }
    }
}
