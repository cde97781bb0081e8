//! Datasets beyond MNIST and CIFAR-10, end to end on generated files in the real formats: a grid
//! over Fashion-MNIST, CIFAR-100 and a user's `.npz` trains and gets a verdict per dataset; the
//! `.npz`'s content is part of its runs' identity, and a worker refuses a file changed since its
//! runs were queued.
use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::shallow_bin;
use common::sweeps::query;
use shallow::data::{cifar, npz};

/// A `.npz` of `n` 8×8 RGB images channels-last (uint8) in 4 classes, and `n / 2` test images.
pub(crate) fn write_npz(path: &Path, n: usize, salt: u8) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (split, count) in [("train", n), ("test", n / 2)] {
        let labels: Vec<u8> = (0..count).map(|i| (i % 4) as u8).collect();
        let pixels: Vec<u8> = (0..count * 8 * 8 * 3)
            .map(|p| ((p / 192 % 4) as u8 * 60).wrapping_add((p % 7) as u8 * 9 + salt))
            .collect();
        zip.start_file(format!("x_{split}.npy"), stored).unwrap();
        zip.write_all(&npz::encode_npy("|u1", &[count, 8, 8, 3], &pixels))
            .unwrap();
        zip.start_file(format!("y_{split}.npy"), stored).unwrap();
        zip.write_all(&npz::encode_npy("|u1", &[count], &labels))
            .unwrap();
    }
    zip.finish().unwrap();
}

/// CIFAR-100's binary format: a coarse and a fine label byte, then the pixels.
fn write_cifar100(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [("train.bin", train), ("test.bin", test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 100) as u8).collect();
        let pixels: Vec<u8> = (0..n * cifar::PIXELS)
            .map(|p| ((p / cifar::PIXELS % 100) * 2 + p % 5) as u8)
            .collect();
        std::fs::write(dir.join(name), cifar::encode(2, &labels, &pixels)).unwrap();
    }
}

use common::shallow_on as shallow;

#[test]
fn a_grid_over_fashion_cifar100_and_an_npz_gets_a_verdict_per_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_idx_dataset(&data.join("fashion"), 200, 100, 28, true);
    write_cifar100(&data.join("cifar-100-binary"), 400, 200);
    write_npz(&data.join("mine.npz"), 120, 0);
    let grid = tmp.path().join("g.toml");
    std::fs::write(
        &grid,
        "name = \"datasets\"\n[runs]\ndataset = [\"fashion\", \"cifar100\", \"npz:mine.npz\"]\n\
         layers = 2\nfilters = 4\nepochs = 1\nseed = [0, 1, 2]\nbatch_size = 32\n",
    )
    .unwrap();
    let db = tmp.path().join("r.db");
    let (db_arg, grid_arg) = (db.to_str().unwrap(), grid.to_str().unwrap());
    let out = shallow(
        &[
            "sweep",
            grid_arg,
            "--db",
            db_arg,
            "--offline",
            "--workers",
            "2",
            "--threads",
            "1",
        ],
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Vec<i64> = query(&db, "SELECT COUNT(*) FROM runs WHERE status = 'done'");
    assert_eq!(done, [18]);
    // Q counts each dataset's outputs: M = Q·P/N is 10, 100 and 4.
    let m: Vec<(String, i64)> = query::<String>(
        &db,
        "SELECT DISTINCT json_extract(config, '$.dataset') || ' ' || \
         CAST(ROUND(q * params / train_examples) AS INTEGER) FROM runs ORDER BY 1",
    )
    .into_iter()
    .map(|t| {
        let (d, m) = t.rsplit_once(' ').unwrap();
        (d.to_owned(), m.parse().unwrap())
    })
    .collect();
    let expected = [("cifar100", 100), ("fashion", 10), ("npz:mine.npz", 4)];
    assert_eq!(
        m,
        expected.map(|(d, m)| (d.to_owned(), m)).to_vec(),
        "classes per dataset"
    );
    let report = tmp.path().join("report");
    let out = Command::new(shallow_bin())
        .args(["report", db_arg, "--out", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("cifar100 M = 100, fashion M = 10, npz:mine.npz M = 4"),
        "M per dataset"
    );
    let verdicts = md.split("## Sweep").next().unwrap();
    for dataset in ["fashion", "cifar100", "npz:mine.npz"] {
        assert!(
            verdicts.contains(&format!("**{dataset}**, ")),
            "{dataset}: {verdicts}"
        );
    }
    for entry in std::fs::read_dir(report.join("plots")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains(':') && !name.contains('/'), "{name}");
    }
}

/// A `.npz`'s content is part of its runs' identity. A worker whose file differs from the one
/// its runs were queued with leaves them pending and stops with exit 69 (one worker or several),
/// naming the file and the way out; queueing the grid again is refused while the old runs are
/// pending, until `--requeue-changed-data` removes them, after which a worker trains the runs of
/// the new file.
#[test]
fn a_changed_npz_stops_workers_and_requeue_changed_data_replaces_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("mine.npz");
    write_npz(&file, 40, 0);
    let grid = tmp.path().join("g.toml");
    std::fs::write(
        &grid,
        "name = \"npz\"\n[runs]\ndataset = \"npz:mine.npz\"\nlayers = 2\nfilters = 4\n",
    )
    .unwrap();
    let db = tmp.path().join("r.db");
    let (db_arg, grid_arg) = (db.to_str().unwrap(), grid.to_str().unwrap());
    let queue = |extra: &[&str]| {
        let mut args = vec!["sweep", grid_arg, "--db", db_arg, "--no-train", "--offline"];
        args.extend(extra);
        shallow(&args, &data)
    };
    assert!(queue(&[]).status.success());
    let first: Vec<String> = query(&db, "SELECT id FROM runs ORDER BY seq");
    assert_eq!(first.len(), 2);
    write_npz(&file, 40, 1);
    for workers in ["2", "1"] {
        let out = shallow(
            &["worker", "--db", db_arg, "--offline", "--workers", workers],
            &data,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "--workers {workers}: {stderr}");
    }
    let log = std::fs::read_to_string(tmp.path().join("r.db.workers.log")).unwrap_or_default();
    let out = shallow(&["worker", "--db", db_arg, "--offline"], &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mine.npz is not the data its runs were queued with")
            && stderr.contains("--requeue-changed-data"),
        "{stderr}{log}"
    );
    let states: Vec<String> = query(&db, "SELECT status || ' ' || attempts FROM runs");
    assert_eq!(states, vec!["pending 0"; 2]);

    let refused = queue(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 pending run(s) of sweep 'npz'")
            && stderr.contains("--requeue-changed-data"),
        "{stderr}"
    );
    assert_eq!(query::<String>(&db, "SELECT id FROM runs").len(), 2);

    let out = queue(&["--requeue-changed-data"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 pending run(s) of the old version removed"),
        "{stdout}"
    );
    let now: Vec<String> = query(&db, "SELECT id FROM runs ORDER BY seq");
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|id| !first.contains(id)), "new ids: {now:?}");
    let out = shallow(&["worker", "--db", db_arg, "--offline"], &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let states: Vec<String> = query(&db, "SELECT status FROM runs");
    assert_eq!(states, vec!["done"; 2]);
}

/// Augmentation is drawn from the run's seed: the same run trains to the same losses twice, and
/// to other losses than without augmentation; crop-flip trains on CIFAR-shaped data.
#[test]
fn augmented_runs_are_reproducible_and_differ_from_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_cifar_dataset(&tmp.path().join("cifar-10-batches-bin"), 40);
    let train = |augment: &str| {
        let out = shallow(
            &[
                "train",
                "--dataset",
                "cifar10",
                "--layout",
                "parallel",
                "--layers",
                "2",
                "--filters",
                "4",
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--offline",
                "--threads",
                "1",
                "--augment",
                augment,
                "--json",
                "-",
            ],
            tmp.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let losses: Vec<f64> = result["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect();
        losses
    };
    let (a, b, plain) = (train("crop-flip"), train("crop-flip"), train("none"));
    assert_eq!(a, b, "same seed, same augmented batches");
    assert_ne!(a, plain);
    assert_ne!(train("crop"), a);

    // The same in a grid: `augment` is a grid key like every other setting, and a sweep trains
    // the crop-flip run to the losses `train` gives it.
    let grid = tmp.path().join("augment.toml");
    std::fs::write(
        &grid,
        "name = \"augment\"\n[runs]\ndataset = \"cifar10\"\nlayout = \"parallel\"\n\
         layers = 2\nfilters = 4\nepochs = 2\nbatch_size = 16\naugment = [\"none\", \"crop-flip\"]\n",
    )
    .unwrap();
    let db = tmp.path().join("augment.db");
    let out = shallow(
        &[
            "sweep",
            grid.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--offline",
            "--workers",
            "1",
            "--threads",
            "1",
        ],
        tmp.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let losses = |augment: &str| -> Vec<f64> {
        query(
            &db,
            &format!(
                "SELECT e.train_loss FROM epochs e JOIN runs r ON r.id = e.run_id WHERE \
                 coalesce(json_extract(r.config, '$.augment'), 'none') = '{augment}' \
                 ORDER BY e.epoch"
            ),
        )
    };
    assert_eq!(
        losses("crop-flip"),
        a,
        "the grid's augmented run is train's"
    );
    assert_eq!(losses("none"), plain);
}

/// Writes `n` 6×5 images per class into `dir/<class>/`, grey or RGB, as PNG (JPEG for every
/// third, to read both formats).
pub(crate) fn write_images(dir: &Path, classes: &[&str], n: usize, rgb: bool) {
    for (c, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..n {
            let value = |x: u32, y: u32| (c as u32 * 90 + x * 7 + y * 11 + i as u32 * 3) as u8;
            let image: image::DynamicImage = if rgb {
                image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([value(x, y), 40, 200])).into()
            } else {
                image::GrayImage::from_fn(6, 5, |x, y| image::Luma([value(x, y)])).into()
            };
            let ext = if i % 3 == 2 { "jpg" } else { "png" };
            image.save(folder.join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}

/// An image folder in the ImageFolder convention: classes in sorted order of the training
/// split's folders, grey images one channel and colour three, trained end to end; mixed sizes,
/// unreadable images and a test class the training split lacks are errors naming the file.
#[test]
fn image_folders_load_train_and_refuse_bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    let (grey, colour) = (tmp.path().join("grey"), tmp.path().join("colour"));
    write_images(&grey.join("train"), &["zebra", "ant", "moth"], 9, false);
    write_images(&grey.join("test"), &["ant", "moth", "zebra"], 3, false);
    write_images(&colour.join("train"), &["a", "b"], 6, true);
    write_images(&colour.join("test"), &["a", "b"], 2, true);
    let raw = shallow::data::load(tmp.path(), "folder:grey").unwrap();
    assert_eq!(
        (raw.classes, raw.train.shape, raw.train.len()),
        (3, [1, 5, 6], 27)
    );
    // ant, moth, zebra: the sorted names; the first images are ant's.
    assert_eq!(&raw.train.labels[..10], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let raw = shallow::data::load(tmp.path(), "folder:colour").unwrap();
    assert_eq!((raw.classes, raw.train.shape), (2, [3, 5, 6]));
    // The green plane of the first image is all 40 (channels first).
    assert!(raw.train.images[30..60].iter().all(|&g| g == 40));
    let out = shallow(
        &[
            "train",
            "--dataset",
            "folder:grey",
            "--layout",
            "parallel",
            "--layers",
            "2",
            "--filters",
            "4",
            "--epochs",
            "1",
            "--offline",
            "--batch-size",
            "8",
        ],
        tmp.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    image::GrayImage::new(7, 5)
        .save(grey.join("train/ant/big.png"))
        .unwrap();
    let err = format!(
        "{:#}",
        shallow::data::load(tmp.path(), "folder:grey").unwrap_err()
    );
    assert!(
        err.contains("big.png: 7×5 pixels") && err.contains("every image must have one size"),
        "{err}"
    );
    std::fs::remove_file(grey.join("train/ant/big.png")).unwrap();
    std::fs::write(grey.join("train/ant/broken.png"), b"not a png").unwrap();
    let err = format!(
        "{:#}",
        shallow::data::load(tmp.path(), "folder:grey").unwrap_err()
    );
    assert!(
        err.contains("cannot read image") && err.contains("broken.png"),
        "{err}"
    );
    std::fs::remove_file(grey.join("train/ant/broken.png")).unwrap();
    write_images(&grey.join("test"), &["wasp"], 1, false);
    let err = format!(
        "{:#}",
        shallow::data::load(tmp.path(), "folder:grey").unwrap_err()
    );
    assert!(
        err.contains("'wasp' is not among the training split's classes"),
        "{err}"
    );
}
