//! The results store's own cost, without training: per-run overhead (claim, one write per epoch,
//! finish) and many concurrent workers draining one queue. Runs against an empty database, which
//! it fills with synthetic runs.
use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use serde::Serialize;

use crate::model::Layout;
use crate::sweep::store::identity::RunSpec;
use crate::sweep::store::{self, Finish, Location, Store, WorkerInfo};
use crate::train::{EpochMetrics, Outcome, RunConfig, RunResult};

#[derive(Debug, Serialize)]
pub struct StoreBench {
    pub location: String,
    /// Runs timed one after another, and their epochs each.
    pub runs: usize,
    pub epochs: usize,
    pub per_run_ms_median: f64,
    pub per_run_ms_p99: f64,
    pub per_run_ms_max: f64,
    pub load_workers: usize,
    pub load_runs: usize,
    pub load_seconds: f64,
    pub load_claims_per_second: f64,
    pub load_duplicate_claims: usize,
    pub load_errors: usize,
}

fn specs(count: usize, offset: usize) -> Vec<RunSpec> {
    (offset..offset + count)
        .map(|seed| {
            RunSpec::of(RunConfig {
                seed: seed as u64,
                ..crate::train::settings::defaults(Layout::Sequential)
            })
        })
        .collect()
}

fn result(run: &RunSpec, epochs: usize) -> RunResult {
    let metrics = (1..=epochs)
        .map(|epoch| EpochMetrics {
            epoch,
            train_loss: 1.0 / epoch as f64,
            val_loss: 1.1 / epoch as f64,
            val_acc: 0.5,
            seconds: 1.0,
            images_per_second: 1000.0,
            holdout_loss: None,
            holdout_acc: None,
        })
        .collect();
    RunResult {
        config: run.config.clone(),
        params: 1000,
        train_examples: 1000,
        q: 10.0,
        outcome: Outcome::Done,
        diverged_epoch: None,
        epochs: metrics,
        final_train_loss: Some(0.1),
        final_train_acc: Some(0.9),
        final_val_loss: Some(0.2),
        final_val_acc: Some(0.8),
        truncated_val_loss: Some(0.3),
        truncated_val_acc: Some(0.7),
        convergence: None,
        train_seconds: 1.0,
        total_seconds: 1.0,
        device: "Cpu".into(),
    }
}

/// Claims, records and finishes one run; `false` when the queue is empty.
fn one_run(store: &mut dyn Store, me: &WorkerInfo, epochs: usize) -> Result<Option<String>> {
    let Some(run) = store.claim(me)? else {
        return Ok(None);
    };
    let r = result(&run, epochs);
    for m in &r.epochs {
        store.record_epoch(&run.id, me, m)?;
    }
    store.finish(&run.id, me, Finish::Trained(&r))?;
    Ok(Some(run.id))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Times `runs` runs of `epochs` epochs one by one, then lets `workers` threads (each with its
/// own connection) drain `load_runs` more.
pub fn run(
    location: &Location,
    runs: usize,
    epochs: usize,
    workers: usize,
    load_runs: usize,
) -> Result<StoreBench> {
    let mut s = store::open(location)?;
    if !s.runs()?.is_empty() {
        bail!("{location}: the store benchmark needs an empty database; it adds synthetic runs");
    }
    s.add_runs("store-bench", "", &specs(runs, 0))?;
    let me = WorkerInfo::this_process(1);
    s.register_worker(&me)?;
    let mut ms = Vec::with_capacity(runs);
    loop {
        let started = Instant::now();
        if one_run(s.as_mut(), &me, epochs)?.is_none() {
            break;
        }
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ensure!(ms.len() == runs, "{} of {runs} runs claimed", ms.len());
    ms.sort_by(f64::total_cmp);
    s.add_runs("store-bench-load", "", &specs(load_runs, runs))?;
    let started = Instant::now();
    let outcomes: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<String>> {
                    let mut s = store::open(location)?;
                    let me = WorkerInfo::this_process(1);
                    s.register_worker(&me)?;
                    let mut claimed = Vec::new();
                    while let Some(id) = one_run(s.as_mut(), &me, epochs)? {
                        claimed.push(id);
                    }
                    Ok(claimed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let errors = outcomes.iter().filter(|o| o.is_err()).count();
    let claimed: Vec<String> = outcomes.into_iter().flatten().flatten().collect();
    let distinct: HashSet<&String> = claimed.iter().collect();
    Ok(StoreBench {
        location: location.to_string(),
        runs,
        epochs,
        per_run_ms_median: percentile(&ms, 0.5),
        per_run_ms_p99: percentile(&ms, 0.99),
        per_run_ms_max: percentile(&ms, 1.0),
        load_workers: workers,
        load_runs: claimed.len(),
        load_seconds: seconds,
        load_claims_per_second: claimed.len() as f64 / seconds,
        load_duplicate_claims: claimed.len() - distinct.len(),
        load_errors: errors,
    })
}
