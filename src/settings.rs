//! The run settings: one struct, [`RunConfig`], defines each setting's name, default, help text
//! and validation; `shallow train`'s flags, the grid's keys and defaults, and the store's run
//! identity all derive from it.
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::data::{CLASSES, Subset};
use crate::model::{Activation, Architecture, Head, Layout, Pool, Precision};

/// Everything that determines a run's result (and so its identity in a sweep): every run
/// setting once — its name (the `shallow train` flag and the grid key), default, help text and,
/// in [`RunConfig::validate`], its checks. Where and how fast a run goes (device, threads) is
/// deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Dataset: mnist, cifar10, or the folder name (under the data directory) of any IDX dataset
    /// laid out as MNIST.
    #[arg(long, default_value = crate::data::MNIST)]
    pub dataset: String,
    /// sequential = deep residual stack; parallel = the same units side by side; staged-D = D
    /// stages in sequence, each of L/D units side by side (D must divide L).
    #[arg(long)]
    pub layout: Layout,
    /// Number of residual units L.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Channels F of the stem and of every unit.
    #[arg(long, default_value_t = 32)]
    pub filters: usize,
    /// Kernel size k (odd) of every convolution.
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    /// Activation φ of the stem and the units.
    #[arg(long, value_enum, default_value_t)]
    pub activation: Activation,
    /// Pooling after the stem.
    #[arg(long, value_enum, default_value_t)]
    pub pool: Pool,
    /// Batch norm in every unit: φ(BN(conv(h))).
    #[arg(long)]
    pub batchnorm: bool,
    /// The head before the linear layer.
    #[arg(long, value_enum, default_value_t)]
    pub head: Head,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Seeds the initial weights and the data order; both layouts of a configuration share it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on this many examples only (all if absent).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validate on this many test-set examples only (all if absent).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// How limits pick examples: stratified = balanced classes in file order; first = first N.
    #[arg(long, value_enum, default_value_t)]
    pub subset: Subset,
    /// Arithmetic of convolutions and linear layer; bf16 is about 2× faster on CPUs with AMX or
    /// AVX-512-BF16, final losses within 10 % of fp32 (weights, optimizer and loss stay f32).
    /// Left out of the serialised form when fp32, so that run ids of sweeps recorded before this
    /// setting existed stay valid.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

/// The defaults of every setting, with `layout` (which has none: `shallow train` asks for it)
/// as given.
pub fn defaults(layout: Layout) -> RunConfig {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        config: RunConfig,
    }
    let layout = layout.to_string();
    <Defaults as clap::Parser>::parse_from(["defaults", "--layout", layout.as_str()]).config
}

/// Bounds far beyond any net these datasets can train, that keep sizes from overflowing.
const MAX_LAYERS: usize = 10_000;
const MAX_FILTERS: usize = 65_536;
const MAX_KERNEL: usize = 99;

impl RunConfig {
    /// The settings that runs trained together as one fused array must share: all but the
    /// learning rate and the seed, which each member has its own of.
    pub fn fusion_group(&self) -> RunConfig {
        RunConfig {
            lr: 1.0,
            seed: 0,
            ..self.clone()
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.dataset.is_empty(), "dataset must not be empty");
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "lr must be a positive number, got {}",
            self.lr
        );
        ensure!(self.batch_size >= 1, "batch_size must be at least 1");
        ensure!(self.epochs >= 1, "epochs must be at least 1");
        ensure!(
            self.train_limit != Some(0),
            "train_limit must be at least 1"
        );
        ensure!(self.val_limit != Some(0), "val_limit must be at least 1");
        ensure!(
            (1..=MAX_LAYERS).contains(&self.layers),
            "layers must be between 1 and {MAX_LAYERS}, got {}",
            self.layers
        );
        self.layout.check(self.layers)?;
        ensure!(
            (1..=MAX_FILTERS).contains(&self.filters),
            "filters must be between 1 and {MAX_FILTERS}, got {}",
            self.filters
        );
        ensure!(
            self.kernel <= MAX_KERNEL,
            "kernel must be at most {MAX_KERNEL}, got {}",
            self.kernel
        );
        ensure!(
            !self.kernel.is_multiple_of(2),
            "kernel must be odd (same padding), got {}",
            self.kernel
        );
        Ok(())
    }

    pub fn architecture(&self, input: [usize; 3]) -> Architecture {
        Architecture {
            layout: self.layout,
            input,
            classes: CLASSES,
            layers: self.layers,
            filters: self.filters,
            kernel: self.kernel,
            activation: self.activation,
            pool: self.pool,
            batchnorm: self.batchnorm,
            head: self.head,
        }
    }
}
