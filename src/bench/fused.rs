//! The fused section of `shallow bench`: M nets trained as one fused array against M solo
//! processes of ours and a `torch.func` vmap ensemble of the same M nets, and the fused sweep
//! benchmark (3 learning rates × 3 seeds) fused, unfused and by the reference loop.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{
    BATCH, BenchNet, BenchOptions, StepMeasurement, StepSettings, device_name, parse_json_line,
    step_args,
};
use crate::model::{Layout, Precision};
use crate::report::stats::median;

/// Array sizes measured.
pub const MEMBERS: [usize; 3] = [1, 3, 9];
/// The layout of the fused section's nets.
const LAYOUT: Layout = Layout::Sequential;

/// Steps per measurement: the net's usual number spread over the members (so each measurement
/// trains about as many images as a solo one), at least 4.
fn steps_for(s: StepSettings, members: usize) -> StepSettings {
    StepSettings {
        steps: s.steps.div_ceil(members).max(4),
        ..s
    }
}

/// Ours: one process training the M members fused.
fn ours(o: &BenchOptions, net: BenchNet, m: usize, s: StepSettings) -> Result<StepMeasurement> {
    let output = Command::new(&o.exe)
        .arg("bench-step")
        .args(step_args(net, LAYOUT, s))
        .args(["--members", &m.to_string()])
        .output()?;
    parse_json_line(output, "shallow bench-step --members")
}

/// M solo processes of ours started together, the threads shared out among them; images per
/// second over the longest of their timed windows.
fn solo_processes(
    o: &BenchOptions,
    net: BenchNet,
    m: usize,
    s: StepSettings,
) -> Result<StepMeasurement> {
    let each = StepSettings {
        threads: (s.threads / m).max(1),
        ..s
    };
    let children = (0..m)
        .map(|_| {
            Command::new(&o.exe)
                .arg("bench-step")
                .args(step_args(net, LAYOUT, each))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot start shallow bench-step")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut runs = vec![];
    for child in children {
        runs.push(parse_json_line::<StepMeasurement>(
            child.wait_with_output()?,
            "shallow bench-step",
        )?);
    }
    let seconds = runs.iter().map(|r| r.seconds).fold(0.0, f64::max);
    Ok(StepMeasurement {
        images_per_second: (m * s.steps * BATCH) as f64 / seconds,
        seconds,
        peak_rss_mb: runs.iter().map(|r| r.peak_rss_mb).sum(),
    })
}

/// The reference: a `torch.func` vmap ensemble of the M nets.
fn vmap(o: &BenchOptions, net: BenchNet, m: usize, s: StepSettings) -> Result<StepMeasurement> {
    let output = Command::new(&o.python)
        .arg(&o.reference)
        .arg("fused-step")
        .args(step_args(net, LAYOUT, s))
        .args(["--members", &m.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", o.python.display()))?;
    parse_json_line(output, "bench/reference.py fused-step")
}

/// The fused section's table: per net and M, images per second per member of ours fused, of M
/// solo processes and of the vmap ensemble (medians over the repetitions, alternating which
/// goes first), the ratios with their ranges, and peak RSS per member; each row written as soon
/// as it is measured.
pub fn section(o: &BenchOptions, out: &mut dyn Write) -> Result<()> {
    write!(
        out,
        "\nfused arrays ({LAYOUT}, fp32, {} thread(s)): images/s per member, medians of {} \
         repetitions; solo = M processes of ours at once, threads shared; vmap = torch.func \
         ensemble\n{:<34} {:>3} {:>10} {:>10} {:>10} {:>22} {:>22} {:>18}\n",
        o.threads,
        o.repetitions,
        "net",
        "M",
        "fused",
        "solo",
        "vmap",
        "fused/solo [range]",
        "fused/vmap [range]",
        "RSS/member f/solo"
    )?;
    let nets = o.nets.iter().filter(|n| n.name != "cifar");
    for &net in nets {
        for m in MEMBERS {
            let s = steps_for(
                StepSettings::for_net(net, o.threads, o.device, Precision::Fp32),
                m,
            );
            let (mut f, mut solo, mut v) = (vec![], vec![], vec![]);
            for rep in 0..o.repetitions {
                let order: [usize; 3] = if rep % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
                for which in order {
                    match which {
                        0 => f.push(ours(o, net, m, s)?),
                        1 => solo.push(solo_processes(o, net, m, s)?),
                        _ => v.push(vmap(o, net, m, s)?),
                    }
                }
            }
            write!(out, "{}", row(net, m, &f, &solo, &v))?;
            out.flush()?;
        }
    }
    Ok(())
}

fn row(
    net: BenchNet,
    m: usize,
    fused: &[StepMeasurement],
    solo: &[StepMeasurement],
    vmap: &[StepMeasurement],
) -> String {
    let rate = |x: &[StepMeasurement]| -> Vec<f64> {
        x.iter().map(|r| r.images_per_second / m as f64).collect()
    };
    let ratio = |a: &[f64], b: &[f64]| {
        let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(0.0, f64::max);
        format!("{:.2}× [{lo:.2}–{hi:.2}]", median(&r))
    };
    let (f, s, v) = (rate(fused), rate(solo), rate(vmap));
    let rss = |x: &[StepMeasurement]| x.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    format!(
        "{:<34} {m:>3} {:>10.0} {:>10.0} {:>10.0} {:>22} {:>22} {:>8.0}/{:.0} MB\n",
        net.describe(),
        median(&f),
        median(&s),
        median(&v),
        ratio(&f, &s),
        ratio(&f, &v),
        rss(fused) / m as f64,
        rss(solo) / m as f64
    )
}

/// `shallow sweep configs/bench-sweep-fused.toml` with `--fuse 9` and `--fuse 1`, and the
/// reference loop over the same 18 configs, alternating, `repetitions` (at most 2) times.
pub fn sweep_section(o: &BenchOptions, data: &Path) -> Result<String> {
    let config = Path::new("configs/bench-sweep-fused.toml");
    let tmp = std::env::temp_dir().join(format!("shallow-bench-fused-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let (mut fused, mut unfused, mut reference) = (vec![], vec![], vec![]);
    for rep in 0..o.repetitions.min(2) {
        for fuse in ["9", "1"] {
            let db = tmp.join(format!("sweep-{rep}-{fuse}.db"));
            let took = super::timed_sweep(o, config, &db, data, &["--fuse", fuse])?;
            if fuse == "9" {
                &mut fused
            } else {
                &mut unfused
            }
            .push(took);
        }
        let output = Command::new(&o.python)
            .arg(&o.reference)
            .args([
                "sweep",
                "--grid",
                "fused",
                "--threads",
                &o.threads.to_string(),
            ])
            .args(["--device", device_name(o.device), "--data-dir"])
            .arg(data)
            .output()?;
        reference.push(
            parse_json_line::<super::SweepMeasurement>(output, "bench/reference.py sweep")?
                .wall_seconds,
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
    let (f, u, r) = (median(&fused), median(&unfused), median(&reference));
    Ok(format!(
        "\nfused sweep bench (18 runs: 2 layouts × 3 lr × 3 seeds, 1 epoch on 5k MNIST): fused \
         (--fuse 9) {f:.1}s, unfused (--fuse 1) {u:.1}s, reference loop {r:.1}s → fused is \
         {:.2}× unfused, {:.2}× the reference (runs: fused {fused:.1?}, unfused {unfused:.1?}, \
         reference {reference:.1?})\n",
        u / f,
        r / f
    ))
}
