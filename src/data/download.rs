//! Downloads the official dataset files, checks their SHA-256 and moves them into place
//! atomically (write `*.part`, verify, rename), so an interrupted or corrupted download never
//! leaves a file that looks complete. Re-running resumes a partial download with an HTTP range
//! request and skips files that are already present and valid.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::catalog::{Builtin, Checked, Files};
use super::dataset_dir;

/// `$SHALLOW_MIRROR`: a base URL that replaces the official ones (a local mirror, or a test server).
pub fn mirror_from_env() -> Option<String> {
    std::env::var("SHALLOW_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
}

/// Downloads whatever of `source` is missing or invalid in `data_dir`.
pub fn fetch(source: &Builtin, data_dir: &Path, mirror: &Option<String>) -> Result<()> {
    let dir = dataset_dir(data_dir, source.name);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bases: Vec<String> = match mirror {
        Some(m) => vec![m.clone()],
        None => source.mirrors.iter().map(|m| m.to_string()).collect(),
    };
    match source.files {
        Files::Each(files) => {
            for &(file, sha) in files {
                let dest = dir.join(file);
                if is_valid(&dest, sha)? {
                    tracing::info!("{} is present and valid", dest.display());
                    continue;
                }
                let part = part_path(&dest);
                download_from_any(&bases, file, &part)?;
                verify(&part, sha, file)?;
                rename(&part, &dest)?;
            }
        }
        Files::Archive {
            archive,
            root,
            members,
        } => {
            let mut valid = true;
            for &(file, sha) in members {
                valid &= is_valid(&dir.join(file), sha)?;
            }
            if valid {
                tracing::info!("{} is present and valid", dir.display());
                return Ok(());
            }
            let archive_path = data_dir.join(archive);
            let part = part_path(&archive_path);
            download_from_any(&bases, archive, &part)?;
            let extracted = extract_members(&part, root, &dir, members);
            // The archive has no published SHA-256: its members were checked instead, so a bad
            // archive is useless and must not be resumed from.
            fs::remove_file(&part).ok();
            extracted?;
        }
    }
    tracing::info!("{}: ready in {}", source.name, dir.display());
    Ok(())
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// The SHA-256 of a file, in lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, path)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds a file's bytes to `hasher`.
pub(crate) fn hash_into(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    io::copy(&mut file, hasher).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(())
}

fn is_valid(path: &Path, sha: &str) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    let valid = sha256_file(path)? == sha;
    if !valid {
        tracing::warn!(
            "{} has the wrong checksum; downloading it again",
            path.display()
        );
    }
    Ok(valid)
}

/// Checks a finished download; a mismatching file is deleted, never kept.
fn verify(path: &Path, expected: &str, what: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        fs::remove_file(path).ok();
        bail!("{what}: SHA-256 mismatch (expected {expected}, got {actual}); the file was deleted");
    }
    Ok(())
}

fn download_from_any(bases: &[String], file: &str, part: &Path) -> Result<()> {
    let mut errors = Vec::new();
    for base in bases {
        let url = format!("{}/{file}", base.trim_end_matches('/'));
        match download(&url, part) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!("{url}: {e:#}");
                errors.push(format!("{url}: {e:#}"));
            }
        }
    }
    bail!("could not download {file}:\n  {}", errors.join("\n  "))
}

/// Downloads `url` into `part`, continuing an earlier partial download when the server honours
/// range requests.
fn download(url: &str, part: &Path) -> Result<()> {
    let offset = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.set("Range", &format!("bytes={offset}-"));
    }
    let response = match request.call() {
        // 416: the partial file is already complete (or stale); start over.
        Err(ureq::Error::Status(416, _)) => {
            fs::remove_file(part).ok();
            return download(url, part);
        }
        other => other?,
    };
    let resumed = offset > 0 && response.status() == 206;
    let start = if resumed { offset } else { 0 };
    let remaining: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let bar = byte_bar(url, remaining.map(|r| r + start), start);
    copy_with_progress(&mut response.into_reader(), &mut file, &bar)?;
    file.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}

fn byte_bar(url: &str, total: Option<u64>, done: u64) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_owned());
    bar.set_position(done);
    bar
}

fn copy_with_progress(reader: &mut dyn Read, file: &mut File, bar: &ProgressBar) -> Result<()> {
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buffer[..n])?;
        bar.inc(n as u64);
    }
}

/// Extracts the wanted members of a CIFAR-style archive (found under its folder `root`) into
/// `dir`, each verified and renamed.
fn extract_members(archive: &Path, root: &str, dir: &Path, members: &[Checked]) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found = Vec::new();
    let entries = tar
        .entries()
        .with_context(|| format!("{}: not a tar.gz archive", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{}: corrupt archive", archive.display()))?;
        let path = entry.path()?.into_owned();
        let Some(name) = path.strip_prefix(root).ok().and_then(|p| p.to_str()) else {
            continue;
        };
        let Some(&(file, sha)) = members.iter().find(|(f, _)| *f == name) else {
            continue;
        };
        let dest = dir.join(file);
        let part = part_path(&dest);
        let mut out =
            File::create(&part).with_context(|| format!("cannot write {}", part.display()))?;
        io::copy(&mut entry, &mut out)
            .with_context(|| format!("{}: corrupt archive", archive.display()))?;
        out.sync_all()
            .with_context(|| format!("cannot write {}", part.display()))?;
        verify(&part, sha, &format!("{} in {}", file, archive.display()))?;
        rename(&part, &dest)?;
        found.push(file);
    }
    let absent: Vec<_> = members
        .iter()
        .filter(|(f, _)| !found.contains(f))
        .map(|(f, _)| *f)
        .collect();
    if !absent.is_empty() {
        bail!(
            "{}: archive lacks {root}/{}",
            archive.display(),
            absent.join(", ")
        );
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
}
