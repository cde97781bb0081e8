//! Embeds libtorch's library folder as an rpath, so the binary runs without LD_LIBRARY_PATH, and
//! compiles the C++ that reads and writes a libtorch optimizer's state (which tch does not offer)
//! against the libtorch torch-sys links, and names the training code a checkpoint belongs to.
use std::path::{Path, PathBuf};

/// What decides how a run trains: a checkpoint written by other versions of these is refused.
const TRAINING_CODE: &[&str] = &["src/train", "src/model", "src/data", "Cargo.lock"];

fn main() {
    println!(
        "cargo:rustc-env=SHALLOW_TRAINING_CODE={:016x}",
        training_code_hash()
    );
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names libtorch's lib folder"),
    );
    let include = lib
        .parent()
        .expect("libtorch/lib has a parent")
        .join("include");
    let source = "src/train/cpp/optimizer_state.cpp";
    println!("cargo:rerun-if-changed={source}");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
        ))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file(source)
        .compile("shallow_optimizer_state");
    // Resolve the .venv/libtorch link: the rpath must name the real folder, whose
    // $ORIGIN-relative RPATHs point at the CUDA runtime wheels beside it.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

/// FNV-1a over the paths and contents of the [`TRAINING_CODE`] files, in sorted order (a
/// hash function in a few lines, stable across toolchains, which std's `DefaultHasher` is not).
fn training_code_hash() -> u64 {
    let mut files = Vec::new();
    for root in TRAINING_CODE {
        println!("cargo:rerun-if-changed={root}");
        collect(Path::new(root), &mut files);
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let content = std::fs::read(&file).unwrap_or_default();
        for byte in file.to_string_lossy().bytes().chain(content) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                collect(&entry.path(), files);
            }
        }
        Err(_) => files.push(path.to_owned()),
    }
}
