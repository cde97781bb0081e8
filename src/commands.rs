//! What each subcommand does: the glue from parsed arguments to the library, and everything the
//! command line prints.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use shallow::bench;
use shallow::data;
use shallow::device;
use shallow::report;
use shallow::serve::{ServeOptions, Server};
use shallow::sweep::store::{self, RunStatus};
use shallow::sweep::{coordinator, fault, grid, inspect, plan, worker};
use shallow::trace::Trace;
use shallow::train::{self, Outcome, RunResult};

use crate::cli::{BenchArgs, Command, DataCommand, EvalArgs, SweepArgs, TrainArgs, WorkerArgs};

/// Exit code of `train` when the run diverged (its result is still printed and written).
const EXIT_DIVERGED: u8 = 3;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Train(args) => train_command(&args),
        Command::Eval(args) => eval_command(&args),
        Command::Sweep(args) => sweep_command(&args),
        Command::Status { db, lease } => {
            print!("{}", inspect::status_text(&db, Duration::from_secs(lease))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            db,
            bind,
            token,
            lease,
            nets,
        } => serve_command(ServeOptions {
            db,
            bind,
            token,
            lease: Duration::from_secs(lease),
            nets,
        }),
        Command::Export { db, csv } if csv.as_os_str() == "-" => {
            let n = inspect::export_csv_to(&db, std::io::stdout().lock())?;
            eprintln!("{n} runs written to standard output");
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { db, csv } => {
            let n = inspect::export_csv(&db, &csv)?;
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
        Command::Bench(args) => bench_command(args),
        Command::BenchStep {
            net,
            layout,
            threads,
            device,
            precision,
            steps,
            members,
            augment,
        } => {
            let net =
                bench::BenchNet::named(&net).with_context(|| format!("unknown net '{net}'"))?;
            let settings = bench::StepSettings {
                threads,
                device: device::select_device(device)?,
                precision,
                steps,
            };
            let m = if members > 1 {
                bench::measure_fused_step(net, layout, members, settings)?
            } else {
                bench::measure_step(net, layout, settings, augment)?
            };
            println!("{}", serde_json::to_string(&m)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => worker_command(&args),
        Command::WorkerChild => {
            let settings: worker::WorkerSettings = serde_json::from_reader(std::io::stdin())
                .context("worker-child: no worker settings on standard input")?;
            run_worker(&settings)
        }
        Command::Copy { from, to } => {
            let copied = store::copy(&from, &to)?;
            println!(
                "{from} → {to}: {} runs copied, {} already there",
                copied.new, copied.existing
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Data {
            action:
                DataCommand::Fetch {
                    datasets,
                    dir,
                    mirror,
                },
        } => {
            let dir = data::resolve_data_dir(dir.as_deref());
            if datasets.is_empty() {
                print!("{}", dataset_list(&dir));
            }
            for dataset in datasets {
                let source = data::builtin(&dataset).expect("clap checked the name");
                data::download::fetch(source, &dir, &mirror)?;
                println!("{dataset}: ready in {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve_command(options: ServeOptions) -> Result<ExitCode> {
    let db = options.db.to_string();
    let server = Server::start(options)?;
    let addr = server.addr()?;
    match server.token() {
        Some(token) => println!("serving {db} at http://{addr}/?token={token}"),
        None => println!("serving {db} at http://{addr}/"),
    }
    server.run();
    Ok(ExitCode::SUCCESS)
}

/// The built-in datasets as a table: name, classes, image shape, download size, licence, and
/// whether each is complete in `dir`.
fn dataset_list(dir: &Path) -> String {
    let licence = data::BUILTIN
        .iter()
        .map(|b| b.licence.chars().count())
        .max();
    let licence = licence.unwrap_or(0);
    let mut out = format!(
        "{:<16} {:>7} {:>9} {:>7}  {:<8} {:<licence$} {}\n",
        "dataset", "classes", "images", "MB", "in data", "licence", "what"
    );
    for b in &data::BUILTIN {
        let [c, h, w] = b.shape;
        let here = data::missing_files(dir, b.name).is_empty();
        out += &format!(
            "{:<16} {:>7} {:>9} {:>7}  {:<8} {:<licence$} {}\n",
            b.name,
            b.classes,
            format!("{c}×{h}×{w}"),
            b.megabytes,
            if here { "yes" } else { "no" },
            b.licence,
            b.title
        );
    }
    out + &format!(
        "data directory: {}; `shallow data fetch NAME…` downloads\n",
        dir.display()
    )
}

fn sweep_command(args: &SweepArgs) -> Result<ExitCode> {
    if args.dry_run {
        let grid = grid::load_limited(&args.config, args.max_runs)?;
        let data_dir = data::resolve_data_dir(args.runtime.data_dir.as_deref());
        let known = plan::Known {
            facts: plan::check_inputs(&grid, &data_dir, args.runtime.offline, false)?,
            hashes: grid::DataHashes::of(&grid, &data_dir)?,
            history: plan::History::read(&args.db)?,
        };
        let (workers, threads) = plan::plan_workers(args.workers, args.runtime.threads);
        let device = device::select_device(args.runtime.device)?;
        let execution = plan::Execution {
            workers,
            threads,
            device,
            fuse: args.queue.fuse.cap(device),
        };
        println!("{}", plan::dry_run(&grid, known, &execution)?);
        return Ok(ExitCode::SUCCESS);
    }
    let data_dir = data::resolve_data_dir(args.runtime.data_dir.as_deref());
    let opts = coordinator::SweepOptions {
        config: args.config.clone(),
        db: args.db.clone(),
        workers: args.workers,
        threads: args.runtime.threads,
        data_dir: data_dir.clone(),
        offline: args.runtime.offline,
        device: args.runtime.device,
        max_runs: args.max_runs,
        max_attempts: args.queue.max_attempts,
        retry_failed: args.retry_failed,
        requeue_changed_data: args.requeue_changed_data,
        drop_removed: args.drop_removed,
    };
    let queued = coordinator::queue(&opts)?;
    println!(
        "sweep '{}': {} runs in the grid, {} new, {} already in {}",
        queued.name, queued.runs, queued.added.new, queued.added.existing, opts.db,
    );
    if args.retry_failed {
        println!("{} failed runs put back in the queue", queued.retried);
    }
    let stale = &queued.stale;
    if !stale.datasets.is_empty() {
        println!(
            "{} changed since runs were queued: {} pending run(s) of the old version removed; {} \
             finished run(s) of the old version stay (their data_hash tells them apart)",
            stale.datasets.join(", "),
            stale.pending.len(),
            stale.finished
        );
    }
    match queued.removed {
        coordinator::Removed { pending: 0, .. } => {}
        coordinator::Removed {
            pending,
            dropped: true,
        } => println!("{pending} pending run(s) no longer in the grid removed"),
        coordinator::Removed { pending, .. } => println!(
            "{pending} pending run(s) of sweep '{}' are no longer in its grid and will be trained \
             too: --drop-removed removes them",
            queued.name
        ),
    }
    if args.no_train {
        return Ok(ExitCode::SUCCESS);
    }
    let pool = coordinator::PoolOptions {
        worker: worker::WorkerSettings {
            db: args.db.clone(),
            threads: queued.threads,
            data_dir,
            // Every dataset was checked, and fetched if needed, while queueing.
            offline: true,
            device: args.runtime.device,
            max_attempts: args.queue.max_attempts,
            lease: Duration::from_secs(args.queue.lease),
            fuse: args.queue.fuse,
            forever: false,
            save_nets: args.keep.save_nets.clone(),
            checkpoint_every: Duration::from_secs(args.keep.checkpoint_every),
        },
        workers: queued.workers,
        log_path: queued.log_path.clone(),
    };
    run_pool_and_summarise(&pool, false)
}

/// `shallow worker`: one worker in this process, or a pool of worker processes.
fn worker_command(args: &WorkerArgs) -> Result<ExitCode> {
    let settings = worker::WorkerSettings {
        db: args.db.clone(),
        threads: args.runtime.threads.unwrap_or(1),
        data_dir: data::resolve_data_dir(args.runtime.data_dir.as_deref()),
        offline: args.runtime.offline,
        device: args.runtime.device,
        max_attempts: args.queue.max_attempts,
        lease: Duration::from_secs(args.queue.lease),
        forever: args.forever,
        fuse: args.queue.fuse,
        save_nets: args.keep.save_nets.clone(),
        checkpoint_every: Duration::from_secs(args.keep.checkpoint_every),
    };
    if args.workers > 1 {
        let pool = coordinator::PoolOptions {
            log_path: args.db.worker_log(),
            worker: settings,
            workers: args.workers,
        };
        return run_pool_and_summarise(&pool, true);
    }
    run_worker(&settings)
}

/// One worker in this process. A fault of its environment (its runs handed back untouched) is
/// said on standard error, written to the fault file of a sweep that started it, and ends it
/// with [`fault::EXIT_ENVIRONMENT`].
fn run_worker(settings: &worker::WorkerSettings) -> Result<ExitCode> {
    match worker::run(settings) {
        Ok(summary) => {
            tracing::info!("worker done: {summary:?}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if fault::environment_fault(&e).is_some() => {
            let text = format!("{e:#}");
            if let Some(path) = std::env::var_os(fault::FAULT_FILE_ENV) {
                // Best effort: the sweep falls back to pointing at the log.
                let _ = std::fs::write(path, &text);
            }
            eprintln!(
                "error: {text}\nthis worker stopped and left its runs pending, attempts unchanged; \
                 fix its environment and start it again"
            );
            Ok(ExitCode::from(fault::EXIT_ENVIRONMENT))
        }
        Err(e) => Err(e),
    }
}

/// `stop_is_success`: a SIGTERM that stopped the pool ends it with exit code 0 (a worker pool
/// preempted by its scheduler), not 1 (a sweep left unfinished).
fn run_pool_and_summarise(
    pool: &coordinator::PoolOptions,
    stop_is_success: bool,
) -> Result<ExitCode> {
    println!(
        "{} worker(s) × {} thread(s); worker logs: {}",
        pool.workers,
        pool.worker.threads,
        pool.log_path.display()
    );
    let exe = std::env::current_exe().context("cannot find the shallow binary")?;
    let outcome = coordinator::run_pool(pool, &exe)?;
    let coordinator::Trained {
        done,
        diverged,
        failed,
    } = outcome.trained_now;
    println!(
        "finished in {}: trained now {done} done, {diverged} diverged, {failed} failed \
         ({:.0} runs/hour); in the database {} done, {} diverged, {} failed, {} pending",
        shallow::human::duration(outcome.wall_seconds),
        outcome.trained_now.total() as f64 / (outcome.wall_seconds / 3600.0).max(1e-9),
        outcome.count(RunStatus::Done),
        outcome.count(RunStatus::Diverged),
        outcome.count(RunStatus::Failed),
        outcome.count(RunStatus::Pending) + outcome.count(RunStatus::Running),
    );
    if outcome.workers_lost > 0 {
        eprintln!(
            "{} worker process(es) died along the way and were replaced; see {}",
            outcome.workers_lost,
            pool.log_path.display()
        );
    }
    if outcome.stopped {
        eprintln!("stopped by SIGTERM: the workers handed their runs back");
    }
    for fault in &outcome.faults {
        eprintln!(
            "worker(s) stopped, their runs left pending: {fault}\nno worker was started again \
             for it; fix the cause and run the command again"
        );
    }
    if outcome.complete() || (outcome.stopped && stop_is_success) {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "not every run ended done or diverged; `shallow status {}` shows why",
        pool.worker.db
    );
    // Workers that stopped on a fault of their environment: the code one such worker exits with.
    if outcome.faults.is_empty() {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::from(fault::EXIT_ENVIRONMENT))
    }
}

fn train_command(args: &TrainArgs) -> Result<ExitCode> {
    let mut cfg = args.config.clone();
    cfg.validate()?;
    anyhow::ensure!(
        args.trace.is_none() || cfg.augment.is_none(),
        "--trace: the PyTorch replay does not augment; trace a run with --augment none"
    );
    let json_to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = args.json.as_deref().filter(|_| !json_to_stdout) {
        shallow::files::check_writable(path).context("--json")?;
    }
    // With the JSON on standard output, the lines for people go to standard error.
    let mut human: Box<dyn Write> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let rt = &args.runtime;
    let data_dir = data::resolve_data_dir(rt.data_dir.as_deref());
    data::ensure_available(&data_dir, &cfg.dataset, rt.offline)?;
    let raw = data::load(&data_dir, &cfg.dataset)?;
    cfg.data_hash = data::content_hash(&data_dir, &cfg.dataset)?;
    let device = device::select_device(rt.device)?;
    device::set_threads(rt.threads.unwrap_or_else(device::available_cores));
    train::check_fits(&cfg, raw.train.shape, raw.classes, device)?;
    let tensors = data::prepare(&raw, &cfg.selection(), device)?;
    writeln!(
        human,
        "{} {} L={} F={} k={} on {} training / {}{} test images, {device:?}",
        cfg.dataset,
        cfg.layout,
        cfg.layers,
        cfg.filters,
        cfg.kernel,
        tensors.train_len(),
        tensors
            .holdout
            .as_ref()
            .map_or(String::new(), |(_, y)| format!(
                "{} held-out / ",
                y.size()[0]
            )),
        tensors.val_y.size()[0]
    )?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut progress = train::Bar(bar.clone());
    let mut recorder = args
        .trace
        .as_ref()
        .map(|dir| Trace::new(dir, &tensors))
        .transpose()?;
    let mut saver = (args.save.as_ref())
        .map(|path| train::SaveNet::new(path, &cfg, &tensors).context("--save"))
        .transpose()?;
    let mut observers: Vec<&mut dyn train::Observer> = vec![&mut progress];
    observers.extend(recorder.as_mut().map(|r| r as &mut dyn train::Observer));
    observers.extend(saver.as_mut().map(|s| s as &mut dyn train::Observer));
    let result = train::train(&cfg, &tensors, device, &mut train::All(observers))?;
    if let Some(recorder) = recorder {
        recorder.finish(&result)?;
    }
    bar.finish_and_clear();
    print_summary(&mut human, &result)?;
    match (&args.save, result.outcome) {
        (Some(path), Outcome::Done) => writeln!(human, "trained net saved to {}", path.display())?,
        (Some(_), Outcome::Diverged) => writeln!(human, "no net saved: the run diverged")?,
        (None, _) => {}
    }
    match &args.json {
        Some(_) if json_to_stdout => println!("{}", serde_json::to_string_pretty(&result)?),
        Some(path) => {
            write_json(path, &result)?;
            writeln!(human, "result written to {}", path.display())?;
        }
        None => {}
    }
    Ok(match result.outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Diverged => ExitCode::from(EXIT_DIVERGED),
    })
}

/// `shallow eval`: a saved net's test loss and accuracy, as `train` reports its own.
fn eval_command(args: &EvalArgs) -> Result<ExitCode> {
    let rt = &args.runtime;
    let device = device::select_device(rt.device)?;
    let (_vars, net, meta) = shallow::model::saved::load(&args.model, device)?;
    let trained: train::RunConfig = serde_json::from_value(meta.settings.clone())
        .with_context(|| format!("{}: its settings are not readable", args.model.display()))?;
    let net = net.with_precision(trained.precision);
    let dataset = args
        .dataset
        .clone()
        .unwrap_or_else(|| trained.dataset.clone());
    let limit = args
        .val_limit
        .or(trained.val_limit.filter(|_| args.dataset.is_none()));
    let data_dir = data::resolve_data_dir(rt.data_dir.as_deref());
    data::ensure_available(&data_dir, &dataset, rt.offline)?;
    let raw = data::load(&data_dir, &dataset)?;
    let arch = net.architecture();
    anyhow::ensure!(
        raw.test.shape == arch.input && raw.classes == arch.classes,
        "{}: a net for {:?} images of {} classes; dataset '{dataset}' has {:?} images of {} classes",
        args.model.display(),
        arch.input,
        arch.classes,
        raw.test.shape,
        raw.classes
    );
    device::set_threads(rt.threads.unwrap_or_else(device::available_cores));
    let (x, y) = data::test_images(&raw, limit, trained.subset, &meta.normalisation, device);
    let (loss, acc) = train::evaluate(&net, &x, &y);
    println!(
        "{} on {} test images of {dataset}: loss {loss:.5}  acc {:.2}%",
        args.model.display(),
        y.size()[0],
        100.0 * acc
    );
    if let Some(path) = &args.outputs {
        let tensors = [
            ("images".to_owned(), x.shallow_clone()),
            ("labels".to_owned(), y.shallow_clone()),
            ("logits".to_owned(), train::logits(&net, &x)),
        ];
        shallow::model::saved::write_tensors(path, &tensors, Default::default())?;
        println!("images, labels and logits written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(out: &mut dyn Write, r: &RunResult) -> std::io::Result<()> {
    writeln!(out, "parameters P = {}   Q = {:.3}", r.params, r.q)?;
    match (r.outcome, r.final_train_loss, r.final_train_acc) {
        (Outcome::Done, Some(loss), Some(acc)) => writeln!(
            out,
            "final train loss {loss:.5}  train acc {:.2}%  val loss {:.5}  val acc {:.2}%",
            100.0 * acc,
            r.final_val_loss.unwrap_or(f64::NAN),
            100.0 * r.final_val_acc.unwrap_or(f64::NAN)
        )?,
        _ => writeln!(
            out,
            "DIVERGED in epoch {} (non-finite loss)",
            r.diverged_epoch.unwrap_or(0)
        )?,
    }
    if let Some(c) = &r.convergence {
        writeln!(
            out,
            "stopped by {} after {} epochs; best held-out epoch {} (held-out loss {:.5}){}{}",
            c.stop_reason.as_str(),
            r.epochs.len(),
            c.best_epoch,
            c.best_holdout_loss,
            if c.restored {
                ", its weights restored"
            } else {
                ""
            },
            if c.still_improving {
                "; STILL IMPROVING at the cap: raise epochs"
            } else {
                ""
            }
        )?;
    }
    let images: usize = r.epochs.len() * r.train_examples;
    writeln!(
        out,
        "time: {:.1}s training ({:.0} img/s), {:.1}s total",
        r.train_seconds,
        images as f64 / r.train_seconds.max(1e-9),
        r.total_seconds
    )
}

/// Writes via a temporary file and rename, so readers never see half a file.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    shallow::files::write_atomically(path, |out| {
        serde_json::to_writer_pretty(out, value)?;
        Ok(())
    })
}

fn bench_command(args: BenchArgs) -> Result<ExitCode> {
    if let Some(location) = &args.store {
        let b = bench::store::run(location, 200, 10, 64, 10_000)?;
        println!(
            "store {}: per run ({} epochs) median {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} runs\n\
             {} workers drained {} runs in {:.1} s: {:.0} runs/s, {} duplicate claims, {} errors",
            b.location,
            b.epochs,
            b.per_run_ms_median,
            b.per_run_ms_p99,
            b.per_run_ms_max,
            b.runs,
            b.load_workers,
            b.load_runs,
            b.load_seconds,
            b.load_claims_per_second,
            b.load_duplicate_claims,
            b.load_errors
        );
        println!("{}", serde_json::to_string(&b)?);
        return Ok(ExitCode::SUCCESS);
    }
    let nets = args
        .nets
        .iter()
        .map(|n| bench::BenchNet::named(n).with_context(|| format!("--nets: unknown net '{n}'")))
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
        fused: !args.no_fused,
    };
    bench::run(&options, &mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}
