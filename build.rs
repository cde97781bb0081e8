//! Embeds libtorch's library folder as an rpath, so the binary runs without LD_LIBRARY_PATH.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        return;
    };
    // Resolve the .venv/libtorch link: the rpath must name the real folder, whose
    // $ORIGIN-relative RPATHs point at the CUDA runtime wheels beside it.
    let lib = PathBuf::from(libtorch).join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
