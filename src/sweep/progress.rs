//! The sweep's progress display: one overall bar and one line per worker process. Its queries
//! never stop a sweep: one that fails leaves the display as it was until the next.
use std::time::Duration;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::store::{RunStatus, Running, Store};

/// The overall bar (runs done/total, ETA, failures) and one line per worker.
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    /// Each line with the id of the worker it shows.
    lines: Vec<(String, ProgressBar)>,
    last_done: std::cell::Cell<u64>,
}

/// (finished, total, failed) runs.
fn finished(counts: &[(RunStatus, i64)]) -> (u64, u64, i64) {
    let sum = |keep: fn(RunStatus) -> bool| -> i64 {
        counts
            .iter()
            .filter(|(s, _)| keep(*s))
            .map(|(_, n)| n)
            .sum()
    };
    (
        sum(RunStatus::finished) as u64,
        sum(|_| true) as u64,
        sum(|s| s == RunStatus::Failed),
    )
}

impl Progress {
    /// `workers`: the ids of the workers started, a line each.
    pub fn new(store: &dyn Store, workers: &[&str]) -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let counts = store.status_counts().unwrap_or_else(|e| {
            tracing::warn!("progress display starts empty: {e:#}");
            vec![]
        });
        let (done, total, _) = finished(&counts);
        let overall = multi.add(
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "runs [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
        );
        overall.set_position(done);
        overall.reset_eta();
        let lines = workers
            .iter()
            .enumerate()
            .map(|(i, worker)| {
                let line = multi.add(ProgressBar::new_spinner());
                line.set_message(format!("worker {}: starting", i + 1));
                (worker.to_string(), line)
            })
            .collect();
        Progress {
            multi,
            overall,
            lines,
            last_done: done.into(),
        }
    }

    /// Shows the store's counts and each worker's run (`alive`: the ids of the workers still
    /// running). A failed query is logged and skipped.
    pub fn update(&self, store: &dyn Store, alive: &[&str], lease: Duration) {
        if let Err(e) = self.try_update(store, alive, lease) {
            tracing::warn!("progress display not updated: {e:#}");
        }
    }

    fn try_update(&self, store: &dyn Store, alive: &[&str], lease: Duration) -> Result<()> {
        let (done, total, failed) = finished(&store.status_counts()?);
        self.overall.set_length(total);
        self.overall.set_position(done);
        self.overall.set_message(if failed > 0 {
            format!("{failed} failed")
        } else {
            String::new()
        });
        if self.overall.is_hidden() && done != self.last_done.get() {
            println!("[{done}/{total}] runs finished, {failed} failed");
        }
        self.last_done.set(done);
        let running = store.running(lease)?;
        for (i, (id, line)) in self.lines.iter().enumerate() {
            let alive = alive.contains(&id.as_str());
            let here = running.iter().find(|r| r.worker == *id);
            line.set_message(match (alive, here) {
                (_, Some(r)) => format!("worker {}: {}", i + 1, describe(r)),
                (true, None) => format!("worker {}: waiting", i + 1),
                (false, None) => format!("worker {}: finished", i + 1),
            });
            line.tick();
        }
        Ok(())
    }

    /// A replacement worker takes over the line of the one that died.
    pub fn replace(&mut self, old: &str, new: &str) {
        if let Some(line) = self.lines.iter_mut().find(|(id, _)| id == old) {
            new.clone_into(&mut line.0);
        }
    }

    pub fn finish(&self) {
        self.overall.finish();
        for (_, line) in &self.lines {
            line.finish();
        }
        let _ = self.multi.clear();
    }
}

/// A run in training, as a worker's line shows it: id, net and epoch.
fn describe(r: &Running) -> String {
    let c = &r.config;
    format!(
        "{} {} {} L={} F={} k={} · epoch {}/{}",
        short_id(&r.run_id),
        c.dataset,
        c.layout,
        c.layers,
        c.filters,
        c.kernel,
        r.epochs_done + 1,
        c.epochs
    )
}

/// The first eight characters of a run id (all of a shorter one, as an imported database may
/// hold).
fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(i, _)| &id[..i])
}

#[cfg(test)]
mod tests {
    use super::short_id;

    #[test]
    fn short_ids_of_any_length_never_panic() {
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        assert_eq!(short_id("ééééééééé"), "éééééééé");
    }
}
