//! `--fuse`: how many runs that differ only in lr and seed a worker trains together, within the
//! memory it has.
use tch::Device;

use crate::device;

/// How many runs that differ only in lr and seed a worker trains together as one fused array
/// (`--fuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Fuse {
    /// On a GPU up to [`AUTO_MEMBERS`] within [`GPU_BUDGET`]; on a CPU one run at a time: there,
    /// fused arrays train no faster than separate runs (grouped convolutions run at the speed of
    /// their groups one by one; see README, Performance).
    Auto,
    /// At most this many (1: no fusion), within the memory this machine has.
    AtMost(usize),
}

/// The most members `--fuse auto` puts in one array on a GPU.
pub const AUTO_MEMBERS: usize = 16;
/// The estimated training memory `--fuse auto` lets one array take on a GPU.
pub const GPU_BUDGET: f64 = 16.0 * (1u64 << 30) as f64;

impl std::str::FromStr for Fuse {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Fuse, String> {
        if text == "auto" {
            return Ok(Fuse::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Fuse::AtMost(n)),
            _ => Err(format!(
                "expected auto or a number of runs ≥ 1, got '{text}'"
            )),
        }
    }
}

impl TryFrom<String> for Fuse {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Fuse, String> {
        text.parse()
    }
}

impl From<Fuse> for String {
    fn from(fuse: Fuse) -> String {
        fuse.to_string()
    }
}

impl std::fmt::Display for Fuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fuse::Auto => f.write_str("auto"),
            Fuse::AtMost(n) => write!(f, "{n}"),
        }
    }
}

impl Fuse {
    /// The most runs to claim as one group on `device`.
    pub fn cap(self, device: Device) -> usize {
        match self {
            Fuse::AtMost(n) => n,
            Fuse::Auto if device.is_cuda() => AUTO_MEMBERS,
            Fuse::Auto => 1,
        }
    }

    /// How many members of `cfg` on `input`-shaped data of `classes` classes fit the memory
    /// budget (at least one).
    pub(super) fn fitting(
        self,
        cfg: &crate::train::RunConfig,
        (input, classes): ([usize; 3], usize),
        device: Device,
    ) -> usize {
        let need = cfg
            .architecture(input, classes)
            .training_memory_bytes(cfg.batch_size);
        let budget = if device.is_cuda() {
            Some(GPU_BUDGET)
        } else {
            device::available_memory().map(|b| b as f64)
        };
        budget.map_or(usize::MAX, |b| ((b / need) as usize).max(1))
    }
}
