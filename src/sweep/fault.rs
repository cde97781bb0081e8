//! Whose failure it is. A run's own failure — it diverged, its net does not fit, its config has a
//! bug — is recorded against the run. A failure of where the worker runs — the data directory,
//! the device, the store, the heartbeat — is not the run's: the worker hands its runs back
//! untouched (pending, attempt not counted) and stops with [`EXIT_ENVIRONMENT`], so that one
//! misconfigured node cannot fail a whole grid.
use std::fmt;

/// Exit code of a worker stopped by an [`EnvironmentFault`] (`EX_UNAVAILABLE` of sysexits.h); a
/// sweep does not replace a worker that exits with it.
pub const EXIT_ENVIRONMENT: u8 = 69;

/// The environment variable naming the file where a worker started by a sweep writes the fault
/// that stopped it, for the sweep to report.
pub const FAULT_FILE_ENV: &str = "SHALLOW_FAULT_FILE";

/// What in the worker's environment failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A dataset is missing or unreadable in the worker's data directory.
    Data,
    /// The compute device is unavailable or failed.
    Device,
    /// The results store is unreachable (past its retry window) or refused the worker.
    Store,
    /// The worker could not renew its lease: its runs would be taken from it.
    Heartbeat,
    /// The folder for what the runs keep (`--save-nets`) cannot be written.
    Output,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Data => "data unavailable",
            Cause::Device => "device unavailable",
            Cause::Store => "results store unavailable",
            Cause::Heartbeat => "heartbeat failed",
            Cause::Output => "output folder unwritable",
        })
    }
}

/// A failure of the worker's environment, attached as context to the error that showed it.
#[derive(Debug, Clone, Copy)]
pub struct EnvironmentFault(pub Cause);

impl fmt::Display for EnvironmentFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (the worker's environment, not the run)", self.0)
    }
}

impl std::error::Error for EnvironmentFault {}

/// Marks an error as a fault of the environment: `.map_err(environment(Cause::Data))`.
pub fn environment(cause: Cause) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| e.context(EnvironmentFault(cause))
}

/// The environment fault `error` shows, if any: one marked with [`environment`], or a CUDA
/// runtime error (the device failed, whatever the run).
pub fn environment_fault(error: &anyhow::Error) -> Option<Cause> {
    if let Some(fault) = error.downcast_ref::<EnvironmentFault>() {
        return Some(fault.0);
    }
    let text = format!("{error:#}");
    let device = ["CUDA error", "cuDNN error", "CUBLAS_STATUS", "no CUDA GPUs"];
    device
        .iter()
        .any(|m| text.contains(m))
        .then_some(Cause::Device)
}

/// Whether `error` is an allocation failure of libtorch (host or device memory).
pub fn out_of_memory(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    [
        "out of memory",
        "can't allocate memory",
        "Cannot allocate memory",
    ]
    .iter()
    .any(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn faults_are_told_apart_from_the_runs_own_failures() {
        let missing = Err::<(), _>(anyhow!("tiny: no train-images-idx3-ubyte"))
            .map_err(environment(Cause::Data))
            .unwrap_err()
            .context("run abc");
        assert_eq!(environment_fault(&missing), Some(Cause::Data));
        assert!(format!("{missing:#}").contains("data unavailable"));
        let cuda = anyhow!("Torch(\"CUDA error: an illegal memory access was encountered\")");
        assert_eq!(environment_fault(&cuda), Some(Cause::Device));
        let diverged = anyhow!("loss is NaN at epoch 3");
        assert_eq!(environment_fault(&diverged), None);
        assert!(!out_of_memory(&diverged));
        let oom = anyhow!(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4294967296 bytes"
        );
        assert!(out_of_memory(&oom));
        assert!(out_of_memory(&anyhow!(
            "CUDA out of memory. Tried to allocate 2.00 GiB"
        )));
    }
}
