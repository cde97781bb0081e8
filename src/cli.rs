//! Argument definitions and the glue from each subcommand to the library.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use shallow::bench;
use shallow::data::{self, Subset};
use shallow::device::{self, DeviceChoice};
use shallow::model::{Activation, Head, Layout, Pool, Precision};
use shallow::report::{self, equivalence::Margins};
use shallow::sweep::{coordinator, grid, worker};
use shallow::trace::Trace;
use shallow::train::{self, Outcome, RunConfig, RunResult};

/// Exit code of `train` when the run diverged (its result is still printed and written).
const EXIT_DIVERGED: u8 = 3;
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
    fn run_config(&self) -> RunConfig {
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

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Train(args) => train_command(&args),
        Command::Sweep(args) => sweep_command(&args),
        Command::Status { db } => {
            print!("{}", coordinator::status_text(&db)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { db, csv } => {
            let n = coordinator::export_csv(&db, &csv)?;
            println!("{n} runs written to {}", csv.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { db, out, margin } => {
            let files = report::generate(&db, &out, &margin)?;
            println!(
                "report on {} of {} runs: {} and {}",
                files.finished_runs,
                files.total_runs,
                files.html.display(),
                files.markdown.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let nets = args
                .nets
                .iter()
                .map(|n| {
                    bench::BenchNet::named(n).with_context(|| format!("--nets: unknown net '{n}'"))
                })
                .collect::<Result<Vec<_>>>()?;
            let data_dir = data::resolve_data_dir(args.data_dir.as_deref());
            if !args.no_sweep {
                data::ensure_available(&data_dir, data::MNIST, false)?;
            }
            let options = bench::BenchOptions {
                exe: std::env::current_exe()?,
                python: args.python,
                reference: PathBuf::from("bench/reference.py"),
                threads: args.threads.unwrap_or_else(device::available_cores),
                device: device::select_device(args.device)?,
                precisions: args.precision,
                repetitions: args.repetitions.max(1),
                nets,
                sweep_data: (!args.no_sweep).then_some(data_dir),
            };
            bench::run(&options, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchStep {
            net,
            layout,
            threads,
            device,
            precision,
            steps,
        } => {
            let net =
                bench::BenchNet::named(&net).with_context(|| format!("unknown net '{net}'"))?;
            let settings = bench::StepSettings {
                threads,
                device: device::select_device(device)?,
                precision,
                steps,
            };
            let m = bench::measure_step(net, layout, settings)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            db,
            threads,
            data_dir,
            offline,
            device,
        } => {
            let summary = worker::run(&worker::WorkerOptions {
                db,
                threads,
                data_dir: data::resolve_data_dir(data_dir.as_deref()),
                offline,
                device,
            })?;
            tracing::info!("worker done: {summary:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            action:
                DataCommand::Fetch {
                    dataset,
                    dir,
                    mirror,
                },
        } => {
            let source = data::download::Source::named(&dataset).expect("clap checked the name");
            let dir = data::resolve_data_dir(dir.as_deref());
            data::download::fetch(&source, &dir, &mirror)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sweep_command(args: &SweepArgs) -> Result<ExitCode> {
    if args.dry_run {
        let grid = grid::load(&args.config)?;
        let data_dir = data::resolve_data_dir(args.runtime.data_dir.as_deref());
        coordinator::check_inputs(&grid, &data_dir, args.runtime.offline, false)?;
        let (workers, threads) = coordinator::plan_workers(args.workers, args.runtime.threads);
        println!("{}", coordinator::dry_run(&grid, workers, threads)?);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = coordinator::SweepOptions {
        config: args.config.clone(),
        db: args.db.clone(),
        workers: args.workers,
        threads: args.runtime.threads,
        data_dir: data::resolve_data_dir(args.runtime.data_dir.as_deref()),
        offline: args.runtime.offline,
        device: args.runtime.device,
    };
    let exe = std::env::current_exe().context("cannot find the shallow binary")?;
    let queued = coordinator::queue(&opts)?;
    println!(
        "sweep '{}': {} runs in the grid, {} new, {} already in {}\n\
         {} worker(s) × {} thread(s); worker logs: {}",
        queued.name,
        queued.runs,
        queued.added.new,
        queued.added.existing,
        opts.db.display(),
        queued.workers,
        queued.threads,
        queued.log_path.display()
    );
    let outcome = coordinator::run_sweep(&opts, &exe, &queued)?;
    let [done, diverged, failed] = outcome.trained_now;
    println!(
        "finished in {}: trained now {done} done, {diverged} diverged, {failed} failed \
         ({:.0} runs/hour); in the database {} done, {} diverged, {} failed, {} pending",
        coordinator::human_duration(outcome.wall_seconds),
        (done + diverged + failed) as f64 / (outcome.wall_seconds / 3600.0).max(1e-9),
        outcome.count("done"),
        outcome.count("diverged"),
        outcome.count("failed"),
        outcome.count("pending") + outcome.count("running"),
    );
    if outcome.workers_lost > 0 {
        eprintln!(
            "{} worker process(es) died along the way and were replaced; see {}",
            outcome.workers_lost,
            args.db.with_extension("workers.log").display()
        );
    }
    if outcome.complete() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "not every run ended done or diverged; `shallow status {}` shows why",
        args.db.display()
    );
    Ok(ExitCode::FAILURE)
}

fn train_command(args: &TrainArgs) -> Result<ExitCode> {
    let cfg = args.run_config();
    cfg.validate()?;
    if let Some(path) = &args.json {
        check_writable(path).context("--json")?;
    }
    let rt = &args.runtime;
    let data_dir = data::resolve_data_dir(rt.data_dir.as_deref());
    data::ensure_available(&data_dir, &cfg.dataset, rt.offline)?;
    let raw = data::load(&data_dir, &cfg.dataset)?;
    let device = device::select_device(rt.device)?;
    device::set_threads(rt.threads.unwrap_or_else(device::available_cores));
    train::check_fits(&cfg, raw.train.shape, device)?;
    let tensors = data::prepare(&raw, cfg.train_limit, cfg.val_limit, cfg.subset, device);
    println!(
        "{} {} L={} F={} k={} on {} training / {} validation images, {device:?}",
        cfg.dataset,
        cfg.layout,
        cfg.layers,
        cfg.filters,
        cfg.kernel,
        tensors.train_len(),
        tensors.val_y.size()[0]
    );
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut progress = train::Bar(bar.clone());
    let result = match &args.trace {
        Some(dir) => {
            let mut recorder = Trace::new(dir, &tensors)?;
            let result = train::train(
                &cfg,
                &tensors,
                device,
                &mut train::Both(&mut progress, &mut recorder),
            )?;
            recorder.finish(&result)?;
            result
        }
        None => train::train(&cfg, &tensors, device, &mut progress)?,
    };
    bar.finish_and_clear();
    print_summary(&result);
    if let Some(path) = &args.json {
        write_json(path, &result)?;
        println!("result written to {}", path.display());
    }
    Ok(match result.outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Diverged => ExitCode::from(EXIT_DIVERGED),
    })
}

fn print_summary(r: &RunResult) {
    println!("parameters P = {}   Q = {:.3}", r.params, r.q);
    match (r.outcome, r.final_train_loss, r.final_train_acc) {
        (Outcome::Done, Some(loss), Some(acc)) => {
            println!(
                "final train loss {loss:.5}  train acc {:.2}%  val loss {:.5}  val acc {:.2}%",
                100.0 * acc,
                r.final_val_loss.unwrap_or(f64::NAN),
                100.0 * r.final_val_acc.unwrap_or(f64::NAN)
            );
        }
        _ => println!(
            "DIVERGED in epoch {} (non-finite loss)",
            r.diverged_epoch.unwrap_or(0)
        ),
    }
    let images: usize = r.epochs.len() * r.train_examples;
    println!(
        "time: {:.1}s training ({:.0} img/s), {:.1}s total",
        r.train_seconds,
        images as f64 / r.train_seconds.max(1e-9),
        r.total_seconds
    );
}

/// Fails, before any work, when `path` cannot be written as a file: a folder, or a place where
/// the file (and its temporary sibling) cannot be created.
fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("{} is a folder; give a file name", path.display());
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, b"").with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::remove_file(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))
}

/// Writes via a temporary file and rename, so readers never see half a file.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
