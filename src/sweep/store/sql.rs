//! Statements both backends run, written once: in SQLite's numbered placeholders (`?1`), which
//! [`Dialect::render`] turns into PostgreSQL's (`$1`), with the runs' statuses spelled by
//! [`RunStatus`] and each dialect's clock and row locking filled in.
use super::RunStatus;
use super::columns::{Column, EPOCH_COLUMNS, assignments, column_list, placeholders};
use super::schema::Dialect;

impl Dialect {
    /// `sql` (whose only `?` are its placeholders) with placeholders as this dialect writes them.
    pub(super) fn render(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => sql.to_owned(),
            Dialect::Postgres => sql.replace('?', "$"),
        }
    }

    /// The time a statement records: SQLite's is the bound parameter `?{param}` (this machine's
    /// clock, see [`super::now`]), PostgreSQL's the server's clock.
    fn clock(self, param: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{param}"),
            Dialect::Postgres => "extract(epoch from clock_timestamp())::float8".into(),
        }
    }

    /// What a subquery that picks rows to change appends: PostgreSQL locks them and skips rows
    /// other transactions hold (SQLite's writers are serialised already).
    fn pick(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

impl Dialect {
    /// The larger of two values.
    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }
}

/// A status as an SQL literal.
pub(super) fn status(s: RunStatus) -> String {
    format!("'{}'", s.as_str())
}

/// The statuses of finished runs (ended or failed, see [`RunStatus::finished`]), as a list of
/// SQL literals.
pub(super) fn finished() -> String {
    let finished = RunStatus::ALL.into_iter().filter(|s| s.finished());
    finished.map(status).collect::<Vec<_>>().join(", ")
}

/// The assignments that put an abandoned run back to pending — or mark it failed once its
/// worker has died on it `attempts` (a parameter) times — unclaimed.
pub(super) fn give_up_or_requeue(d: Dialect, attempts: &str) -> String {
    let (now, lease) = match d {
        Dialect::Sqlite => ("unixepoch('subsec')".to_owned(), ""),
        Dialect::Postgres => (d.clock(0), ", lease_renewed_at = NULL"),
    };
    d.render(&format!(
        "status = CASE WHEN attempts >= {attempts} THEN {failed} ELSE {pending} END,
         error = CASE WHEN attempts >= {attempts}
             THEN 'its worker died or went silent on it ' || attempts || ' times' ELSE error END,
         finished_at = CASE WHEN attempts >= {attempts} THEN {now} ELSE NULL END,
         worker = NULL, claimed_at = NULL{lease}",
        failed = status(RunStatus::Failed),
        pending = status(RunStatus::Pending),
    ))
}

/// Moves up to `?3` pending runs (with `filter`, which may use `?4`) to running for worker `?1`
/// on host `?2`, claimed at `?5` (SQLite; PostgreSQL's clock, and its lease renewed); returns
/// their id, pair id and config.
pub(super) fn claim(d: Dialect, filter: &str) -> String {
    let lease = match d {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!(", lease_renewed_at = {}", d.clock(5)),
    };
    d.render(&format!(
        "UPDATE runs SET status = {running}, worker = ?1, host = ?2, claimed_at = {now}{lease},
             attempts = attempts + 1, error = NULL
         WHERE seq IN (SELECT seq FROM runs WHERE status = {pending} {filter}
                       ORDER BY seq LIMIT ?3{pick})
         RETURNING id, pair_id, config",
        running = status(RunStatus::Running),
        pending = status(RunStatus::Pending),
        now = d.clock(5),
        pick = d.pick(),
    ))
}

/// The runs worker `?1` holds, in queue order: id, pair id, config.
pub(super) fn held(d: Dialect) -> String {
    d.render(&format!(
        "SELECT id, pair_id, config FROM runs WHERE worker = ?1 AND status = {} ORDER BY seq",
        status(RunStatus::Running)
    ))
}

/// Run `?1`'s status and worker (its row locked, in PostgreSQL, until the transaction ends).
pub(super) fn owner(d: Dialect) -> String {
    let lock = match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    };
    d.render(&format!(
        "SELECT status, worker FROM runs WHERE id = ?1{lock}"
    ))
}

/// Records run `?1` trained, with status `?2` and the values of `results` from `?3` on,
/// finished at the parameter after them (SQLite; PostgreSQL's clock).
pub(super) fn finish_trained(d: Dialect, results: &[Column]) -> String {
    d.render(&format!(
        "UPDATE runs SET status = ?2, {}, finished_at = {} WHERE id = ?1",
        assignments(results, '?', 3),
        d.clock(3 + results.len())
    ))
}

/// Records run `?1` failed with error `?2`, at `?3` (SQLite; PostgreSQL's clock).
pub(super) fn finish_failed(d: Dialect) -> String {
    d.render(&format!(
        "UPDATE runs SET status = {}, error = ?2, finished_at = {} WHERE id = ?1",
        status(RunStatus::Failed),
        d.clock(3)
    ))
}

/// Run `?1` back to pending, unclaimed, its attempt not counted.
pub(super) fn hand_back(d: Dialect) -> String {
    let lease = match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => ", lease_renewed_at = NULL",
    };
    d.render(&format!(
        "UPDATE runs SET status = {}, attempts = {}(attempts - 1, 0), worker = NULL,
             claimed_at = NULL{lease} WHERE id = ?1",
        status(RunStatus::Pending),
        d.greatest()
    ))
}

/// Inserts one epoch row (the values of `EPOCH_COLUMNS`, in order).
pub(super) fn insert_epoch(d: Dialect) -> String {
    d.render(&format!(
        "INSERT INTO epochs ({}) VALUES ({})",
        column_list(EPOCH_COLUMNS),
        placeholders('?', 1, EPOCH_COLUMNS.len())
    ))
}

/// [`insert_epoch`], or its metrics in place of the row's when the run has that epoch already
/// (a retried write whose answer was lost replaces the epoch it wrote).
pub(super) fn record_epoch(d: Dialect) -> String {
    let metrics = &EPOCH_COLUMNS[2..];
    format!(
        "{} ON CONFLICT (run_id, epoch) DO UPDATE SET {}",
        insert_epoch(d),
        d.render(&assignments(metrics, '?', 3))
    )
}

/// Deletes run `?1`'s epochs.
pub(super) fn delete_epochs(d: Dialect) -> String {
    d.render("DELETE FROM epochs WHERE run_id = ?1")
}

/// Deletes run `?1` if it is still pending (a run removed from its grid).
pub(super) fn drop_pending(d: Dialect) -> String {
    d.render(&format!(
        "DELETE FROM runs WHERE id = ?1 AND status = {}",
        status(RunStatus::Pending)
    ))
}

/// Every failed run back to pending, its attempts reset.
pub(super) fn retry_failed(d: Dialect) -> String {
    d.render(&format!(
        "UPDATE runs SET status = {}, attempts = 0, worker = NULL, claimed_at = NULL,
             finished_at = NULL WHERE status = {}",
        status(RunStatus::Pending),
        status(RunStatus::Failed)
    ))
}

/// Keeps run `?1`'s checkpoint after epoch `?2`, saved at `?3` with SHA-256 `?4` and bytes
/// `?5`, in place of any earlier one.
pub(super) fn save_checkpoint(d: Dialect) -> String {
    d.render(
        "INSERT INTO checkpoints (run_id, epoch, saved_at, sha256, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id) DO UPDATE SET epoch = ?2, saved_at = ?3, sha256 = ?4, bytes = ?5",
    )
}

/// Run `?1`'s checkpoint: bytes, SHA-256.
pub(super) fn checkpoint(d: Dialect) -> String {
    d.render("SELECT bytes, sha256 FROM checkpoints WHERE run_id = ?1")
}

/// Deletes run `?1`'s checkpoint.
pub(super) fn delete_checkpoint(d: Dialect) -> String {
    d.render("DELETE FROM checkpoints WHERE run_id = ?1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_clock_and_statuses_follow_the_dialect() {
        let sqlite = claim(Dialect::Sqlite, "AND fuse_key = ?4");
        let postgres = claim(Dialect::Postgres, "AND fuse_key = ?4");
        assert!(
            sqlite.contains("claimed_at = ?5") && !sqlite.contains('$'),
            "{sqlite}"
        );
        assert!(
            !postgres.contains('?') && !postgres.contains("$5"),
            "{postgres}"
        );
        assert!(postgres.contains("fuse_key = $4"), "{postgres}");
        assert!(postgres.contains("clock_timestamp()") && postgres.contains("SKIP LOCKED"));
        assert!(sqlite.contains("status = 'running'") && sqlite.contains("status = 'pending'"));
    }
}
