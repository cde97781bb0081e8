//! Choosing where tensors live, and making CUDA reachable from a binary that must also run on
//! machines without it.
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Once;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::model::Precision;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if a GPU is usable, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// CUDA when available (unless CPU is asked for), else CPU.
pub fn select_device(requested: DeviceChoice) -> Result<Device> {
    if requested != DeviceChoice::Cpu {
        // Mapping libtorch_cuda costs 0.3–0.9 s and ~270 MB of RSS: only when CUDA may be used.
        load_cuda_backend();
    }
    let device = match requested {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Auto => Device::cuda_if_available(),
        DeviceChoice::Cuda => {
            ensure!(
                tch::Cuda::is_available(),
                "--device cuda: no usable CUDA device (a GPU, its driver, and torch's CUDA \
                 libraries: `SHALLOW_TORCH_FULL=1 scripts/setup.sh`)"
            );
            Device::Cuda(0)
        }
    };
    if device.is_cuda() {
        // A run trains on a handful of fixed shapes thousands of times: cuDNN's one-off
        // per-shape algorithm search pays for itself.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(device)
}

/// Waits for the device's queued work (a no-op on the CPU), so that timings are complete.
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Loads `libtorch_cuda.so` from beside the `libtorch_cpu.so` this process runs with.
///
/// The linker's default `--as-needed` drops libtorch_cuda from a binary that references none of
/// its symbols, and linking it unconditionally would make the binary fail to start on machines
/// without cuBLAS/cuDNN. Loading it at run time registers libtorch's CUDA hooks when the CUDA
/// libraries are there and leaves a CPU-only libtorch working when they are not.
pub fn load_cuda_backend() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Some(dir) = libtorch_dir() else {
            return;
        };
        let path = dir.join("libtorch_cuda.so");
        if !path.exists() {
            return;
        }
        let c_path = CString::new(path.to_string_lossy().as_bytes()).expect("path without NUL");
        // SAFETY: dlopen with a valid C string; the handle is intentionally never closed.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            tracing::debug!("CUDA backend not loaded from {}", path.display());
        }
    });
}

/// The folder of the libtorch_cpu.so mapped into this process.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
}

/// Whether this CPU computes bf16 in hardware (AMX or AVX-512-BF16); without, oneDNN emulates it
/// in software and `--precision bf16` gains nothing over fp32.
pub fn cpu_has_fast_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines().filter(|l| l.starts_with("flags")).any(|l| {
            l.split_whitespace()
                .any(|f| f == "amx_bf16" || f == "avx512_bf16")
        })
    })
}

/// Says once per process that bf16 will be slow here, if it will.
pub fn warn_if_bf16_is_slow(device: Device, precision: Precision) {
    static ONCE: Once = Once::new();
    if precision == Precision::Bf16 && device == Device::Cpu {
        // Checked once: a sweep worker calls this for every run.
        ONCE.call_once(|| {
            if !cpu_has_fast_bf16() {
                tracing::warn!(
                    "--precision bf16 on a CPU without AMX or AVX-512-BF16: emulated in software, expect no speedup over fp32"
                );
            }
        });
    }
}

/// Threads for libtorch's intra-op parallelism of this process.
pub fn set_threads(threads: usize) {
    tch::set_num_threads(threads.max(1) as i32);
}

/// Memory this machine can still give a process, in bytes (`MemAvailable` of /proc/meminfo);
/// `None` where that is unknown.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Cores usable by this process.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
