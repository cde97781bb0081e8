//! The downloader against a loopback HTTP server serving the real dataset files.
use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{gzip, real_data, shallow_bin};
use shallow::data::{self, download};

/// Serves `files` (URL path → bytes) on 127.0.0.1, honouring `Range: bytes=N-`.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (requests.clone(), ranges.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                count.fetch_add(1, Ordering::SeqCst);
                let Some(body) = files.get(request.url()) else {
                    let _ = request.respond(tiny_http::Response::empty(404));
                    continue;
                };
                let range = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Range"))
                    .map(|h| h.value.to_string());
                let response = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                    Some(r) => {
                        seen.lock().unwrap().push(r.to_owned());
                        let from: usize = r.trim_end_matches('-').parse().unwrap();
                        tiny_http::Response::from_data(body[from..].to_vec()).with_status_code(206)
                    }
                    None => tiny_http::Response::from_data(body.clone()),
                };
                let _ = request.respond(response);
            }
        });
        Server {
            base,
            requests,
            ranges,
        }
    }
}

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

fn mnist_files() -> HashMap<String, Vec<u8>> {
    let dir = real_data().join("mnist");
    MNIST_FILES
        .iter()
        .map(|f| (format!("/{f}"), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

fn no_part_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part"))
}

#[test]
fn mnist_downloads_verifies_and_skips_valid_files() {
    let files = mnist_files();
    let server = Server::start(files.clone());
    let tmp = tempfile::tempdir().unwrap();
    let source = shallow::data::builtin("mnist").unwrap();
    download::fetch(source, tmp.path(), &Some(server.base.clone())).unwrap();
    for f in MNIST_FILES {
        let got = std::fs::read(tmp.path().join("mnist").join(f)).unwrap();
        assert!(got == files[&format!("/{f}")], "{f} differs");
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    download::fetch(source, tmp.path(), &Some(server.base.clone())).unwrap();
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        4,
        "valid files were fetched again"
    );
    assert_eq!(data::load(tmp.path(), "mnist").unwrap().train.len(), 60_000);
}

#[test]
fn corrupted_download_is_an_error_and_not_kept() {
    let mut files = mnist_files();
    let labels = files.get_mut("/train-labels-idx1-ubyte.gz").unwrap();
    let middle = labels.len() / 2;
    labels[middle] ^= 0xff;
    let server = Server::start(files);
    let tmp = tempfile::tempdir().unwrap();
    let source = shallow::data::builtin("mnist").unwrap();
    let err = download::fetch(source, tmp.path(), &Some(server.base.clone())).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("train-labels"),
        "{err}"
    );
    let dir = tmp.path().join("mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "good file before it was lost"
    );
    assert!(
        !dir.join("train-labels-idx1-ubyte.gz").exists(),
        "bad file was kept"
    );
    assert!(no_part_files(&dir));
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let files = mnist_files();
    let server = Server::start(files.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let whole = &files["/t10k-images-idx3-ubyte.gz"];
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz.part"), &whole[..1000]).unwrap();
    let source = shallow::data::builtin("mnist").unwrap();
    download::fetch(source, tmp.path(), &Some(server.base.clone())).unwrap();
    assert_eq!(*server.ranges.lock().unwrap(), vec!["1000-".to_owned()]);
    assert!(std::fs::read(dir.join("t10k-images-idx3-ubyte.gz")).unwrap() == *whole);
    assert!(no_part_files(&dir));
}

/// The official archive layout, built from the real extracted files.
fn cifar_archive(corrupt: bool) -> Vec<u8> {
    let dir = real_data().join("cifar-10-batches-bin");
    let mut tar = tar::Builder::new(Vec::new());
    for name in [
        "batches.meta.txt",
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let mut bytes = std::fs::read(dir.join(name)).unwrap();
        if corrupt && name == "test_batch.bin" {
            bytes[5] ^= 1;
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &bytes[..],
        )
        .unwrap();
    }
    gzip(&tar.into_inner().unwrap())
}

#[test]
fn cifar_archive_is_extracted_and_verified_member_by_member() {
    for corrupt in [true, false] {
        let archive = cifar_archive(corrupt);
        let server = Server::start(HashMap::from([(
            "/cifar-10-binary.tar.gz".to_owned(),
            archive,
        )]));
        let tmp = tempfile::tempdir().unwrap();
        let source = shallow::data::builtin("cifar10").unwrap();
        let result = download::fetch(source, tmp.path(), &Some(server.base.clone()));
        let dir = tmp.path().join("cifar-10-batches-bin");
        if corrupt {
            let err = format!("{:#}", result.unwrap_err());
            assert!(
                err.contains("test_batch.bin") && err.contains("SHA-256 mismatch"),
                "{err}"
            );
            assert!(!dir.join("test_batch.bin").exists());
        } else {
            result.unwrap();
            let ds = data::load(tmp.path(), "cifar10").unwrap();
            assert_eq!((ds.train.len(), ds.test.len()), (50_000, 10_000));
        }
        assert!(!tmp.path().join("cifar-10-binary.tar.gz.part").exists());
        assert!(no_part_files(&dir));
    }
}

#[test]
fn cli_fetches_and_train_downloads_a_missing_dataset() {
    let server = Server::start(mnist_files());
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new(shallow_bin())
        .args(["data", "fetch", "mnist", "--dir"])
        .arg(tmp.path())
        .args(["--mirror", &server.base])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);

    let fresh = tempfile::tempdir().unwrap();
    let output = Command::new(shallow_bin())
        .args([
            "train",
            "--layout",
            "parallel",
            "--layers",
            "1",
            "--filters",
            "2",
        ])
        .args([
            "--train-limit",
            "100",
            "--val-limit",
            "100",
            "--threads",
            "1",
        ])
        .env("SHALLOW_DATA", fresh.path())
        .env("SHALLOW_MIRROR", &server.base)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(data::missing_files(fresh.path(), "mnist").is_empty());
    assert_eq!(server.requests.load(Ordering::SeqCst), 8);
}

/// Every pinned checksum whose file is in the real data folder is the file's own: a wrong pin
/// would make `shallow data fetch` delete a good file as corrupt.
#[test]
fn every_pinned_checksum_matches_the_real_file_where_it_exists() {
    let real = real_data();
    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for b in &data::BUILTIN {
        for &(file, sha) in b.pinned() {
            let path = data::dataset_dir(&real, b.name).join(file);
            if !path.is_file() {
                continue;
            }
            let actual = download::sha256_file(&path).unwrap();
            if actual != sha {
                wrong.push(format!("{}: pinned {sha}, file {actual}", path.display()));
            }
            checked.push(format!("{}/{file}", b.name));
        }
    }
    assert!(wrong.is_empty(), "wrong pins:\n{}", wrong.join("\n"));
    // MNIST is always there (real_data() requires it), so the test cannot pass on no file.
    for file in data::builtin("mnist").unwrap().pinned() {
        assert!(
            checked.contains(&format!("mnist/{}", file.0)),
            "{checked:?}"
        );
    }
    eprintln!(
        "{} pinned files verified: {}",
        checked.len(),
        checked.join(", ")
    );
}
