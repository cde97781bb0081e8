//! The verdicts so far: `shallow report`'s own output on the runs finished until now (no second
//! implementation), generated into a private folder whenever the finished runs have changed, and
//! served as a page labelled provisional.
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::report::{self, equivalence::Margins};
use crate::sweep::store::{self, Location, RunStatus};

/// Runs by status: the page is made again when they change.
type Counts = Vec<(RunStatus, i64)>;

pub struct Verdicts {
    dir: tempfile::TempDir,
    /// The counts the cached page was made from, and the page.
    cache: Mutex<Option<(Counts, String)>>,
}

impl Verdicts {
    pub fn new() -> Result<Verdicts> {
        Ok(Verdicts {
            dir: tempfile::tempdir().context("cannot create a folder for the verdicts page")?,
            cache: Mutex::new(None),
        })
    }

    /// The report page of the store as it is now.
    pub fn page(&self, db: &Location) -> Result<String> {
        let counts = store::open_reader(db)?.status_counts()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_from, page)) = cache.as_ref()
            && *made_from == counts
        {
            return Ok(page.clone());
        }
        let files = report::generate(db, self.dir.path(), &Margins::default())?;
        let html = std::fs::read_to_string(&files.html)
            .with_context(|| format!("cannot read {}", files.html.display()))?;
        let page = label(&html, files.finished_runs, files.total_runs);
        *cache = Some((counts, page.clone()));
        Ok(page)
    }
}

/// The report with a line above it saying on how many runs it rests.
fn label(html: &str, finished: usize, total: usize) -> String {
    let state = if finished < total {
        "provisional"
    } else {
        "every run has finished"
    };
    let banner = format!(
        "<p id=\"provisional\" style=\"background:#fff4e5;padding:.5em 1em\"><b>{state}</b>: \
         computed on the {finished} finished runs of {total} (n per verdict below)</p>"
    );
    match html.find("<body>") {
        Some(at) => format!("{}{banner}{}", &html[..at + 6], &html[at + 6..]),
        None => banner + html,
    }
}
