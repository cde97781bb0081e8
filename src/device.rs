//! Choosing where tensors live, and making CUDA reachable from a binary that must also run on
//! machines without it.
use std::ffi::CString;
use std::path::{Path, PathBuf};
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

/// Memory this process can still use, in bytes: the least of what its control groups allow
/// (cgroup v2 `memory.max − memory.current` of its group and every ancestor, else v1
/// `memory.limit_in_bytes − memory.usage_in_bytes`) and the machine's `MemAvailable`. In a
/// Kubernetes pod or a Slurm job that is the job's limit, not the node's memory. `None` where
/// nothing is known.
pub fn available_memory() -> Option<u64> {
    available_memory_under(Path::new("/"))
}

/// [`available_memory`] with `/proc` and `/sys/fs/cgroup` read under `root` (tests use fixture
/// folders).
pub fn available_memory_under(root: &Path) -> Option<u64> {
    let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).ok();
    let machine = meminfo.as_deref().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let groups = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let cgroup = cgroup_v2_room(root, &groups).or_else(|| cgroup_v1_room(root, &groups));
    [machine, cgroup].into_iter().flatten().min()
}

/// Limits at or above this are "no limit" (cgroup v1 writes one as 2^63 rounded to a page).
const UNLIMITED: u64 = 1 << 60;

/// The room left under the tightest v2 limit on the path from the process's group to the root.
fn cgroup_v2_room(root: &Path, groups: &str) -> Option<u64> {
    let path = groups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let base = root.join("sys/fs/cgroup");
    let mut dir = Some(Path::new(path.trim().trim_start_matches('/')));
    let mut tightest = None;
    while let Some(d) = dir {
        let group = base.join(d);
        if let Some(room) = room(&group.join("memory.max"), &group.join("memory.current")) {
            tightest = Some(tightest.map_or(room, |t: u64| t.min(room)));
        }
        dir = d.parent();
    }
    tightest
}

/// The room left under the v1 memory controller's limit of the process's group (or, in a
/// container that sees its own group as the root, the root's).
fn cgroup_v1_room(root: &Path, groups: &str) -> Option<u64> {
    let path = groups.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    let base = root.join("sys/fs/cgroup/memory");
    [base.join(path.trim().trim_start_matches('/')), base]
        .iter()
        .find_map(|g| {
            room(
                &g.join("memory.limit_in_bytes"),
                &g.join("memory.usage_in_bytes"),
            )
        })
}

/// `limit − usage` from two cgroup files; `None` without a limit.
fn room(limit: &Path, usage: &Path) -> Option<u64> {
    let limit: u64 = std::fs::read_to_string(limit).ok()?.trim().parse().ok()?;
    if limit >= UNLIMITED {
        return None;
    }
    let usage: u64 = std::fs::read_to_string(usage)
        .ok()
        .and_then(|u| u.trim().parse().ok())
        .unwrap_or(0);
    Some(limit.saturating_sub(usage))
}

/// Cores usable by this process.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake root with `files` (path, content).
    fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const GIB: u64 = 1 << 30;
    const MEMINFO: (&str, &str) = (
        "proc/meminfo",
        "MemTotal: 67108864 kB\nMemAvailable: 50331648 kB\n",
    );

    #[test]
    fn memory_comes_from_the_tightest_cgroup_limit_then_the_machine() {
        // cgroup v2: a 4 GiB pod limit above a group without one; 1 GiB in use.
        let v2 = root(&[
            MEMINFO,
            ("proc/self/cgroup", "0::/kubepods/pod1/c1\n"),
            ("sys/fs/cgroup/kubepods/pod1/memory.max", "4294967296\n"),
            ("sys/fs/cgroup/kubepods/pod1/memory.current", "1073741824\n"),
            ("sys/fs/cgroup/kubepods/pod1/c1/memory.max", "max\n"),
            (
                "sys/fs/cgroup/kubepods/pod1/c1/memory.current",
                "1073741824\n",
            ),
        ]);
        assert_eq!(available_memory_under(v2.path()), Some(3 * GIB));
        // cgroup v2 in a namespace: the group is the root.
        let ns = root(&[
            MEMINFO,
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "2147483648\n"),
            ("sys/fs/cgroup/memory.current", "0\n"),
        ]);
        assert_eq!(available_memory_under(ns.path()), Some(2 * GIB));
        // cgroup v1, with the unlimited sentinel at the root and a limit on the job's group.
        let v1 = root(&[
            MEMINFO,
            (
                "proc/self/cgroup",
                "5:cpu,cpuacct:/\n4:memory:/slurm/job7\n0::/\n",
            ),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "sys/fs/cgroup/memory/slurm/job7/memory.limit_in_bytes",
                "8589934592\n",
            ),
            (
                "sys/fs/cgroup/memory/slurm/job7/memory.usage_in_bytes",
                "2147483648\n",
            ),
        ]);
        assert_eq!(available_memory_under(v1.path()), Some(6 * GIB));
        // No limit anywhere: the machine's MemAvailable (48 GiB).
        let none = root(&[
            MEMINFO,
            ("proc/self/cgroup", "4:memory:/\n"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(available_memory_under(none.path()), Some(48 * GIB));
        // A limit above the machine's available memory does not raise it.
        let loose = root(&[
            MEMINFO,
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "1099511627776\n"),
        ]);
        assert_eq!(available_memory_under(loose.path()), Some(48 * GIB));
        assert_eq!(available_memory_under(root(&[]).path()), None);
    }
}
