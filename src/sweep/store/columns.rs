//! The stored columns, each listed once with the schema version that added it; both backends
//! derive their SELECTs (reading what an older database lacks as NULL), INSERTs and placeholders
//! from these lists, and bind an epoch's values as [`EpochValues`].
use anyhow::Result;

use crate::train::EpochMetrics;
use crate::train::stopping::Convergence;

/// A stored column: its name, the schema version that added it, and (for columns added after
/// version 1) its type, in which an older database is read as NULL.
pub(super) type Column = (&'static str, i64, &'static str);

/// The columns of a [`RunRow`], in its field order, for both backends' queries.
pub(super) const RUN_COLUMNS: [Column; 25] = [
    ("id", 1, ""),
    ("pair_id", 1, ""),
    ("sweep", 1, ""),
    ("status", 1, ""),
    ("config", 1, ""),
    ("attempts", 1, ""),
    ("worker", 1, ""),
    ("host", 1, ""),
    ("claimed_at", 1, ""),
    ("finished_at", 1, ""),
    ("params", 1, ""),
    ("q", 1, ""),
    ("train_examples", 1, ""),
    ("final_train_loss", 1, ""),
    ("final_train_acc", 1, ""),
    ("final_val_loss", 1, ""),
    ("final_val_acc", 1, ""),
    ("diverged_epoch", 1, ""),
    ("train_seconds", 1, ""),
    ("total_seconds", 1, ""),
    ("device", 1, ""),
    ("error", 1, ""),
    ("truncated_val_loss", 3, "DOUBLE PRECISION"),
    ("truncated_val_acc", 3, "DOUBLE PRECISION"),
    ("convergence", 4, "TEXT"),
];

/// The columns of an epoch row, in the order both backends bind [`EpochValues`].
pub(super) const EPOCH_COLUMNS: [Column; 9] = [
    ("run_id", 1, ""),
    ("epoch", 1, ""),
    ("train_loss", 1, ""),
    ("val_loss", 1, ""),
    ("val_acc", 1, ""),
    ("seconds", 1, ""),
    ("images_per_second", 1, ""),
    ("holdout_loss", 4, "DOUBLE PRECISION"),
    ("holdout_acc", 4, "DOUBLE PRECISION"),
];

/// The names of `columns`, comma-separated (for INSERTs into the current schema).
pub(super) fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|(name, _, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `columns` to select from a database of schema `version`: those it lacks are read as NULL.
pub(super) fn select_columns(columns: &[Column], version: i64) -> String {
    columns
        .iter()
        .map(|&(name, since, kind)| {
            if since <= version {
                name.to_owned()
            } else {
                format!("CAST(NULL AS {kind}) AS {name}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Placeholders `?1, …` (SQLite) or `$1, …` (PostgreSQL) for `n` values.
pub(super) fn placeholders(sigil: char, n: usize) -> String {
    (1..=n)
        .map(|i| format!("{sigil}{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A run's convergence record as stored (JSON), and back.
pub(super) fn convergence_text(c: Option<&Convergence>) -> Option<String> {
    c.map(|c| serde_json::to_string(c).expect("a convergence record serialises"))
}

pub(super) fn convergence_of(text: Option<String>) -> Result<Option<Convergence>> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| anyhow::anyhow!("a stored convergence record is not readable: {e}"))
    })
    .transpose()
}

/// One epoch as the epochs table stores it: losses and accuracy through [`finite`].
pub(super) struct EpochValues<'a> {
    pub(super) run_id: &'a str,
    pub(super) epoch: i64,
    pub(super) train_loss: Option<f64>,
    pub(super) val_loss: Option<f64>,
    pub(super) val_acc: Option<f64>,
    pub(super) seconds: f64,
    pub(super) images_per_second: f64,
    pub(super) holdout_loss: Option<f64>,
    pub(super) holdout_acc: Option<f64>,
}

impl<'a> EpochValues<'a> {
    pub(super) fn new(run_id: &'a str, m: &EpochMetrics) -> EpochValues<'a> {
        EpochValues {
            run_id,
            epoch: m.epoch as i64,
            train_loss: finite(m.train_loss),
            val_loss: finite(m.val_loss),
            val_acc: finite(m.val_acc),
            seconds: m.seconds,
            images_per_second: m.images_per_second,
            holdout_loss: m.holdout_loss.and_then(finite),
            holdout_acc: m.holdout_acc.and_then(finite),
        }
    }
}

/// Stores NaN/inf as NULL (SQLite has no NaN), so a diverged epoch is still recorded.
pub(super) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}
