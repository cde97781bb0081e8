//! `shallow status` and `shallow export`: read-only views of a results store.
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::plan::human_duration;
use super::store::{self, RunRow, RunStatus, Store};

/// `shallow status`: counts by status, throughput, ETA, runs in progress, last errors.
pub fn status_text(db: &Path) -> Result<String> {
    let store = store::SqliteStore::open_existing(db)?;
    let runs = store.runs()?;
    let counts = store.status_counts()?;
    let mut out = format!("{}: {} runs\n", db.display(), runs.len());
    for (status, n) in &counts {
        out += &format!("  {status:<9} {n}\n");
    }
    let finished: Vec<&RunRow> = runs.iter().filter(|r| r.finished_at.is_some()).collect();
    let first = runs.iter().filter_map(|r| r.claimed_at).reduce(f64::min);
    let last = finished
        .iter()
        .filter_map(|r| r.finished_at)
        .reduce(f64::max);
    if let (Some(first), Some(last)) = (first, last)
        && last > first
    {
        let per_hour = finished.len() as f64 / (last - first) * 3600.0;
        let remaining = runs.len() - finished.len();
        out += &format!(
            "throughput: {per_hour:.1} runs/hour; remaining {remaining} runs ≈ {} at that rate\n",
            human_duration(remaining as f64 / per_hour * 3600.0)
        );
    }
    for r in store.running()? {
        let label = if r.worker_gone {
            "abandoned (its worker is gone; the next sweep or worker trains it again)"
        } else {
            "running"
        };
        out += &format!(
            "{label}: {} ({} {} L={} F={} k={}) on {}, {} of {} epochs done\n",
            r.run_id,
            r.config.dataset,
            r.config.layout,
            r.config.layers,
            r.config.filters,
            r.config.kernel,
            r.worker,
            r.epochs_done,
            r.config.epochs
        );
    }
    let mut failed: Vec<&RunRow> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .collect();
    failed.sort_by(|a, b| {
        b.finished_at
            .partial_cmp(&a.finished_at)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for r in failed.iter().take(5) {
        out += &format!(
            "failed: {}: {}\n",
            r.id,
            r.error.as_deref().unwrap_or("(no message)")
        );
    }
    Ok(out)
}

/// `shallow export`: one CSV row per run — identity, config columns, status, final metrics,
/// timings — ready for pandas or polars.
pub fn export_csv(db: &Path, out: &Path) -> Result<usize> {
    if out.is_dir() {
        bail!("--csv {}: is a folder; give a file name", out.display());
    }
    let store = store::SqliteStore::open_existing(db)?;
    let runs = store.runs()?;
    let tmp = out.with_extension("csv.tmp");
    let mut writer =
        csv::Writer::from_path(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writer.write_record([
        "id",
        "pair_id",
        "sweep",
        "status",
        "dataset",
        "layout",
        "layers",
        "filters",
        "kernel",
        "activation",
        "pool",
        "batchnorm",
        "head",
        "lr",
        "batch_size",
        "epochs",
        "seed",
        "train_limit",
        "val_limit",
        "subset",
        "precision",
        "params",
        "q",
        "train_examples",
        "final_train_loss",
        "final_train_acc",
        "final_val_loss",
        "final_val_acc",
        "diverged_epoch",
        "epochs_recorded",
        "train_seconds",
        "total_seconds",
        "attempts",
        "device",
        "host",
        "worker",
        "error",
    ])?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let int = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let json = |v: serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    for r in &runs {
        let c = &r.config;
        writer.write_record([
            r.id.clone(),
            r.pair_id.clone(),
            r.sweep.clone(),
            r.status.to_string(),
            c.dataset.clone(),
            c.layout.to_string(),
            c.layers.to_string(),
            c.filters.to_string(),
            c.kernel.to_string(),
            json(serde_json::to_value(c.activation)?),
            json(serde_json::to_value(c.pool)?),
            c.batchnorm.to_string(),
            json(serde_json::to_value(c.head)?),
            c.lr.to_string(),
            c.batch_size.to_string(),
            c.epochs.to_string(),
            c.seed.to_string(),
            c.train_limit.map(|v| v.to_string()).unwrap_or_default(),
            c.val_limit.map(|v| v.to_string()).unwrap_or_default(),
            json(serde_json::to_value(c.subset)?),
            json(serde_json::to_value(c.precision)?),
            int(r.params),
            num(r.q),
            int(r.train_examples),
            num(r.final_train_loss),
            num(r.final_train_acc),
            num(r.final_val_loss),
            num(r.final_val_acc),
            int(r.diverged_epoch),
            r.epochs_recorded.to_string(),
            num(r.train_seconds),
            num(r.total_seconds),
            r.attempts.to_string(),
            opt(r.device.clone()),
            opt(r.host.clone()),
            opt(r.worker.clone()),
            opt(r.error.clone()),
        ])?;
    }
    writer.flush()?;
    drop(writer);
    std::fs::rename(&tmp, out).map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        anyhow::anyhow!("cannot write {}: {e}", out.display())
    })?;
    Ok(runs.len())
}
