//! Where a results store lives: a SQLite file (a path, or `sqlite://PATH`) or a PostgreSQL
//! database (`postgres://user:password@host:port/dbname`). Shown to users — in logs, errors and
//! `status` — always without its password.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Result, bail};

/// Serialised as given, password included (for a child process's standard input, never for
/// showing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Location {
    Sqlite(PathBuf),
    /// The connection URL as given (with its password, for connecting only).
    Postgres(String),
}

impl FromStr for Location {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Location> {
        if text.is_empty() {
            bail!("the database location is empty: give a SQLite file or a postgres:// URL");
        }
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("sqlite:// needs a path, e.g. sqlite://results.db");
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let rest = text.split_once("://").map_or("", |(_, r)| r);
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if host.split('/').next().unwrap_or("").is_empty() && !rest.contains("host=") {
                bail!(
                    "{}: no host; expected postgres://user:password@host:port/dbname",
                    redact(text)
                );
            }
            return Ok(Location::Postgres(text.to_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            bail!(
                "{scheme}://: unknown database scheme; use a file path, sqlite:// or postgres://"
            );
        }
        Ok(Location::Sqlite(PathBuf::from(text)))
    }
}

impl TryFrom<String> for Location {
    type Error = anyhow::Error;
    fn try_from(text: String) -> Result<Location> {
        text.parse()
    }
}

impl From<Location> for String {
    fn from(location: Location) -> String {
        location.as_os_str().to_string_lossy().into_owned()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl Location {
    /// How a document names the store: a SQLite file by its file name (not the path of the
    /// machine that made it), a server by its redacted URL.
    pub fn name(&self) -> String {
        match self {
            Location::Sqlite(path) => path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            Location::Postgres(url) => redact(url),
        }
    }

    /// The location as given, password included: for passing to a child process through its
    /// environment, never for showing.
    pub fn as_os_str(&self) -> &std::ffi::OsStr {
        match self {
            Location::Sqlite(path) => path.as_os_str(),
            Location::Postgres(url) => url.as_ref(),
        }
    }

    /// Where a sweep's worker processes write their logs: beside a SQLite file, else in the
    /// current folder, named after the database.
    pub fn worker_log(&self) -> PathBuf {
        match self {
            Location::Sqlite(path) => path.with_extension("workers.log"),
            Location::Postgres(url) => {
                let name = url
                    .rsplit_once('/')
                    .map_or("postgres", |(_, db)| db.split('?').next().unwrap_or(db));
                Path::new(&format!("shallow-{name}.workers.log")).to_path_buf()
            }
        }
    }
}

/// A URL with its password — in the user info or a `password=` query parameter — replaced by
/// `***`, parsed by the `url` crate. Text that does not parse as a URL keeps only its scheme and
/// what follows its last `@` (a password with an unencoded `/` or `@` makes a URL unparseable,
/// and must not leak through the error that says so).
pub fn redact(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return redact_unparsed(text);
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot have credentials, which then have no password.
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn redact_unparsed(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return "(a location that is not a URL)".into();
    };
    let without_query = |t: &str| t.split('?').next().unwrap_or("").to_owned();
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{}", without_query(host)),
        None => format!("{scheme}://{}", without_query(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_never_show_a_password() {
        let loc: Location = "postgres://alice:s3cr%40t@db.example:5433/sweeps"
            .parse()
            .unwrap();
        assert_eq!(
            loc.to_string(),
            "postgres://alice:***@db.example:5433/sweeps"
        );
        assert_eq!(
            redact("postgresql://bob@h/db?sslmode=require&password=pw"),
            "postgresql://bob@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            "sqlite://a/b.db".parse::<Location>().unwrap(),
            Location::Sqlite("a/b.db".into())
        );
        assert_eq!(
            "r.db".parse::<Location>().unwrap(),
            Location::Sqlite("r.db".into())
        );
        for bad in ["", "sqlite://", "mysql://x/y", "postgres:///db"] {
            assert!(bad.parse::<Location>().is_err(), "{bad}");
        }
        let err = "postgres://u:hunter2@/db".parse::<Location>().unwrap_err();
        assert!(!format!("{err:#}").contains("hunter2"));
        // Unencoded '/', '@' or '#' in a password: nothing of it shows.
        for (url, secret) in [
            ("postgres://u:pa/ss@h:5432/db", "pa/ss"),
            ("postgres://u:p@ss@h/db", "p@ss"),
            ("postgres://u:a#b@h/db", "a#b"),
            ("postgres://u:x/y?z@h/db?password=w", "x/y"),
        ] {
            let shown = redact(url);
            for part in secret.split(['/', '@', '#']) {
                assert!(!shown.contains(&format!(":{part}")), "{url} → {shown}");
            }
            assert!(!shown.contains("password=w"), "{url} → {shown}");
        }
        assert_eq!(
            redact("postgres://u:pa/ss@h:5432/db"),
            "postgres://***@h:5432/db"
        );
        assert_eq!(
            loc.worker_log(),
            PathBuf::from("shallow-sweeps.workers.log")
        );
    }
}
