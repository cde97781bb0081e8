//! The cost of augmentation: training steps with `augment = crop-flip` against the same steps
//! without, in alternating processes, per net (parallel layout). The target: at most 10 % of
//! the step's time.
use std::io::Write;
use std::process::Command;

use anyhow::Result;

use super::{BenchOptions, StepMeasurement, StepSettings, parse_json_line, step_args};
use crate::model::Layout;
use crate::report::stats::median;

/// Writes the section: per net, the median extra time per step with augmentation, relative to
/// the step without, with its range over the repetitions.
pub fn section(o: &BenchOptions, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "\naugment = crop-flip: extra time per training step (parallel layout), {} repetitions alternating",
        o.repetitions
    )?;
    for &net in &o.nets {
        let s = StepSettings::for_net(net, o.threads, o.device, o.precisions[0]);
        let mut extra = Vec::new();
        for rep in 0..o.repetitions {
            let order = if rep % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            let [a, b] = order.map(|augmented| step(o, net, s, augmented));
            let (plain, augmented) = if order[0] { (b?, a?) } else { (a?, b?) };
            extra.push(plain.images_per_second / augmented.images_per_second - 1.0);
        }
        let (lo, hi) = extra
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        writeln!(
            out,
            "  {:<34} {:+.1} % [{:+.1} – {:+.1}]",
            net.describe(),
            100.0 * median(&extra),
            100.0 * lo,
            100.0 * hi
        )?;
        out.flush()?;
    }
    Ok(())
}

fn step(
    o: &BenchOptions,
    net: super::BenchNet,
    s: StepSettings,
    augmented: bool,
) -> Result<StepMeasurement> {
    let output = Command::new(&o.exe)
        .arg("bench-step")
        .args(step_args(net, Layout::Parallel, s))
        .args(augmented.then_some("--augment"))
        .output()?;
    parse_json_line(output, "shallow bench-step --augment")
}
