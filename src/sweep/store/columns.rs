//! The stored columns, each defined once: its name (the name of the field it holds in
//! [`RunRow`], [`EpochRow`] and, for a result, [`RunResult`]), its kind and its constraints. Both
//! backends derive from these lists their CREATE TABLEs, the columns a migration adds to an
//! older database, their SELECTs (reading what an older database lacks as NULL), INSERTs and
//! UPDATEs, and they decode rows by column name through serde; `shallow export` writes every
//! plain one ([`scalar_cells`]). Adding a result column is one line in [`RUN_COLUMNS`] (and the
//! field of that name in `RunRow` and `RunResult`, the types that carry it).
use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value as Json};

use super::row::{Field, Kind, Row, Value};
use super::{EpochRow, RunRow, RunStatus};
use crate::train::RunResult;

/// Who writes a run column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Set when the run is queued or claimed, or by the store's bookkeeping.
    Queue,
    /// Taken from the [`RunResult`] field of the same name when the run finishes.
    Result,
}

/// A stored column.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// Its constraints in CREATE TABLE (the same in both dialects).
    pub(super) constraint: Constraint,
    pub(super) role: Role,
}

/// A column's constraints in CREATE TABLE.
#[derive(Debug, Clone, Copy)]
pub(super) enum Constraint {
    Sql(&'static str),
    /// A run's status: one of [`RunStatus::ALL`], pending when queued.
    Status,
}

impl Constraint {
    pub(super) fn sql(self) -> String {
        match self {
            Constraint::Sql(sql) => sql.to_owned(),
            Constraint::Status => {
                let all: Vec<String> = RunStatus::ALL.iter().map(|s| format!("'{s}'")).collect();
                format!(
                    "NOT NULL DEFAULT '{}' CHECK (status IN ({}))",
                    RunStatus::Pending,
                    all.join(", ")
                )
            }
        }
    }
}

pub(super) const fn column(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        constraint: Constraint::Sql(""),
        role: Role::Queue,
    }
}

const fn result(name: &'static str, kind: Kind) -> Column {
    Column {
        role: Role::Result,
        ..column(name, kind)
    }
}

const fn constrained(name: &'static str, kind: Kind, constraint: &'static str) -> Column {
    Column {
        constraint: Constraint::Sql(constraint),
        ..column(name, kind)
    }
}

use Kind::{Integer, Json as JsonText, Real, Text};

/// The columns of a [`RunRow`].
pub(super) const RUN_COLUMNS: &[Column] = &[
    constrained("id", Text, "NOT NULL UNIQUE"),
    constrained("pair_id", Text, "NOT NULL"),
    constrained("sweep", Text, "NOT NULL REFERENCES sweeps(name)"),
    Column {
        constraint: Constraint::Status,
        ..column("status", Text)
    },
    constrained("config", JsonText, "NOT NULL"),
    constrained("attempts", Integer, "NOT NULL DEFAULT 0"),
    column("worker", Text),
    column("host", Text),
    column("claimed_at", Real),
    column("finished_at", Real),
    result("params", Integer),
    result("q", Real),
    result("train_examples", Integer),
    result("final_train_loss", Real),
    result("final_train_acc", Real),
    result("final_val_loss", Real),
    result("final_val_acc", Real),
    result("diverged_epoch", Integer),
    result("train_seconds", Real),
    result("total_seconds", Real),
    result("device", Text),
    column("error", Text),
    result("truncated_val_loss", Real),
    result("truncated_val_acc", Real),
    result("convergence", JsonText),
];

/// The store's own columns of the runs table, in no [`RunRow`]: the fusion key claims group by
/// (since version 3). The backends add their own (PostgreSQL's lease).
pub(super) const RUN_BOOKKEEPING: &[Column] = &[column("fuse_key", Text)];

/// The columns of an [`EpochRow`] (its metrics flattened).
pub(super) const EPOCH_COLUMNS: &[Column] = &[
    constrained("run_id", Text, "NOT NULL REFERENCES runs(id)"),
    constrained("epoch", Integer, "NOT NULL"),
    column("train_loss", Real),
    column("val_loss", Real),
    column("val_acc", Real),
    constrained("seconds", Real, "NOT NULL"),
    constrained("images_per_second", Real, "NOT NULL"),
    column("holdout_loss", Real),
    column("holdout_acc", Real),
];

/// `columns`' values of `row` (serialised by serde, so read by field name), in list order.
/// Non-finite numbers are NULL (SQLite has no NaN): a diverged run's losses are still recorded.
pub(super) fn values_of(row: &impl Serialize, columns: &[Column]) -> Result<Vec<Value>> {
    let fields = fields_of(row)?;
    columns
        .iter()
        .map(|c| to_value(c, fields.get(c.name).unwrap_or(&Json::Null)))
        .collect()
}

/// Decodes a row from its columns' stored values (`value_of(i, column)`: the `i`th of
/// `columns`, found by name; `extra` adds fields that are no column, such as a run's count of
/// recorded epochs), by name through serde ([`super::row`]).
pub(super) fn decode<T: DeserializeOwned>(
    columns: &[Column],
    mut value_of: impl FnMut(usize, &Column) -> Result<Value>,
    extra: &[(&str, i64)],
) -> Result<T> {
    let mut fields = Vec::with_capacity(columns.len() + extra.len());
    for (i, c) in columns.iter().enumerate() {
        fields.push(Field {
            name: c.name,
            kind: c.kind,
            value: value_of(i, c)?,
        });
    }
    fields.extend(extra.iter().map(|&(name, value)| Field {
        name,
        kind: Integer,
        value: Value::Integer(Some(value)),
    }));
    T::deserialize(Row::new(&fields)).context("a stored row is not readable")
}

/// The result columns' values of a finished run.
pub(super) fn result_values(result: &RunResult) -> Result<Vec<Value>> {
    let columns: Vec<Column> = result_columns().collect();
    values_of(result, &columns)
}

pub(super) fn result_columns() -> impl Iterator<Item = Column> {
    RUN_COLUMNS
        .iter()
        .copied()
        .filter(|c| c.role == Role::Result)
}

/// The run columns that hold one plain value each, in list order: all but the run's identity
/// and status and its JSON documents (config, convergence record).
fn scalar_run_columns() -> impl Iterator<Item = &'static Column> {
    const IDENTITY: [&str; 4] = ["id", "pair_id", "sweep", "status"];
    RUN_COLUMNS
        .iter()
        .filter(|c| c.kind != JsonText && !IDENTITY.contains(&c.name))
}

/// The names of [`scalar_cells`], in order.
pub fn scalar_names() -> Vec<&'static str> {
    scalar_run_columns().map(|c| c.name).collect()
}

/// `row`'s value of every [`scalar_run_columns`] as text (empty for NULL): a run's stored
/// results and bookkeeping as `shallow export` writes them, so that a result column added to
/// [`RUN_COLUMNS`] is exported with nothing else to edit.
pub fn scalar_cells(row: &RunRow) -> Result<Vec<String>> {
    let fields = fields_of(row)?;
    Ok(scalar_run_columns()
        .map(|c| match fields.get(c.name) {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
        .collect())
}

fn fields_of(row: &impl Serialize) -> Result<Map<String, Json>> {
    match serde_json::to_value(row)? {
        Json::Object(fields) => Ok(fields),
        other => Err(anyhow!("a row serialised as {other}, not an object")),
    }
}

fn to_value(c: &Column, json: &Json) -> Result<Value> {
    let wrong = || anyhow!("column {}: {json} is not {:?}", c.name, c.kind);
    Ok(match (c.kind, json) {
        (kind, Json::Null) => Value::null(kind),
        (Text, Json::String(s)) => Value::Text(Some(s.clone())),
        (JsonText, doc) => Value::Text(Some(doc.to_string())),
        (Integer, Json::Number(n)) => Value::Integer(Some(n.as_i64().ok_or_else(wrong)?)),
        (Real, Json::Number(n)) => Value::Real(n.as_f64().filter(|x| x.is_finite())),
        _ => return Err(wrong()),
    })
}

/// Where each of `columns` is among a query's result columns `names`, looked up by name once per
/// query rather than once per row.
pub(super) fn positions(columns: &[Column], names: &[&str]) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            names
                .iter()
                .position(|n| *n == c.name)
                .ok_or_else(|| anyhow!("the query has no column {}", c.name))
        })
        .collect()
}

/// The names of `columns`, comma-separated.
pub(super) fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Placeholders `?1, …` (SQLite) or `$1, …` (PostgreSQL) for `n` values from `first`.
pub(super) fn placeholders(sigil: char, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("{sigil}{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name = ?k, …` for `columns`, numbered from `first`.
pub(super) fn assignments(columns: &[Column], sigil: char, first: usize) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = {sigil}{}", c.name, first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of the epochs table and of runs as the report reads them decode from these lists.
pub(super) fn decode_epoch(
    value_of: impl FnMut(usize, &Column) -> Result<Value>,
) -> Result<EpochRow> {
    decode(EPOCH_COLUMNS, value_of, &[])
}

pub(super) fn decode_run(
    value_of: impl FnMut(usize, &Column) -> Result<Value>,
    epochs_recorded: i64,
) -> Result<RunRow> {
    decode(
        RUN_COLUMNS,
        value_of,
        &[("epochs_recorded", epochs_recorded)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_constraint_lists_every_status_as_earlier_schemas_hold_it() {
        assert_eq!(
            Constraint::Status.sql(),
            "NOT NULL DEFAULT 'pending' \
             CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed'))"
        );
    }
}
