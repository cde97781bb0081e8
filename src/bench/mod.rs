//! `shallow bench`: our training step and sweep against the PyTorch reference
//! (`bench/reference.py`), measured in the same invocation, alternating, repeated; ratios only,
//! never absolute thresholds.
pub mod augment;
mod checkpoint;
pub mod fused;
pub mod store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::device;
use crate::model::{Activation, Architecture, Head, Layout, Net, Pool, Precision};
use crate::report::stats::median;
use crate::train::cross_entropy;
use crate::train::torch_optim::{self, TorchOptimizer};

/// A benchmark net (the same table is in bench/reference.py).
#[derive(Debug, Clone, Copy)]
pub struct BenchNet {
    pub name: &'static str,
    pub input: [usize; 3],
    pub layers: usize,
    pub filters: usize,
    pub kernel: usize,
    /// Timed steps per measurement on the CPU, ≈ 2 s each on 2 cores.
    pub steps: usize,
}

pub const BATCH: usize = 64;
pub const NETS: [BenchNet; 4] = [
    BenchNet {
        name: "mnist",
        input: [1, 28, 28],
        layers: 4,
        filters: 32,
        kernel: 3,
        steps: 30,
    },
    BenchNet {
        name: "cifar",
        input: [3, 32, 32],
        layers: 4,
        filters: 64,
        kernel: 3,
        steps: 8,
    },
    BenchNet {
        name: "tiny",
        input: [1, 28, 28],
        layers: 2,
        filters: 8,
        kernel: 3,
        steps: 300,
    },
    BenchNet {
        name: "deep",
        input: [1, 28, 28],
        layers: 10,
        filters: 16,
        kernel: 5,
        steps: 12,
    },
];
/// Untimed steps first: oneDNN's and cuDNN's algorithm choice and the allocators' caches settle.
const WARMUP: usize = 20;

impl BenchNet {
    pub fn named(name: &str) -> Option<BenchNet> {
        NETS.iter().copied().find(|n| n.name == name)
    }

    pub fn architecture(&self, layout: Layout) -> Architecture {
        Architecture {
            layout,
            input: self.input,
            // The bench nets are MNIST- and CIFAR-10-shaped.
            classes: 10,
            layers: self.layers,
            filters: self.filters,
            kernel: self.kernel,
            activation: Activation::Relu,
            pool: Pool::None,
            batchnorm: false,
            head: Head::Flatten,
        }
    }

    pub fn describe(&self) -> String {
        let [c, h, w] = self.input;
        format!(
            "{} {BATCH}×{c}×{h}×{w} L={} F={} k={}",
            self.name, self.layers, self.filters, self.kernel
        )
    }
}

/// One measurement, as both implementations print it (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMeasurement {
    pub images_per_second: f64,
    pub seconds: f64,
    pub peak_rss_mb: f64,
}

/// How one step measurement runs (the same for ours and the reference).
#[derive(Debug, Clone, Copy)]
pub struct StepSettings {
    pub threads: usize,
    pub device: Device,
    pub precision: Precision,
    /// Timed steps (after the warm-up).
    pub steps: usize,
}

/// Timed steps of every net on a GPU: 0.4–1.3 s each on an H200, long enough to average out
/// launch jitter, short enough for a bench of all nets to fit a few minutes of a lent GPU.
const CUDA_STEPS: usize = 300;

impl StepSettings {
    pub fn for_net(net: BenchNet, threads: usize, device: Device, precision: Precision) -> Self {
        StepSettings {
            threads,
            device,
            precision,
            steps: if device.is_cuda() {
                CUDA_STEPS
            } else {
                net.steps
            },
        }
    }
}

/// Times `s.steps` training steps on synthetic data, after a warm-up (run in its own process by
/// `shallow bench`, so that peak RSS is per measurement).
/// Times training steps of `net`; with `augment`, each step's batch is augmented first
/// (crop-flip, as `augment = crop-flip` trains).
pub fn measure_step(
    net: BenchNet,
    layout: Layout,
    s: StepSettings,
    augment: bool,
) -> Result<StepMeasurement> {
    device::set_threads(s.threads);
    let vs = nn::VarStore::new(s.device);
    let model = Net::new(&vs.root(), net.architecture(layout), 0)?.with_precision(s.precision);
    let mut opt = TorchOptimizer::new(&torch_optim::Kind::Adam { wd: 0.0 }, &vs, 1e-3)?;
    let [c, h, w] = net.input.map(|d| d as i64);
    let x = Tensor::randn([BATCH as i64, c, h, w], (Kind::Float, s.device));
    let y = Tensor::randint(10, [BATCH as i64], (Kind::Int64, s.device));
    let mut augmenter = crate::train::augment::Augmenter::new(
        if augment {
            crate::train::augment::Augment::CropFlip
        } else {
            crate::train::augment::Augment::None
        },
        0,
    );
    let step = || {
        let x = augmenter
            .as_mut()
            .map_or_else(|| x.shallow_clone(), |a| a.apply(&x));
        opt.backward_step(&cross_entropy(&model.forward(&x, true), &y))
    };
    Ok(time_steps(step, s, BATCH))
}

/// Runs `step` [`WARMUP`] times, then times `s.steps` more; `images` per step.
fn time_steps(mut step: impl FnMut(), s: StepSettings, images: usize) -> StepMeasurement {
    for _ in 0..WARMUP {
        step();
    }
    device::synchronize(s.device);
    let started = Instant::now();
    for _ in 0..s.steps {
        step();
    }
    device::synchronize(s.device);
    let seconds = started.elapsed().as_secs_f64();
    StepMeasurement {
        images_per_second: (s.steps * images) as f64 / seconds,
        seconds,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// Times `s.steps` training steps of `members` nets of one architecture fused into one array
/// ([`FusedNet`]), each member with its own batch of synthetic data; images per second count
/// every member's images.
pub fn measure_fused_step(
    net: BenchNet,
    layout: Layout,
    members: usize,
    s: StepSettings,
) -> Result<StepMeasurement> {
    device::set_threads(s.threads);
    let arch = net.architecture(layout);
    let step = crate::train::fused::synthetic_step(arch, members, BATCH, s.device, s.precision)?;
    Ok(time_steps(step, s, BATCH * members))
}

/// VmHWM of this process.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub struct BenchOptions {
    pub exe: PathBuf,
    pub python: PathBuf,
    pub reference: PathBuf,
    pub threads: usize,
    pub device: Device,
    /// Each net and layout is measured in each of these.
    pub precisions: Vec<Precision>,
    pub repetitions: usize,
    pub nets: Vec<BenchNet>,
    /// Runs the sweep benches with the real MNIST from here (None: skip them).
    pub sweep_data: Option<PathBuf>,
    /// Measures fused arrays (M = 1, 3, 9) against solo processes and a vmap ensemble.
    pub fused: bool,
}

fn parse_json_line<T: for<'de> Deserialize<'de>>(
    output: std::process::Output,
    what: &str,
) -> Result<T> {
    if !output.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{what}: no JSON in output"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: unreadable output {line}"))
}

fn device_name(device: Device) -> &'static str {
    if device.is_cuda() { "cuda" } else { "cpu" }
}

/// The arguments both implementations take for one measurement.
fn step_args(net: BenchNet, layout: Layout, s: StepSettings) -> Vec<String> {
    [
        ("--net", net.name.to_owned()),
        ("--layout", layout.to_string()),
        ("--threads", s.threads.to_string()),
        ("--device", device_name(s.device).to_owned()),
        ("--precision", s.precision.to_string()),
        ("--steps", s.steps.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

fn ours_step(
    o: &BenchOptions,
    net: BenchNet,
    layout: Layout,
    s: StepSettings,
) -> Result<StepMeasurement> {
    let output = Command::new(&o.exe)
        .arg("bench-step")
        .args(step_args(net, layout, s))
        .output()?;
    parse_json_line(output, "shallow bench-step")
}

fn reference_step(
    o: &BenchOptions,
    net: BenchNet,
    layout: Layout,
    s: StepSettings,
) -> Result<StepMeasurement> {
    let output = Command::new(&o.python)
        .arg(&o.reference)
        .arg("step")
        .args(step_args(net, layout, s))
        .output()
        .with_context(|| format!("cannot run {}", o.python.display()))?;
    parse_json_line(output, "bench/reference.py")
}

/// Forward + backward FLOPs per image (2 per multiply-add, backward ≈ 2 forwards).
fn train_flops_per_image(net: BenchNet, layout: Layout) -> f64 {
    6.0 * net.architecture(layout).forward_macs()
}

#[derive(Debug, Deserialize)]
struct SweepMeasurement {
    wall_seconds: f64,
}

/// Ours and the reference `repetitions` times each, alternating which goes first.
fn measure_pair(
    o: &BenchOptions,
    net: BenchNet,
    layout: Layout,
    s: StepSettings,
) -> Result<(Vec<StepMeasurement>, Vec<StepMeasurement>)> {
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for rep in 0..o.repetitions {
        if rep % 2 == 0 {
            ours.push(ours_step(o, net, layout, s)?);
            reference.push(reference_step(o, net, layout, s)?);
        } else {
            reference.push(reference_step(o, net, layout, s)?);
            ours.push(ours_step(o, net, layout, s)?);
        }
    }
    Ok((ours, reference))
}

fn table_row(
    net: BenchNet,
    layout: Layout,
    precision: Precision,
    ours: &[StepMeasurement],
    reference: &[StepMeasurement],
) -> String {
    let rates = |m: &[StepMeasurement]| m.iter().map(|x| x.images_per_second).collect::<Vec<_>>();
    let (a, b) = (rates(ours), rates(reference));
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    let gflops = median(&a) * train_flops_per_image(net, layout) / 1e9;
    let rss = |m: &[StepMeasurement]| m.iter().map(|x| x.peak_rss_mb).fold(0.0, f64::max);
    format!(
        "{:<34} {:<10} {:<5} {:>10.0} {:>10.0} {:>9.2}× [{:.2}–{:.2}] {:>8.1} {:>8.0}/{:.0} MB\n",
        net.describe(),
        layout.to_string(),
        precision.to_string(),
        median(&a),
        median(&b),
        median(&ratios),
        lo,
        hi,
        gflops,
        rss(ours),
        rss(reference)
    )
}

/// Median img/s of ours per (net, layout, precision).
type OursMedians = std::collections::HashMap<(&'static str, Layout, Precision), f64>;

/// Runs the whole benchmark, writing each table row as soon as it is measured (a run cut short
/// keeps what it measured).
pub fn run(o: &BenchOptions, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "training-step throughput, batch {BATCH}, {:?}, {} thread(s), {} repetitions (ours and the PyTorch reference alternating)\n",
        o.device, o.threads, o.repetitions
    )?;
    writeln!(
        out,
        "{:<34} {:<10} {:<5} {:>10} {:>10} {:>22} {:>8} {:>17}",
        "net",
        "layout",
        "prec",
        "ours img/s",
        "ref img/s",
        "ours/ref median [range]",
        "GFLOP/s",
        "peak RSS ours/ref"
    )?;
    let mut ours_median = OursMedians::new();
    for &precision in &o.precisions {
        for net in &o.nets {
            for layout in [Layout::Sequential, Layout::Parallel] {
                let s = StepSettings::for_net(*net, o.threads, o.device, precision);
                let (ours, reference) = measure_pair(o, *net, layout, s)?;
                write!(
                    out,
                    "{}",
                    table_row(*net, layout, precision, &ours, &reference)
                )?;
                out.flush()?;
                let rates: Vec<f64> = ours.iter().map(|m| m.images_per_second).collect();
                ours_median.insert((net.name, layout, precision), median(&rates));
            }
        }
    }
    writeln!(out, "{}", speedups(o, &ours_median))?;
    augment::section(o, out)?;
    checkpoint::section(o, out)?;
    if o.fused {
        fused::section(o, out)?;
    }
    if let Some(data) = &o.sweep_data {
        write!(out, "{}", sweep_bench(o, data)?)?;
        if o.fused {
            write!(out, "{}", fused::sweep_section(o, data)?)?;
        }
    }
    Ok(())
}

/// Parallel vs sequential per precision, and bf16 vs fp32 when both were measured.
fn speedups(o: &BenchOptions, ours: &OursMedians) -> String {
    let mut text = String::new();
    for &precision in &o.precisions {
        text += &format!(
            "\nparallel vs sequential (ours, {precision}, per-epoch speed = img/s ratio):"
        );
        for net in &o.nets {
            let s = ours[&(net.name, Layout::Sequential, precision)];
            let p = ours[&(net.name, Layout::Parallel, precision)];
            text += &format!(" {} L={} {:.2}×;", net.name, net.layers, p / s);
        }
    }
    if o.precisions.contains(&Precision::Fp32) && o.precisions.contains(&Precision::Bf16) {
        text += "\nbf16 vs fp32 (ours, img/s ratio):";
        for net in &o.nets {
            for layout in [Layout::Sequential, Layout::Parallel] {
                let fp32 = ours[&(net.name, layout, Precision::Fp32)];
                let bf16 = ours[&(net.name, layout, Precision::Bf16)];
                text += &format!(" {} {layout} {:.2}×;", net.name, bf16 / fp32);
            }
        }
    }
    text
}

/// Wall seconds of `shallow sweep CONFIG --db DB --data-dir DATA --offline EXTRA…` on the bench's
/// device.
fn timed_sweep(
    o: &BenchOptions,
    config: &Path,
    db: &Path,
    data: &Path,
    extra: &[&str],
) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new(&o.exe)
        .arg("sweep")
        .arg(config)
        .arg("--db")
        .arg(db)
        .arg("--data-dir")
        .arg(data)
        .arg("--offline")
        .args(["--device", device_name(o.device)])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!(
            "shallow sweep {} {} failed",
            config.display(),
            extra.join(" ")
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The 16-run mini grid: `shallow sweep configs/bench-sweep.toml` end to end against the
/// reference script's loop over the same configs.
fn sweep_bench(o: &BenchOptions, data: &Path) -> Result<String> {
    let config = Path::new("configs/bench-sweep.toml");
    let tmp = std::env::temp_dir().join(format!("shallow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for rep in 0..o.repetitions.min(2) {
        let db = tmp.join(format!("sweep-{rep}.db"));
        ours.push(timed_sweep(o, config, &db, data, &[])?);
        let output = Command::new(&o.python)
            .arg(&o.reference)
            .args(["sweep", "--threads", &o.threads.to_string()])
            .args(["--device", device_name(o.device), "--data-dir"])
            .arg(data)
            .output()?;
        reference.push(
            parse_json_line::<SweepMeasurement>(output, "bench/reference.py sweep")?.wall_seconds,
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
    Ok(format!(
        "\nsweep bench (16 runs, 1 epoch on 5k MNIST): ours {:.1}s (default workers), reference loop {:.1}s → {:.2}× faster\n",
        median(&ours),
        median(&reference),
        median(&reference) / median(&ours)
    ))
}
