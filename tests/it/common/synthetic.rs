//! Results stores filled with synthetic runs of known values, for the report's tests.
use std::path::Path;

use shallow::model::Layout;
use shallow::sweep::store::identity::{RunSpec, run_id};
use shallow::sweep::store::{Finish, SqliteStore, Store, WorkerInfo};
use shallow::train::stopping::{Convergence, StopReason};
use shallow::train::{EpochMetrics, Outcome, RunConfig, RunResult};

use super::run_config;

pub fn config(dataset: &str, layout: Layout, filters: usize, layers: usize) -> RunConfig {
    RunConfig {
        layers,
        filters,
        epochs: 2,
        train_limit: None,
        val_limit: None,
        ..run_config(dataset, layout)
    }
}

/// A synthetic run: its config and the values the "training" produced. Its truncated evaluation
/// (the units rearranged) has validation loss `val_loss × (1 + train_loss)` and accuracy
/// `val_acc − 0.1`.
pub struct Synthetic {
    pub config: RunConfig,
    pub q: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub seconds: f64,
    pub diverged: bool,
}

/// The sequential and parallel runs of one configuration (told apart by `filters`) and seed, with
/// the given validation losses; Q 2, training loss 0.1, accuracy 0.9, one second each.
pub fn seeded_pair(
    dataset: &str,
    filters: usize,
    seed: u64,
    val_loss: (f64, f64),
) -> [Synthetic; 2] {
    [
        (Layout::Sequential, val_loss.0),
        (Layout::Parallel, val_loss.1),
    ]
    .map(|(layout, loss)| Synthetic {
        config: RunConfig {
            seed,
            ..config(dataset, layout, filters, 2)
        },
        q: 2.0,
        train_loss: 0.1,
        val_loss: loss,
        val_acc: 0.9,
        seconds: 1.0,
        diverged: false,
    })
}

/// The run's result; a run with a held-out split also gets held-out losses (`val_loss × 1.1`
/// per epoch) and a convergence record (plateau, best epoch 2).
pub fn result_of(s: &Synthetic) -> RunResult {
    let held = s.config.holdout.is_some();
    let epochs = (1..=2)
        .map(|epoch| EpochMetrics {
            epoch,
            train_loss: s.train_loss * (3 - epoch) as f64,
            val_loss: s.val_loss * (3 - epoch) as f64,
            val_acc: s.val_acc,
            seconds: s.seconds / 2.0,
            images_per_second: 1000.0,
            holdout_loss: held.then(|| 1.1 * s.val_loss * (3 - epoch) as f64),
            holdout_acc: held.then_some(s.val_acc - 0.05),
        })
        .collect();
    RunResult {
        config: s.config.clone(),
        params: 1000,
        train_examples: 100,
        q: s.q,
        outcome: if s.diverged {
            Outcome::Diverged
        } else {
            Outcome::Done
        },
        diverged_epoch: s.diverged.then_some(1),
        epochs,
        final_train_loss: (!s.diverged).then_some(s.train_loss),
        final_train_acc: (!s.diverged).then_some(0.9),
        final_val_loss: (!s.diverged).then_some(s.val_loss),
        final_val_acc: (!s.diverged).then_some(s.val_acc),
        truncated_val_loss: (!s.diverged).then_some(s.val_loss * (1.0 + s.train_loss)),
        truncated_val_acc: (!s.diverged).then_some(s.val_acc - 0.1),
        convergence: (held && !s.diverged).then_some(Convergence {
            stop_reason: StopReason::Plateau,
            best_epoch: 2,
            best_holdout_loss: 1.1 * s.val_loss,
            best_holdout_acc: s.val_acc - 0.05,
            best_val_loss: s.val_loss,
            best_val_acc: s.val_acc,
            still_improving: false,
            restored: true,
            seconds_to_best: s.seconds,
        }),
        train_seconds: s.seconds,
        total_seconds: s.seconds,
        device: "Cpu".into(),
    }
}

/// Fills a store through its public interface: add, claim, record epochs, finish.
pub fn fill(db: &Path, runs: &[Synthetic], leave_pending: usize) {
    fill_with(db, runs, leave_pending, &|_| {});
}

/// [`fill`], with each result passed through `edit` before it is recorded.
pub fn fill_with(
    db: &Path,
    runs: &[Synthetic],
    leave_pending: usize,
    edit: &dyn Fn(&mut RunResult),
) {
    let mut store = SqliteStore::open(db).unwrap();
    let specs: Vec<RunSpec> = runs.iter().map(|s| RunSpec::of(s.config.clone())).collect();
    store.add_runs("synthetic", "", &specs).unwrap();
    let me = WorkerInfo::this_process(1);
    store.register_worker(&me).unwrap();
    for _ in 0..runs.len() - leave_pending {
        let claimed = store.claim(&me).unwrap().unwrap();
        let s = runs
            .iter()
            .find(|s| run_id(&s.config) == claimed.id)
            .unwrap();
        let mut result = result_of(s);
        edit(&mut result);
        for m in &result.epochs {
            store.record_epoch(&claimed.id, &me, m).unwrap();
        }
        store
            .finish(&claimed.id, &me, Finish::Trained(&result))
            .unwrap();
    }
}
