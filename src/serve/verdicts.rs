//! The verdicts so far: `shallow report`'s own verdicts, forest plots and Table 2 on the runs
//! finished until now ([`report::verdicts_page`], no second implementation). On a large store
//! they take seconds to compute, so a request never waits for them: it gets the latest page made
//! (or a page saying it is being made) while a background thread makes the page again whenever
//! the runs' statuses have changed.
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::report::{self, equivalence::Margins};
use crate::sweep::store::{Location, RunStatus, Store};

/// Runs by status: the page is made again when they change.
type Counts = Vec<(RunStatus, i64)>;

#[derive(Default)]
struct State {
    /// The latest page made, and the counts it was made from.
    page: Option<(Counts, String)>,
    /// A page is being made now.
    making: bool,
    /// Why the latest attempt failed, if it did.
    error: Option<String>,
}

pub struct Verdicts {
    /// Where the page's plots are drawn.
    dir: tempfile::TempDir,
    state: Mutex<State>,
}

impl Verdicts {
    pub fn new() -> Result<Arc<Verdicts>> {
        Ok(Arc::new(Verdicts {
            dir: tempfile::tempdir().context("cannot create a folder for the verdicts page")?,
            state: Mutex::default(),
        }))
    }

    /// The latest page, at once; starts making a new one (reading the store at `db`) if `store`
    /// has changed since.
    pub fn page(self: &Arc<Self>, store: &dyn Store, db: &Location) -> Result<String> {
        let counts = store.status_counts()?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let current = state.page.as_ref().is_some_and(|(made, _)| *made == counts);
        if !current && !state.making {
            state.making = true;
            let (this, db) = (Arc::clone(self), db.clone());
            std::thread::spawn(move || this.make(&db, counts));
        }
        Ok(match (&state.page, current, &state.error) {
            (Some((_, page)), true, _) => page.clone(),
            (Some((_, page)), false, _) => label(page, "being brought up to date; reload soon"),
            (None, _, Some(error)) => waiting(&format!("the verdicts could not be made: {error}")),
            (None, _, None) => waiting("computing the verdicts on the finished runs…"),
        })
    }

    fn make(&self, db: &Location, counts: Counts) {
        let made = report::verdicts_page(db, self.dir.path(), &Margins::default())
            .map(|page| with_state(&page.html, page.finished_runs, page.total_runs));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.making = false;
        match made {
            Ok(page) => {
                state.page = Some((counts, page));
                state.error = None;
            }
            Err(e) => state.error = Some(format!("{e:#}")),
        }
    }
}

/// A page that reloads itself every few seconds until the verdicts are there.
fn waiting(text: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"3\"></head><body><p id=\"computing\"></p><script>document.getElementById(\
         \"computing\").textContent = {};</script></body></html>",
        serde_json::to_string(text).unwrap_or_default()
    )
}

/// The report with a line above it saying on how many runs it rests.
fn with_state(html: &str, finished: usize, total: usize) -> String {
    let state = if finished < total {
        "provisional"
    } else {
        "every run has finished"
    };
    label(
        html,
        &format!(
            "<b>{state}</b>: computed on the {finished} finished runs of {total} (n per verdict below)"
        ),
    )
}

/// `html` with a line of `text` (HTML) at the top of its body.
fn label(html: &str, text: &str) -> String {
    let banner =
        format!("<p class=\"state\" style=\"background:#fff4e5;padding:.5em 1em\">{text}</p>");
    match html.find("<body>") {
        Some(at) => format!("{}{banner}{}", &html[..at + 6], &html[at + 6..]),
        None => banner + html,
    }
}
