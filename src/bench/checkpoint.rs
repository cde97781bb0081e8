//! The cost of checkpointing: per net, the time from the end of an epoch to its checkpoint
//! written in a SQLite store (the run's state captured, encoded, hashed and committed, as a
//! worker does), against the time of one epoch's training steps over the run's training set.
//! The nets: the converged study's (the shortest epochs it has, per head and optimizer) and the
//! largest of the paper grid's reconstruction. The target: under 5 % of an epoch, checkpointing
//! after every epoch (workers do so at most once a minute by default).
use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::BenchOptions;
use crate::data::{Normalisation, Tensors};
use crate::model::{Head, Layout, Pool};
use crate::report::stats::median;
use crate::sweep::store::identity::RunSpec;
use crate::sweep::store::{self, Location, Store, WorkerInfo};
use crate::train::optim::Optimizer;
use crate::train::{self, Checkpoint, EpochMetrics, Observer, RunConfig};

/// A net to measure: its settings, its image shape and the training set an epoch covers.
struct Case {
    what: &'static str,
    cfg: RunConfig,
    input: [usize; 3],
    images: usize,
    /// Images actually trained per epoch (the epoch's time is scaled to `images`).
    trained: usize,
}

fn cases() -> Vec<Case> {
    let study = |head: Head, layers: usize, optimizer: Optimizer| RunConfig {
        layers,
        filters: 8,
        pool: Pool::Max2,
        batchnorm: true,
        head,
        optimizer,
        lr: if optimizer == Optimizer::Lbfgs {
            1.0
        } else {
            1e-3
        },
        batch_size: if optimizer == Optimizer::Lbfgs {
            256
        } else {
            32
        },
        ..crate::train::settings::defaults(Layout::Parallel)
    };
    let case = |what, cfg, input, images: usize| Case {
        what,
        cfg,
        input,
        images,
        trained: images.min(1024),
    };
    vec![
        case(
            "study: MNIST flatten L=8, 750 images",
            study(Head::Flatten, 8, Optimizer::Adam),
            [1, 28, 28],
            750,
        ),
        case(
            "study: CIFAR-10 flatten L=8, 750 images",
            study(Head::Flatten, 8, Optimizer::Adam),
            [3, 32, 32],
            750,
        ),
        case(
            "study: MNIST GAP L=8, 500 images",
            study(Head::Gap, 8, Optimizer::Adam),
            [1, 28, 28],
            500,
        ),
        case(
            "study: CIFAR-10 flatten L=8 L-BFGS, 2,000",
            study(Head::Flatten, 8, Optimizer::Lbfgs),
            [3, 32, 32],
            2000,
        ),
        Case {
            trained: 128,
            ..case(
                "paper's largest: CIFAR-10 L=10 F=64 k=7, 50,000",
                RunConfig {
                    layers: 10,
                    filters: 64,
                    kernel: 7,
                    pool: Pool::None,
                    batchnorm: true,
                    head: Head::Flatten,
                    ..crate::train::settings::defaults(Layout::Parallel)
                },
                [3, 32, 32],
                50_000,
            )
        },
    ]
}

/// Times each checkpoint from the end of its epoch to its commit in the store.
struct Timed<'a> {
    store: &'a mut dyn Store,
    run: &'a str,
    worker: &'a WorkerInfo,
    asked: Option<Instant>,
    seconds: Vec<f64>,
    bytes: usize,
    epochs: Vec<f64>,
}

impl Observer for Timed<'_> {
    fn epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        self.epochs.push(m.seconds);
        Ok(())
    }
    fn wants_checkpoint(&mut self, _epoch: usize) -> bool {
        self.asked = Some(Instant::now());
        true
    }
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.store
            .save_checkpoint(self.run, self.worker, checkpoint)?;
        let asked = self.asked.take().expect("asked first");
        self.seconds.push(asked.elapsed().as_secs_f64());
        self.bytes = checkpoint.bytes().len();
        Ok(())
    }
}

/// Random images of `input`, `n` to train on and 64 to validate on.
fn synthetic(input: [usize; 3], n: usize) -> Tensors {
    let [c, h, w] = input.map(|d| d as i64);
    let images = |n: i64| Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
    let labels = |n: i64| Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
    Tensors {
        train_x: images(n as i64),
        train_y: labels(n as i64),
        val_x: images(64),
        val_y: labels(64),
        holdout: None,
        shape: input,
        classes: 10,
        normalisation: Normalisation {
            mean: vec![0.0; input[0]],
            std: vec![1.0; input[0]],
        },
    }
}

/// One measurement: checkpoint seconds (median over its epochs), the epoch's seconds scaled to
/// the case's training set, and the checkpoint's size.
fn measure(case: &Case) -> Result<(f64, f64, usize)> {
    let dir = tempfile::tempdir()?;
    let mut store = store::open(&Location::Sqlite(dir.path().join("bench.db")))?;
    let spec = RunSpec::of(case.cfg.clone());
    store.add_runs("checkpoint-bench", "", std::slice::from_ref(&spec))?;
    let me = WorkerInfo::this_process(1);
    store.register_worker(&me)?;
    let run = store.claim(&me)?.expect("the run just added").id;
    let cfg = RunConfig {
        dataset: "synthetic".into(),
        epochs: 3,
        ..case.cfg.clone()
    };
    let data = synthetic(case.input, case.trained);
    let mut timed = Timed {
        store: store.as_mut(),
        run: &run,
        worker: &me,
        asked: None,
        seconds: Vec::new(),
        bytes: 0,
        epochs: Vec::new(),
    };
    train::train(&cfg, &data, Device::Cpu, &mut timed)?;
    let scale = case.images as f64 / case.trained as f64;
    Ok((
        median(&timed.seconds),
        median(&timed.epochs) * scale,
        timed.bytes,
    ))
}

/// Writes the section: per net, the checkpoint's size, its time and an epoch's (medians over
/// the repetitions), and their ratio with its range.
pub fn section(o: &BenchOptions, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "\ncheckpoint after an epoch (capture, encode, SHA-256, SQLite commit) against the epoch's training steps, {} repetitions, CPU",
        o.repetitions
    )?;
    writeln!(
        out,
        "  {:<48} {:>9} {:>14} {:>11} {:>22}",
        "net (parallel, BN, batch 32; L-BFGS 256)",
        "size MB",
        "checkpoint ms",
        "epoch s",
        "ratio median [range]"
    )?;
    crate::device::set_threads(o.threads);
    for case in cases() {
        let runs = (0..o.repetitions)
            .map(|_| measure(&case))
            .collect::<Result<Vec<_>>>()?;
        let ratios: Vec<f64> = runs.iter().map(|(c, e, _)| c / e).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        let column =
            |f: fn(&(f64, f64, usize)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        writeln!(
            out,
            "  {:<48} {:>9.2} {:>14.1} {:>11.2} {:>8.2} % [{:.2} – {:.2}]",
            case.what,
            column(|r| r.2 as f64) / 1e6,
            column(|r| r.0) * 1e3,
            column(|r| r.1),
            100.0 * median(&ratios),
            100.0 * lo,
            100.0 * hi
        )?;
        out.flush()?;
    }
    Ok(())
}
