//! The user's own datasets, named `npz:PATH` or `folder:PATH`: where they are, and the content hash
//! that enters their runs' identity.
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::download::hash_into;
use super::folder;

/// The prefix of a dataset that is a user's NumPy archive: `npz:PATH`.
pub const NPZ: &str = "npz:";
/// The prefix of a dataset that is a user's image folder: `folder:PATH`.
pub const FOLDER: &str = "folder:";

/// The file or folder of a user's dataset (`npz:PATH`, `folder:PATH`): PATH, relative to the
/// data directory unless absolute (so that workers on other machines find it in their own data
/// directories).
pub fn user_path(data_dir: &Path, name: &str) -> Option<PathBuf> {
    [NPZ, FOLDER]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .map(|path| data_dir.join(path))
}

/// The SHA-256 of a user's data — the `npz:` file, or every file a `folder:` dataset loads
/// ([`folder::Listing`]) with its path — which becomes part of its runs' identity; `None` for
/// other datasets. A file the folder's reader never opens (notes, sub-folders) changes nothing.
pub fn content_hash(data_dir: &Path, name: &str) -> Result<Option<String>> {
    let Some(path) = user_path(data_dir, name) else {
        return Ok(None);
    };
    let files = if name.starts_with(FOLDER) {
        let listing = folder::Listing::of(&path)?;
        listing.files().map(Path::to_owned).collect()
    } else {
        vec![path.clone()]
    };
    let mut hash = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(&path).unwrap_or(&file);
        hash.update(relative.to_string_lossy().as_bytes());
        hash_into(&mut hash, &file)?;
    }
    Ok(Some(hex::encode(hash.finalize())))
}
