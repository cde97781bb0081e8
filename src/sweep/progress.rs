//! The sweep's progress display: one overall bar and one line per worker process.
use std::process::Child;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::store::{RunStatus, Store};

/// The overall bar (runs done/total, ETA, failures) and one line per worker.
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: Vec<(u32, ProgressBar)>,
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
    pub fn new(store: &dyn Store, children: &[Child]) -> Result<Progress> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let (done, total, _) = finished(&store.status_counts()?);
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
        let lines = children
            .iter()
            .enumerate()
            .map(|(i, child)| {
                let line = multi.add(ProgressBar::new_spinner());
                line.set_message(format!("worker {}: starting", i + 1));
                (child.id(), line)
            })
            .collect();
        Ok(Progress {
            multi,
            overall,
            lines,
            last_done: done.into(),
        })
    }

    pub fn update(&self, store: &dyn Store, children: &[Child]) -> Result<()> {
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
        let running = store.running()?;
        for (i, (pid, line)) in self.lines.iter().enumerate() {
            let alive = children.iter().any(|c| c.id() == *pid);
            let here = running
                .iter()
                .find(|r| r.worker.split(':').nth(1) == Some(&pid.to_string()));
            line.set_message(match (alive, here) {
                (_, Some(r)) => format!(
                    "worker {}: {} {} {} L={} F={} k={} · epoch {}/{}",
                    i + 1,
                    &r.run_id[..8],
                    r.config.dataset,
                    r.config.layout,
                    r.config.layers,
                    r.config.filters,
                    r.config.kernel,
                    r.epochs_done + 1,
                    r.config.epochs
                ),
                (true, None) => format!("worker {}: waiting", i + 1),
                (false, None) => format!("worker {}: finished", i + 1),
            });
            line.tick();
        }
        Ok(())
    }

    /// A replacement worker takes over the line of the one that died.
    pub fn replace(&mut self, old: u32, new: u32) {
        if let Some(line) = self.lines.iter_mut().find(|(pid, _)| *pid == old) {
            line.0 = new;
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
