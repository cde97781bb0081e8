//! Files written whole or not at all: a temporary file beside the target (a unique name, so two
//! writers never collide), flushed to disk, then renamed over it.
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `path` through `fill`: readers see the old file or the whole new one, never a part,
/// even after a crash (the data is synced before the rename).
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let written = (|| -> Result<()> {
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut out = BufWriter::new(tmp);
        fill(&mut out)?;
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    })();
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// Fails when `path` cannot be written by [`write_atomically`]: a folder, or a folder in which
/// no file can be created.
pub fn check_writable(path: &Path) -> Result<()> {
    anyhow::ensure!(
        !path.is_dir(),
        "{} is a folder; give a file name",
        path.display()
    );
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writers_never_collide_and_a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "old").unwrap();
        let failed = write_atomically(&path, |w: &mut dyn Write| {
            w.write_all(b"half")?;
            anyhow::bail!("interrupted")
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    write_atomically(&path, |w| {
                        Ok(w.write_all(format!("{i}").repeat(1000).as_bytes())?)
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 1000, "one writer's whole file");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        assert!(check_writable(dir.path()).is_err());
        assert!(check_writable(&dir.path().join("no/such/dir/x")).is_err());
        assert!(check_writable(&path).is_ok());
    }
}
