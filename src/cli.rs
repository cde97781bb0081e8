//! Argument definitions (clap); `commands` runs them.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shallow::data;
use shallow::device::DeviceChoice;
use shallow::model::{Layout, Precision};
use shallow::report::equivalence::Margins;
use shallow::sweep::grid;
use shallow::sweep::store::{DEFAULT_LEASE, Location};
use shallow::sweep::worker::Fuse;
use shallow::train::RunConfig;
/// Most threads or worker processes one command may ask for.
const MAX_PARALLELISM: usize = 1024;

/// The name of a built-in dataset.
fn builtin_dataset(name: &str) -> Result<String, String> {
    match data::builtin(name) {
        Some(b) => Ok(b.name.to_owned()),
        None => Err(format!(
            "not a built-in dataset; built in: {}",
            data::catalog::names().join(", ")
        )),
    }
}

/// A thread or worker count: 1 to MAX_PARALLELISM.
fn parallelism(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if (1..=MAX_PARALLELISM).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between 1 and {MAX_PARALLELISM}, got {n}"))
    }
}

#[derive(Parser)]
#[command(
    name = "shallow",
    version,
    about = "Deep residual stack vs. shallow parallel layout: train, sweep and report",
    long_about = "Trains convolutional residual networks in two layouts with the same parameters:\n\
      sequential (deep)   h_i = h_{i-1} + F_i(h_{i-1})\n\
      parallel (shallow)  y   = x + Σ_i F_i(x)\n\
    and compares them as in Bermeitinger et al., \"Make Deep Networks Shallow Again\" (2023).\n\n\
    Start with `shallow train --help` for one run."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); SHALLOW_LOG=<filter> overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train one network and print its metrics.
    Train(Box<TrainArgs>),
    /// Evaluate a net saved by `train --save` on a dataset's test images: loss and accuracy.
    Eval(EvalArgs),
    /// Run a grid of trainings (both layouts of every configuration) into a results database;
    /// resumable: run it again to continue.
    Sweep(SweepArgs),
    /// Show a results database's progress: counts by status, throughput, ETA, last errors.
    Status {
        /// Results database: a SQLite file, sqlite://PATH or postgres://user:pass@host/db
        /// [default: $SHALLOW_DB].
        #[arg(env = "SHALLOW_DB", hide_env_values = true)]
        db: Location,
        /// The lease the workers run with (`--lease` of sweep and worker): a run whose worker
        /// has been silent this long is shown as abandoned.
        #[arg(long, default_value_t = DEFAULT_LEASE.as_secs(), value_name = "SECONDS")]
        lease: u64,
    },
    /// Serve a live, read-only dashboard of a results database in the browser: progress per
    /// sweep, runs/hour, ETA, what every worker trains, failed runs (the page updates itself).
    Serve {
        /// Results database (file or URL, as for `status`) [default: $SHALLOW_DB].
        #[arg(env = "SHALLOW_DB", hide_env_values = true)]
        db: Location,
        /// Address to listen on. Any address other than a loopback one (127.0.0.1, ::1) needs
        /// a token on every request: `--token`, or one generated and printed once.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// The token every request must carry (`?token=` once in the browser, or
        /// `Authorization: Bearer`) [default: none on loopback, else generated].
        #[arg(long, env = "SHALLOW_SERVE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The workers' lease (`--lease` of sweep and worker): a run whose worker has been
        /// silent this long shows as abandoned.
        #[arg(long, default_value_t = DEFAULT_LEASE.as_secs(), value_name = "SECONDS")]
        lease: u64,
        /// The folder the workers saved the runs' nets in (`--save-nets`): the runs table
        /// links each run's file.
        #[arg(long, value_name = "DIR")]
        nets: Option<PathBuf>,
    },
    /// Write one CSV row per run: id, status, every run setting (with its value in force), final
    /// metrics, timings (`--csv -`: to standard output).
    Export {
        /// Results database (file or URL, as for `status`) [default: $SHALLOW_DB].
        #[arg(env = "SHALLOW_DB", hide_env_values = true)]
        db: Location,
        /// Output CSV file; `-` writes to standard output.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Turn a results database into the paper's Table 2, paired statistics and plots
    /// (report.md, self-contained report.html, tables/*.csv, plots/*.svg and *.png).
    Report {
        /// Results database (file or URL, as for `status`; may be partial or still being
        /// written) [default: $SHALLOW_DB].
        #[arg(env = "SHALLOW_DB", hide_env_values = true)]
        db: Location,
        /// Output folder.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// Equivalence margins of the verdicts: the validation loss relative to the sequential
        /// run's, and the validation accuracy in points; a key left out keeps its default.
        #[arg(long, default_value = "loss=2%,acc=0.5")]
        margin: Margins,
    },
    /// Benchmark training speed against the PyTorch reference (bench/reference.py) in one run.
    Bench(BenchArgs),
    /// One timed training-step measurement as JSON (used by `bench`).
    #[command(hide = true)]
    BenchStep {
        #[arg(long)]
        net: String,
        #[arg(long)]
        layout: Layout,
        #[arg(long, value_parser = parallelism)]
        threads: usize,
        #[arg(long, value_enum)]
        device: DeviceChoice,
        #[arg(long, value_enum)]
        precision: Precision,
        #[arg(long)]
        steps: usize,
        /// Nets trained together as one fused array.
        #[arg(long, default_value_t = 1)]
        members: usize,
        /// Augment each batch (crop-flip) before its step.
        #[arg(long)]
        augment: bool,
    },
    /// Download datasets.
    Data {
        #[command(subcommand)]
        action: DataCommand,
    },
    /// Train pending runs of a results database until none is left (or, with --forever, wait
    /// for more): the unit a cluster job runs. Queue the runs first with
    /// `shallow sweep GRID --db URL --no-train`; start workers on any number of machines.
    Worker(WorkerArgs),
    /// A worker process started by `sweep` or `worker --workers N`: its settings arrive as JSON
    /// on standard input.
    #[command(hide = true)]
    WorkerChild,
    /// Copy every sweep, run and epoch of one results database into another (SQLite ↔
    /// PostgreSQL): a sweep started on a laptop continues on a cluster. Runs the target already
    /// has are left alone, so copying twice changes nothing; runs in progress arrive pending.
    Copy {
        /// Database to read (file or URL).
        from: Location,
        /// Database to write (file or URL; created if missing).
        to: Location,
    },
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Results database (file or URL) [default: $SHALLOW_DB].
    #[arg(long, env = "SHALLOW_DB", hide_env_values = true)]
    pub db: Location,
    /// Worker processes to run on this machine.
    #[arg(long, default_value_t = 1, value_parser = parallelism)]
    pub workers: usize,
    /// Keep polling for new runs when the queue is empty instead of exiting.
    #[arg(long)]
    pub forever: bool,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub keep: KeepArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What a sweep's workers keep of the runs they train, besides their metrics.
#[derive(Args, Clone)]
pub struct KeepArgs {
    /// Save every run's trained net (as `train --save` does) to DIR/<run id>.safetensors;
    /// created if missing. A folder every worker reaches (on a cluster, a shared one).
    #[arg(long, value_name = "DIR")]
    pub save_nets: Option<PathBuf>,
    /// Write a run's checkpoint (weights, optimizer state, stream positions) to the store at
    /// the end of an epoch once this many seconds have passed since its last; 0: after every
    /// epoch. A run whose worker is killed or stopped resumes from its checkpoint, bit for bit.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub checkpoint_every: u64,
}

/// How workers take runs from the queue, and what happens to runs whose workers die.
#[derive(Args, Clone, Copy)]
pub struct QueueArgs {
    /// Train up to this many runs that differ only in lr and seed together, as one fused
    /// array (grouped convolutions; each run still recorded as itself). auto: up to 16 on a
    /// GPU, within about 16 GiB of estimated training memory; 1 on a CPU, where fusing
    /// measured no faster. 1 turns fusion off.
    #[arg(long, default_value = "auto", value_name = "auto|N")]
    pub fuse: Fuse,
    /// A run whose worker dies on it this many times is marked failed instead of being
    /// claimed again.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Seconds without a heartbeat (sent every 5 s) after which a worker's run is given to
    /// another worker. Shorter recovers faster from killed workers; it must outlast pauses of
    /// the network or the database.
    #[arg(long, default_value_t = DEFAULT_LEASE.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(15..=86_400))]
    pub lease: u64,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Repetitions of every measurement (ours and the reference alternate).
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Threads for both implementations [default: all cores].
    #[arg(long, value_parser = parallelism)]
    pub threads: Option<usize>,
    /// Python with torch importable (`SHALLOW_TORCH_FULL=1 scripts/setup.sh` installs it).
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// Nets to measure: mnist, cifar, tiny, deep.
    #[arg(long, value_delimiter = ',', default_value = "mnist,cifar,tiny,deep")]
    pub nets: Vec<String>,
    /// Skip the sweep benchmarks (the 16-run grid, and the 18-run fused grid).
    #[arg(long)]
    pub no_sweep: bool,
    /// Skip the fused section: M = 1, 3, 9 nets trained as one array against M solo processes
    /// and a torch.func vmap ensemble (and the fused sweep benchmark).
    #[arg(long)]
    pub no_fused: bool,
    /// Device for both implementations.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// Precisions to measure every net in (the reference uses torch.autocast for bf16); with both,
    /// the bf16/fp32 speedup is printed too.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fp32")]
    pub precision: Vec<Precision>,
    /// Data directory for the sweep benchmark [default: $SHALLOW_DATA, else ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Benchmark only the results store at this location (an empty database, file or URL): the
    /// overhead per run (claim, a write per epoch, finish) over 200 runs of 10 epochs, then 64
    /// concurrent workers draining 10,000 runs.
    #[arg(long, value_name = "DB")]
    pub store: Option<Location>,
}

#[derive(Args)]
pub struct SweepArgs {
    /// Grid spec (TOML), e.g. configs/quick.toml or configs/paper.toml.
    pub config: PathBuf,
    /// Results database: a SQLite file (created if missing), sqlite://PATH, or
    /// postgres://user:pass@host:port/dbname [default: $SHALLOW_DB, else results.db].
    #[arg(
        long,
        env = "SHALLOW_DB",
        hide_env_values = true,
        default_value = "results.db"
    )]
    pub db: Location,
    /// Put runs that failed back in the queue before training.
    #[arg(long)]
    pub retry_failed: bool,
    /// A user data file (npz:, folder:) changed since its runs were queued: remove its pending
    /// runs queued for the old version (finished ones stay) and queue the runs of the file as it
    /// is now. Without it such a sweep is refused.
    #[arg(long)]
    pub requeue_changed_data: bool,
    /// Remove the pending runs of this sweep that its grid no longer holds (after narrowing the
    /// grid of a sweep under way); finished runs stay in the database. Without it such runs are
    /// trained too, and the sweep says how many there are.
    #[arg(long)]
    pub drop_removed: bool,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Worker processes training concurrently [default: one per core].
    #[arg(long, value_parser = parallelism)]
    pub workers: Option<usize>,
    /// Print the number of runs, total parameters and an estimated time; train nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Check the grid and add its runs to the database, then exit without training: workers
    /// started elsewhere (`shallow worker`) train them.
    #[arg(long, conflicts_with = "dry_run")]
    pub no_train: bool,
    /// Refuse grids with more combinations (before [[exclude]]) than this: a guard against a
    /// grid that grew by mistake. Raise it to run a larger grid.
    #[arg(long, default_value_t = grid::DEFAULT_MAX_RUNS, value_name = "N")]
    pub max_runs: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Download built-in datasets from their official sources, verify their SHA-256 and install
    /// them atomically. Without a name: list the built-in datasets, with size, licence and
    /// whether each is in the data directory.
    Fetch {
        /// Datasets to download (mnist, fashion, kmnist, cifar10, cifar100, cifar100-coarse).
        #[arg(value_parser = builtin_dataset)]
        datasets: Vec<String>,
        /// Data directory [default: $SHALLOW_DATA, else ./data].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Base URL to download from instead of the official ones.
        #[arg(long, env = "SHALLOW_MIRROR")]
        mirror: Option<String>,
    },
}

/// Where and how runs execute; none of this changes a run's result.
#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// Data directory [default: $SHALLOW_DATA, else ./data]. Missing datasets are downloaded into it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download: fail if a dataset is missing.
    #[arg(long)]
    pub offline: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceChoice,
    /// libtorch threads [default: all cores; in a sweep: per worker, cores / workers].
    #[arg(long, value_parser = parallelism)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The saved net (`train --save`).
    pub model: PathBuf,
    /// Dataset whose test images to evaluate on [default: the one it was trained on]; its
    /// images must have the net's shape, its labels the net's classes. Images are normalised as
    /// in training (the statistics saved with the net).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Evaluate on this many test images only, picked as in training [default: the run's
    /// `val_limit`; with --dataset, all].
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Write the images evaluated (normalised), their labels and the net's logits to this
    /// safetensors file (`images`, `labels`, `logits`).
    #[arg(long, value_name = "FILE")]
    pub outputs: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: RunConfig,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Write the full result (config, P, Q, per-epoch and final metrics, timings) as JSON to
    /// this file; - writes it to standard output, and the lines for people to standard error.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Record the run into this folder for `bench/reference.py replay`: data, initial weights and
    /// batch order (trace.npz), every step's loss and variable checksums (trace.json).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Save the trained net (the best held-out epoch's weights, where a stopping rule restored
    /// them) to this safetensors file, with its architecture, normalisation and settings:
    /// `shallow eval` evaluates it, `bench/shallow_net.py` loads it into PyTorch.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// README: "Settings left out take the defaults of `shallow train`".
    #[test]
    fn grid_defaults_are_the_defaults_of_shallow_train() {
        for layout in ["sequential", "parallel"] {
            let cli = Cli::parse_from(["shallow", "train", "--layout", layout]);
            let Command::Train(args) = cli.command else {
                panic!("parsed as train")
            };
            let text = format!("[runs]\nlayout = \"{layout}\"\n");
            let g = grid::parse(&text, "defaults.toml").unwrap();
            let runs: Vec<_> = g.runs().collect::<anyhow::Result<_>>().unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].config, args.config);
        }
    }
}
