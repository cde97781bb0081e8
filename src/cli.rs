//! Argument definitions (clap); `commands` runs them.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shallow::data::{self, Subset};
use shallow::device::DeviceChoice;
use shallow::model::{Activation, Head, Layout, Pool, Precision};
use shallow::report::equivalence::Margins;
use shallow::train::RunConfig;
/// Most threads or worker processes one command may ask for.
const MAX_PARALLELISM: usize = 1024;

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
    Train(TrainArgs),
    /// Run a grid of trainings (both layouts of every configuration) into a results database;
    /// resumable: run it again to continue.
    Sweep(SweepArgs),
    /// Show a results database's progress: counts by status, throughput, ETA, last errors.
    Status {
        /// Results database.
        db: PathBuf,
    },
    /// Write one CSV row per run: config columns, status, final metrics, timings.
    Export {
        /// Results database.
        db: PathBuf,
        /// Output CSV file.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Turn a results database into the paper's Table 2, paired statistics and plots
    /// (report.md, self-contained report.html, tables/*.csv, plots/*.svg and *.png).
    Report {
        /// Results database (may be partial or still being written).
        db: PathBuf,
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
        #[arg(long, value_enum)]
        layout: Layout,
        #[arg(long, value_parser = parallelism)]
        threads: usize,
        #[arg(long, value_enum)]
        device: DeviceChoice,
        #[arg(long, value_enum)]
        precision: Precision,
        #[arg(long)]
        steps: usize,
    },
    /// Download datasets.
    Data {
        #[command(subcommand)]
        action: DataCommand,
    },
    /// Train pending runs of a results database until none is left. `shallow sweep` starts these;
    /// start more by hand (Slurm array, Kubernetes job) against the same database.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1, value_parser = parallelism)]
        threads: usize,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        offline: bool,
        #[arg(long, value_enum, default_value_t)]
        device: DeviceChoice,
    },
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
    /// Skip the 16-run sweep benchmark.
    #[arg(long)]
    pub no_sweep: bool,
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
}

#[derive(Args)]
pub struct SweepArgs {
    /// Grid spec (TOML), e.g. configs/quick.toml or configs/paper.toml.
    pub config: PathBuf,
    /// Results database (SQLite file, created if missing).
    #[arg(long, default_value = "results.db")]
    pub db: PathBuf,
    /// Worker processes training concurrently [default: one per core].
    #[arg(long, value_parser = parallelism)]
    pub workers: Option<usize>,
    /// Print the number of runs, total parameters and an estimated time; train nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Download a dataset from its official source, verify its SHA-256 and install it atomically.
    Fetch {
        /// Dataset to download.
        #[arg(value_parser = [data::MNIST, data::CIFAR10])]
        dataset: String,
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
pub struct TrainArgs {
    /// Dataset: mnist, cifar10, or the folder name (under the data directory) of any IDX dataset
    /// laid out as MNIST.
    #[arg(long, default_value = data::MNIST)]
    pub dataset: String,
    /// sequential = deep residual stack; parallel = the same units side by side.
    #[arg(long, value_enum)]
    pub layout: Layout,
    /// Number of residual units L.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Channels F of every convolution.
    #[arg(long, default_value_t = 32)]
    pub filters: usize,
    /// Kernel size k (odd).
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    #[arg(long, value_enum, default_value_t)]
    pub activation: Activation,
    /// Pooling after the stem.
    #[arg(long, value_enum, default_value_t)]
    pub pool: Pool,
    /// Batch norm in every unit: φ(BN(conv(h))).
    #[arg(long)]
    pub batchnorm: bool,
    #[arg(long, value_enum, default_value_t)]
    pub head: Head,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Seeds initial weights and data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on this many examples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validate on this many test-set examples only.
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// How limits pick examples: stratified = balanced classes in file order; first = first N.
    #[arg(long, value_enum, default_value_t)]
    pub subset: Subset,
    /// Arithmetic of convolutions and linear layer; bf16 is about 2× faster on CPUs with AMX or
    /// AVX-512-BF16, final losses within 10 % of fp32 (weights, optimizer and loss stay f32).
    #[arg(long, value_enum, default_value_t)]
    pub precision: Precision,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Write the full result (config, P, Q, per-epoch and final metrics, timings) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Record the run into this folder for `bench/reference.py replay`: data, initial weights and
    /// batch order (trace.npz), every step's loss and variable checksums (trace.json).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

impl TrainArgs {
    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            dataset: self.dataset.clone(),
            layout: self.layout,
            layers: self.layers,
            filters: self.filters,
            kernel: self.kernel,
            activation: self.activation,
            pool: self.pool,
            batchnorm: self.batchnorm,
            head: self.head,
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            seed: self.seed,
            train_limit: self.train_limit,
            val_limit: self.val_limit,
            subset: self.subset,
            precision: self.precision,
        }
    }
}
