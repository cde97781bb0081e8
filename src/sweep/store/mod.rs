//! The results store. [`Store`] is the narrow interface the sweep uses; [`SqliteStore`] is the
//! embedded default (WAL mode, one file), [`PostgresStore`] a server that any number of machines
//! share. Claiming a run is one atomic statement, so any number of worker processes can share a
//! sweep without training a run twice. [`open`] and [`open_reader`] choose the backend from a
//! [`Location`]; nothing outside this module knows which one it has.
//!
//! A run goes `pending → running → done | diverged | failed`. Epoch metrics are written as each
//! epoch ends; finishing a run is one transaction. A run whose worker stops heartbeating (or whose
//! process is gone, on this host) is put back to `pending` and trained again from scratch, its
//! partial epochs deleted.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::train::stopping::Convergence;
use crate::train::{Checkpoint, EpochMetrics, RunConfig, RunResult};
use identity::RunSpec;

/// Where a run stands: `pending → running → done | diverged | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Done,
    Diverged,
    Failed,
}

impl RunStatus {
    /// The status of a run trained to this outcome.
    pub fn of(outcome: crate::train::Outcome) -> RunStatus {
        match outcome {
            crate::train::Outcome::Done => RunStatus::Done,
            crate::train::Outcome::Diverged => RunStatus::Diverged,
        }
    }

    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Done,
        RunStatus::Diverged,
        RunStatus::Failed,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
        }
    }

    /// Trained to the end, with a result: done or diverged.
    pub fn ended(self) -> bool {
        matches!(self, RunStatus::Done | RunStatus::Diverged)
    }

    /// No longer waiting or training: ended, or failed.
    pub fn finished(self) -> bool {
        self.ended() || self == RunStatus::Failed
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| anyhow::anyhow!("unknown run status '{text}'"))
    }
}

/// How often a worker tells the store it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A worker silent for this long is presumed dead and its run is trained again elsewhere (the
/// default of `--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// A worker process as the store knows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub threads: usize,
}

impl WorkerInfo {
    /// This process, under an id unique across machines and containers (which may share host
    /// names and pids): `host:pid:start:random`.
    /// The parent that starts a worker may choose its id (`SHALLOW_WORKER_ID`), so that it can
    /// release the worker's run the moment it reaps it.
    pub fn this_process(threads: usize) -> WorkerInfo {
        let host = hostname();
        let pid = std::process::id();
        WorkerInfo {
            id: std::env::var(WORKER_ID_ENV).unwrap_or_else(|_| new_worker_id(&host, pid)),
            host,
            pid,
            threads,
        }
    }
}

/// The environment variable through which a parent names the worker it starts.
pub const WORKER_ID_ENV: &str = "SHALLOW_WORKER_ID";

/// A worker id unique across machines and containers (which may share host names and pids):
/// `host:pid:start:random`.
pub fn new_worker_id(host: &str, pid: u32) -> String {
    let nonce: u32 = rand::random();
    format!("{host}:{pid}:{}:{nonce:08x}", now() as u64)
}

/// How a claimed run ended.
pub enum Finish<'a> {
    Trained(&'a RunResult),
    Failed(&'a str),
}

/// One row of the runs table, as status, export and report read it; its fields are the columns
/// of [`columns::RUN_COLUMNS`] (by name) and the count of recorded epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub pair_id: String,
    pub sweep: String,
    pub status: RunStatus,
    pub config: RunConfig,
    pub attempts: i64,
    pub worker: Option<String>,
    pub host: Option<String>,
    pub claimed_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub params: Option<i64>,
    pub q: Option<f64>,
    pub train_examples: Option<i64>,
    pub final_train_loss: Option<f64>,
    pub final_train_acc: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub final_val_acc: Option<f64>,
    pub diverged_epoch: Option<i64>,
    pub train_seconds: Option<f64>,
    pub total_seconds: Option<f64>,
    pub device: Option<String>,
    pub error: Option<String>,
    /// Validation loss and accuracy of the trained units rearranged (see
    /// [`crate::train::truncation_of`]).
    pub truncated_val_loss: Option<f64>,
    pub truncated_val_acc: Option<f64>,
    /// Stop reason and best held-out epoch, for runs with a held-out split.
    pub convergence: Option<Convergence>,
    pub epochs_recorded: i64,
}

/// A sweep as recorded: its name and the text of its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRecord {
    pub name: String,
    pub grid: String,
}

/// A run's queue position and stored config (JSON text), read without its results.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub seq: i64,
    pub config: String,
}

/// Per-epoch metrics of one run; stored flat, one column per field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRow {
    pub run_id: String,
    #[serde(flatten)]
    pub metrics: EpochMetrics,
}

/// A run in progress.
#[derive(Debug, Clone)]
pub struct Running {
    pub run_id: String,
    pub worker: String,
    pub epochs_done: usize,
    pub config: RunConfig,
    /// Its worker is dead or silent: the run waits to be trained again by the next sweep or
    /// worker.
    pub worker_gone: bool,
}

/// A checkpoint as the store keeps it: its bytes and their SHA-256 when saved.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl StoredCheckpoint {
    fn of(checkpoint: &Checkpoint) -> StoredCheckpoint {
        StoredCheckpoint {
            bytes: checkpoint.bytes().to_vec(),
            sha256: sha256_hex(checkpoint.bytes()),
        }
    }

    /// The checkpoint, if its bytes are those saved and read as one ([`Checkpoint::from_bytes`]).
    pub fn open(self) -> Result<Checkpoint> {
        let sha256 = sha256_hex(&self.bytes);
        anyhow::ensure!(
            sha256 == self.sha256,
            "its bytes changed since they were saved (SHA-256 {sha256}, saved as {})",
            self.sha256
        );
        Checkpoint::from_bytes(self.bytes)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What `add_runs` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Added {
    pub new: usize,
    pub existing: usize,
}

/// The interface between the sweep and wherever its results live.
pub trait Store {
    /// Records a sweep (by name) and adds those of `runs` the store does not have yet as pending;
    /// runs it already has, finished or not, are left untouched.
    fn add_runs(&mut self, sweep: &str, config_text: &str, runs: &[RunSpec]) -> Result<Added>;
    fn register_worker(&mut self, worker: &WorkerInfo) -> Result<()>;
    fn heartbeat(&mut self, worker: &WorkerInfo) -> Result<()>;
    /// Atomically moves one pending run to running for `worker`; `None` when none is pending.
    fn claim(&mut self, worker: &WorkerInfo) -> Result<Option<RunSpec>> {
        Ok(self.claim_group(worker, &|_| 1)?.into_iter().next())
    }
    /// Atomically moves a group of pending runs that can be trained together to running for
    /// `worker`: the first pending run in queue order, then the next pending runs of its fusion
    /// key ([`fusion_key`](identity::fusion_key)), `limit(first run's config)` runs in all at
    /// most. Empty when none is pending.
    fn claim_group(
        &mut self,
        worker: &WorkerInfo,
        limit: &dyn Fn(&RunConfig) -> usize,
    ) -> Result<Vec<RunSpec>>;
    fn record_epoch(&mut self, run_id: &str, worker: &WorkerInfo, m: &EpochMetrics) -> Result<()>;
    /// Keeps `checkpoint` as the run's latest, in place of any earlier one; refused if the run
    /// is no longer `worker`'s. A run's checkpoint outlives its hand-back and requeueing (the
    /// next claim resumes from it) and is deleted when it finishes or fails, or is dropped.
    fn save_checkpoint(
        &mut self,
        run_id: &str,
        worker: &WorkerInfo,
        checkpoint: &Checkpoint,
    ) -> Result<()>;
    /// The latest checkpoint of a run, if it has one.
    fn checkpoint(&mut self, run_id: &str) -> Result<Option<StoredCheckpoint>>;
    fn finish(&mut self, run_id: &str, worker: &WorkerInfo, finish: Finish) -> Result<()>;
    /// Puts runs back to pending whose worker is gone — its lease expired (no heartbeat for
    /// `stale_after`) or, where that is known to be safe, its process is dead. A run whose
    /// worker has died on it `max_attempts` times is marked failed instead. Returns how many
    /// runs changed.
    fn requeue_abandoned(&mut self, stale_after: Duration, max_attempts: u32) -> Result<usize>;
    /// A worker that was asked to stop (SIGTERM) gives its run back: pending again, its
    /// partial epochs deleted, the attempt not counted. Refused if the run is no longer its.
    fn hand_back(&mut self, run_id: &str, worker: &WorkerInfo) -> Result<()>;
    /// Puts the running runs of `worker`, known to be dead (its parent reaped it), back to
    /// pending at once — or failed, as [`Store::requeue_abandoned`] does. Returns how many.
    fn release_worker(&mut self, worker: &str, max_attempts: u32) -> Result<usize>;
    /// Puts every failed run back to pending, its attempts reset. Returns how many.
    fn retry_failed(&mut self) -> Result<usize>;
    /// Removes those of the runs `ids` that are still pending (nothing of them is recorded);
    /// a run claimed meanwhile is left alone. Returns how many were removed.
    fn drop_pending(&mut self, ids: &[String]) -> Result<usize>;
    fn runs(&self) -> Result<Vec<RunRow>>;
    fn epochs(&self) -> Result<Vec<EpochRow>>;
    /// Up to `limit` runs after queue position `after` (0: from the first), in queue order, and
    /// the position of the last one returned: a store read in pages of bounded memory.
    fn runs_page(&self, after: i64, limit: usize) -> Result<(Vec<RunRow>, i64)>;
    /// The epochs of the runs at queue positions after `after`, up to and including `through`.
    fn epochs_between(&self, after: i64, through: i64) -> Result<Vec<EpochRow>>;
    /// One page of the runs matching `query`, in its order, and how many match in all.
    fn runs_table(&self, query: &RunsQuery) -> Result<(Vec<RunRow>, u64)>;
    /// One run's epochs, in order.
    fn epochs_of(&self, run_id: &str) -> Result<Vec<EpochRow>>;
    /// Runs by sweep and status, and the span of the training so far.
    fn summary(&self) -> Result<Summary>;
    /// Queue positions and config texts of up to `limit` runs after position `after`, in queue
    /// order: settings read without reading results.
    fn configs_page(&self, after: i64, limit: usize) -> Result<Vec<StoredConfig>>;
    fn status_counts(&self) -> Result<Vec<(RunStatus, i64)>>;
    /// The runs in progress, with the latest epoch each has recorded; a run whose worker has
    /// been silent for `lease` is marked gone.
    fn running(&self, lease: Duration) -> Result<Vec<Running>>;
    /// The sweeps recorded.
    fn sweeps(&self) -> Result<Vec<SweepRecord>>;
    /// Copies finished and pending runs with their epochs from another store: runs this store
    /// lacks are inserted as they are there; runs it has are left alone.
    fn import(
        &mut self,
        sweeps: &[SweepRecord],
        runs: &[RunRow],
        epochs: &[EpochRow],
    ) -> Result<Added>;
}

/// The version of the schema this release writes. Version 1 (no `shallow_meta` table) is the
/// schema of releases before versioning; it is migrated in place when a writer opens it.
/// Version 2 added the version record, version 3 the runs' fusion keys and truncated metrics,
/// version 4 the runs' convergence records and the epochs' held-out metrics, version 5 the
/// runs' checkpoints.
pub const SCHEMA_VERSION: i64 = 5;

/// A claimed run from its stored columns.
fn run_spec(id: String, pair_id: String, config: &str) -> Result<RunSpec> {
    let config = serde_json::from_str(config)
        .map_err(|e| anyhow::anyhow!("run {id}: stored config is not readable: {e}"))?;
    Ok(RunSpec {
        id,
        pair_id,
        config,
    })
}

/// The fusion key of a run from its stored config (JSON).
fn stored_fusion_key(config: &str) -> Result<String> {
    let config: RunConfig = serde_json::from_str(config)
        .map_err(|e| anyhow::anyhow!("a stored run config is not readable: {e}"))?;
    Ok(identity::fusion_key(&config))
}

/// Opens the store at `location` for a sweep or worker: created if missing, migrated if older.
pub fn open(location: &Location) -> Result<Box<dyn Store + Send>> {
    let store: Box<dyn Store + Send> = match location {
        Location::Sqlite(path) => Box::new(SqliteStore::open(path)?),
        Location::Postgres(url) => Box::new(PostgresStore::connect(url, false)?),
    };
    Ok(Box::new(Named::new(store, location)))
}

/// Opens an existing store for reading only (status, export, report): never creates, migrates
/// or writes anything, and refuses a database that is not a `shallow` results store.
pub fn open_reader(location: &Location) -> Result<Box<dyn Store + Send>> {
    let store: Box<dyn Store + Send> = match location {
        Location::Sqlite(path) => Box::new(SqliteStore::open_read_only(path)?),
        Location::Postgres(url) => Box::new(PostgresStore::connect(url, true)?),
    };
    Ok(Box::new(Named::new(store, location)))
}

/// Runs copied per transaction by [`copy`]: its memory is bounded by a page of this many runs
/// and their epochs, whatever the size of the database.
const COPY_PAGE: usize = 10_000;

/// One page of [`run_pages`]: its runs in queue order, and the queue positions it spans (after
/// `after`, through `last`).
pub struct RunPage {
    pub runs: Vec<RunRow>,
    pub after: i64,
    pub last: i64,
}

/// Every run of `store` in queue order, at most `size` a time: memory bounded by a page whatever
/// the size of the store. Ends after the first page shorter than `size`.
pub fn run_pages(store: &dyn Store, size: usize) -> impl Iterator<Item = Result<RunPage>> + '_ {
    let mut next = Some(0);
    std::iter::from_fn(move || {
        let after = next.take()?;
        match store.runs_page(after, size) {
            Err(e) => Some(Err(e)),
            Ok((runs, _)) if runs.is_empty() => None,
            Ok((runs, last)) => {
                if runs.len() >= size {
                    next = Some(last);
                }
                Some(Ok(RunPage { runs, after, last }))
            }
        }
    })
}

/// Every run of `store` in queue order, read [`run_pages`] of `size` at a time.
pub fn each_run(store: &dyn Store, size: usize) -> impl Iterator<Item = Result<RunRow>> + '_ {
    run_pages(store, size).flat_map(|page| {
        let (runs, error) = match page {
            Ok(page) => (page.runs, None),
            Err(e) => (Vec::new(), Some(Err(e))),
        };
        error.into_iter().chain(runs.into_iter().map(Ok))
    })
}

/// Copies every sweep, run and epoch of `from` into `to` (created if missing), a page of runs at
/// a time. Runs `to` already has are left alone, so a second copy (or one cut short and run
/// again) changes nothing it did.
pub fn copy(from: &Location, to: &Location) -> Result<Added> {
    anyhow::ensure!(from != to, "{from}: copying a database onto itself");
    let source = open_reader(from)?;
    let mut target = open(to)?;
    let sweeps = source.sweeps()?;
    let mut added = Added {
        new: 0,
        existing: 0,
    };
    for page in run_pages(&*source, COPY_PAGE) {
        let page = page?;
        let epochs = source.epochs_between(page.after, page.last)?;
        let imported = target.import(&sweeps, &page.runs, &epochs)?;
        added.new += imported.new;
        added.existing += imported.existing;
    }
    Ok(added)
}

/// The schema version of a database from its table names, reading the recorded version (with
/// `recorded`) only when there is one: 0 for a database without tables, 1 for `shallow`'s tables
/// without a version record (releases before versioning); other tables without ours are refused.
fn schema_version_of(
    tables: &[String],
    name: &str,
    recorded: impl FnOnce() -> Result<Option<String>>,
) -> Result<i64> {
    let has = |t: &str| tables.iter().any(|x| x == t);
    if tables.is_empty() {
        return Ok(0);
    }
    if !(has("runs") && has("sweeps") && has("epochs")) {
        anyhow::bail!(
            "{name}: not a shallow results database (its tables: {})",
            tables.join(", ")
        );
    }
    if !has("shallow_meta") {
        return Ok(1);
    }
    recorded()?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{name}: schema version missing or unreadable"))
}

/// Refuses a schema from a newer release.
fn check_version(version: i64, location: &str) -> Result<()> {
    anyhow::ensure!(
        version <= SCHEMA_VERSION,
        "{location}: results database of schema version {version}, made by a newer release of \
         shallow (this one reads versions up to {SCHEMA_VERSION}); upgrade shallow"
    );
    Ok(())
}

mod columns;
pub mod identity;
mod location;
mod named;
mod postgres;
mod row;
mod schema;
mod sql;
mod sqlite;
mod table;

pub use columns::{scalar_cells, scalar_names};
pub use location::{Location, redact};
use named::Named;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use table::{RunsQuery, SortKey, Summary};

/// Seconds since the Unix epoch, by this machine's clock — plus `SHALLOW_CLOCK_OFFSET` seconds,
/// an offset the clock-skew test injects. The SQLite backend (one machine) uses this clock; the
/// PostgreSQL backend decides liveness by the server's clock alone.
pub(crate) fn now() -> f64 {
    static OFFSET: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("SHALLOW_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    });
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + offset
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a process of this host is alive: it exists and is not a zombie (a worker killed but
/// not yet reaped by its parent still exists for `kill(pid, 0)`, yet trains nothing).
fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// The state letter of /proc/<pid>/stat (after the command name in parentheses) is Z or X.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .is_some_and(|state| matches!(state, 'Z' | 'X'))
}

/// Whether the worker holding a run is gone: its process is dead on this host, it has not
/// heartbeated since `deadline`, or it never registered.
fn worker_gone(
    host: Option<&str>,
    pid: Option<u32>,
    heartbeat: Option<f64>,
    deadline: f64,
) -> bool {
    match (host, pid, heartbeat) {
        (Some(host), Some(pid), Some(beat)) => {
            (host == hostname() && !process_alive(pid)) || beat < deadline
        }
        _ => true,
    }
}

/// A run as another store should receive it: one in progress there is pending here (its worker
/// belongs to the other store), without its partial epochs.
fn portable(run: &RunRow) -> RunRow {
    let mut run = run.clone();
    if run.status == RunStatus::Running {
        run.status = RunStatus::Pending;
        (run.worker, run.host, run.claimed_at) = (None, None, None);
    }
    run
}

/// The error a run's worker gets once its run was given to another worker: it must stop.
pub fn not_owned(run_id: &str, w: &WorkerInfo) -> anyhow::Error {
    anyhow::anyhow!("run {run_id} is no longer assigned to worker {}", w.id)
}
