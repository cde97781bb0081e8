//! A store whose every error names its database (a path, or a URL without its password).
use std::time::Duration;

use anyhow::{Context, Result};

use super::WorkerInfo;
use super::{Added, EpochRow, Finish, Location, RunRow, RunSpec, RunStatus, Running, Store};
use super::{Checkpoint, EpochMetrics, RunConfig, StoredCheckpoint, StoredConfig, SweepRecord};

pub struct Named {
    inner: Box<dyn Store + Send>,
    name: String,
}

impl Named {
    pub fn new(inner: Box<dyn Store + Send>, location: &Location) -> Named {
        Named {
            inner,
            name: location.to_string(),
        }
    }
}

impl Store for Named {
    fn add_runs(&mut self, sweep: &str, text: &str, runs: &[RunSpec]) -> Result<Added> {
        let r = self.inner.add_runs(sweep, text, runs);
        r.with_context(|| self.name.clone())
    }
    fn register_worker(&mut self, w: &WorkerInfo) -> Result<()> {
        let r = self.inner.register_worker(w);
        r.with_context(|| self.name.clone())
    }
    fn heartbeat(&mut self, w: &WorkerInfo) -> Result<()> {
        let r = self.inner.heartbeat(w);
        r.with_context(|| self.name.clone())
    }
    fn claim_group(
        &mut self,
        w: &WorkerInfo,
        limit: &dyn Fn(&RunConfig) -> usize,
    ) -> Result<Vec<RunSpec>> {
        let r = self.inner.claim_group(w, limit);
        r.with_context(|| self.name.clone())
    }
    fn record_epoch(&mut self, run_id: &str, w: &WorkerInfo, m: &EpochMetrics) -> Result<()> {
        let r = self.inner.record_epoch(run_id, w, m);
        r.with_context(|| self.name.clone())
    }
    fn save_checkpoint(&mut self, run_id: &str, w: &WorkerInfo, c: &Checkpoint) -> Result<()> {
        let r = self.inner.save_checkpoint(run_id, w, c);
        r.with_context(|| self.name.clone())
    }
    fn checkpoint(&mut self, run_id: &str) -> Result<Option<StoredCheckpoint>> {
        let r = self.inner.checkpoint(run_id);
        r.with_context(|| self.name.clone())
    }
    fn finish(&mut self, run_id: &str, w: &WorkerInfo, finish: Finish) -> Result<()> {
        let r = self.inner.finish(run_id, w, finish);
        r.with_context(|| self.name.clone())
    }
    fn requeue_abandoned(&mut self, stale_after: Duration, max_attempts: u32) -> Result<usize> {
        let r = self.inner.requeue_abandoned(stale_after, max_attempts);
        r.with_context(|| self.name.clone())
    }
    fn release_worker(&mut self, worker: &str, max_attempts: u32) -> Result<usize> {
        let r = self.inner.release_worker(worker, max_attempts);
        r.with_context(|| self.name.clone())
    }
    fn hand_back(&mut self, run_id: &str, w: &WorkerInfo) -> Result<()> {
        let r = self.inner.hand_back(run_id, w);
        r.with_context(|| self.name.clone())
    }
    fn retry_failed(&mut self) -> Result<usize> {
        let r = self.inner.retry_failed();
        r.with_context(|| self.name.clone())
    }
    fn drop_pending(&mut self, ids: &[String]) -> Result<usize> {
        let r = self.inner.drop_pending(ids);
        r.with_context(|| self.name.clone())
    }
    fn runs(&self) -> Result<Vec<RunRow>> {
        self.inner.runs().with_context(|| self.name.clone())
    }
    fn epochs(&self) -> Result<Vec<EpochRow>> {
        self.inner.epochs().with_context(|| self.name.clone())
    }
    fn status_counts(&self) -> Result<Vec<(RunStatus, i64)>> {
        self.inner
            .status_counts()
            .with_context(|| self.name.clone())
    }
    fn runs_page(&self, after: i64, limit: usize) -> Result<(Vec<RunRow>, i64)> {
        self.inner
            .runs_page(after, limit)
            .with_context(|| self.name.clone())
    }

    fn runs_table(&self, query: &super::RunsQuery) -> Result<(Vec<RunRow>, u64)> {
        self.inner
            .runs_table(query)
            .with_context(|| self.name.clone())
    }

    fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>> {
        self.inner
            .configs_page(after, limit)
            .with_context(|| self.name.clone())
    }

    fn summary(&self) -> Result<super::Summary> {
        self.inner.summary().with_context(|| self.name.clone())
    }

    fn epochs_of(&self, run_id: &str) -> Result<Vec<EpochRow>> {
        self.inner
            .epochs_of(run_id)
            .with_context(|| self.name.clone())
    }

    fn epochs_between(&self, after: i64, through: i64) -> Result<Vec<EpochRow>> {
        self.inner
            .epochs_between(after, through)
            .with_context(|| self.name.clone())
    }

    fn running(&self, lease: Duration) -> Result<Vec<Running>> {
        self.inner.running(lease).with_context(|| self.name.clone())
    }
    fn sweeps(&self) -> Result<Vec<SweepRecord>> {
        self.inner.sweeps().with_context(|| self.name.clone())
    }
    fn import(
        &mut self,
        sweeps: &[SweepRecord],
        runs: &[RunRow],
        epochs: &[EpochRow],
    ) -> Result<Added> {
        let r = self.inner.import(sweeps, runs, epochs);
        r.with_context(|| self.name.clone())
    }
}
