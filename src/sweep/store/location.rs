//! Where a results store lives: a SQLite file (a path, or `sqlite://PATH`) or a PostgreSQL
//! database (`postgres://user:password@host:port/dbname`). Shown to users — in logs, errors and
//! `status` — always without its password.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
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

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl Location {
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

/// A URL with the password of its user info replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let redacted_tail = redact_query_password(tail);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{redacted_tail}"),
            None => format!("{scheme}://{user_info}@{host}{redacted_tail}"),
        },
        None => format!("{scheme}://{authority}{redacted_tail}"),
    }
}

/// `?password=…` in a query string, redacted too.
fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
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
        assert_eq!(
            loc.worker_log(),
            PathBuf::from("shallow-sweeps.workers.log")
        );
    }
}
