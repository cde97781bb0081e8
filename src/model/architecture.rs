//! What fixes a network: its layout, activation, pooling, head, precision and sizes
//! ([`Architecture`]), with validation, parameter count, FLOPs and a memory estimate.
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How the L residual units are arranged. Written `sequential`, `parallel` or `staged-D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    /// Deep: units stacked one after another.
    Sequential,
    /// Shallow: units side by side, outputs summed.
    Parallel,
    /// The continuum between them: D stages in sequence, each of L/D units side by side
    /// (`h_s = h_{s-1} + Σ_{i in stage s} F_i(h_{s-1})`); D = 1 is parallel, D = L sequential.
    Staged(usize),
}

impl Layout {
    /// Refuses a number of stages that does not divide `layers`.
    pub fn check(self, layers: usize) -> Result<()> {
        if let Layout::Staged(d) = self {
            ensure!(
                d >= 1 && layers.is_multiple_of(d),
                "layout staged-{d} needs a number of layers divisible by {d}, got {layers}"
            );
        }
        Ok(())
    }

    /// The number of stages D applied in sequence to `layers` units.
    pub fn stages(self, layers: usize) -> usize {
        match self {
            Layout::Sequential => layers,
            Layout::Parallel => 1,
            Layout::Staged(d) => d,
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(text: &str) -> Result<Layout, String> {
        match text {
            "sequential" => Ok(Layout::Sequential),
            "parallel" => Ok(Layout::Parallel),
            _ => text
                .strip_prefix("staged-")
                .and_then(|d| d.parse().ok())
                .filter(|&d| d >= 1)
                .map(Layout::Staged)
                .ok_or_else(|| {
                    format!(
                        "unknown layout '{text}': expected sequential, parallel or staged-D \
                         (D ≥ 1 stages, e.g. staged-2)"
                    )
                }),
        }
    }
}

impl Serialize for Layout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Layout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Layout, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// No pooling.
    #[default]
    None,
    /// 2×2 max-pool (stride 2) after the stem.
    Max2,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// Flatten the feature maps, then a linear layer.
    #[default]
    Flatten,
    /// Global average pool over space, then a linear layer.
    Gap,
}

/// Arithmetic of the convolutions and the linear head. Parameters, optimizer state, batch-norm
/// statistics and the loss stay in f32 either way.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// bfloat16 convolutions and linear layer (as PyTorch's autocast does): about 2× faster on
    /// CPUs with AMX or AVX-512-BF16. Small nets on a GPU gain nothing (measured slower on an
    /// H200: fp32 already runs on TF32 tensor cores there).
    Bf16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// `t` in this precision. The cast of an f32 variable is differentiable, so its gradient
    /// arrives in f32 (autocast's scheme: f32 master weights, low-precision arithmetic).
    pub(crate) fn apply(self, t: &Tensor) -> Tensor {
        match self {
            Precision::Fp32 => t.shallow_clone(),
            Precision::Bf16 => t.to_kind(Kind::BFloat16),
        }
    }
}

impl Pool {
    pub(crate) fn apply(self, h: Tensor) -> Tensor {
        match self {
            Pool::None => h,
            Pool::Max2 => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
        }
    }
}

impl Activation {
    pub(crate) fn apply(self, x: Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Sequential => f.write_str("sequential"),
            Layout::Parallel => f.write_str("parallel"),
            Layout::Staged(d) => write!(f, "staged-{d}"),
        }
    }
}

/// Everything that fixes the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub layout: Layout,
    /// Input channels, height, width.
    pub input: [usize; 3],
    pub classes: usize,
    pub layers: usize,
    pub filters: usize,
    pub kernel: usize,
    pub activation: Activation,
    pub pool: Pool,
    pub batchnorm: bool,
    pub head: Head,
}

impl Architecture {
    /// The same architecture in another layout.
    pub fn with_layout(self, layout: Layout) -> Architecture {
        Architecture { layout, ..self }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.layers >= 1, "layers must be at least 1");
        self.layout.check(self.layers)?;
        ensure!(self.filters >= 1, "filters must be at least 1");
        ensure!(
            !self.kernel.is_multiple_of(2),
            "kernel must be odd for same padding, got {}",
            self.kernel
        );
        let [_, h, w] = self.input;
        ensure!(
            self.kernel <= h.min(w),
            "kernel {} is larger than the {h}×{w} input",
            self.kernel
        );
        ensure!(
            self.pool == Pool::None || (h >= 2 && w >= 2),
            "max2 pooling needs inputs of at least 2×2"
        );
        Ok(())
    }

    /// Trainable parameters P, in closed form (equal to the count of the built net's variables).
    pub fn parameter_count(&self) -> usize {
        let [c, _, _] = self.input;
        let (l, f, k) = (self.layers, self.filters, self.kernel);
        let stem = f * c * k * k + f;
        // Per unit: the kernel, then a bias (no batch norm) or batch norm's scale and shift.
        let units = l * f * f * k * k + if self.batchnorm { 2 * l * f } else { l * f };
        stem + units + self.head_inputs() * self.classes + self.classes
    }

    /// Multiply-adds of one forward pass of one image (convolutions and the linear head).
    pub fn forward_macs(&self) -> f64 {
        let [c, h, w] = self.input;
        let (fh, fw) = self.feature_size();
        let (l, f, k) = (self.layers, self.filters, self.kernel);
        let stem = (h * w * f * c * k * k) as f64;
        let units = (l * fh * fw * f * f * k * k) as f64;
        stem + units + (self.head_inputs() * self.classes) as f64
    }

    /// A rough upper estimate, in bytes, of what one training step of `batch` images needs: the
    /// f32 variables with their gradients and Adam's two moments, and per image the input, the
    /// stem's output, and per unit its convolution, batch-norm and activation outputs and the
    /// residual sum, each kept for the backward pass and matched by a gradient.
    pub fn training_memory_bytes(&self, batch: usize) -> f64 {
        let [c, h, w] = self.input;
        let (fh, fw) = self.feature_size();
        let f = self.filters as f64;
        let per_image = (c * h * w) as f64
            + 2.0 * f * (h * w) as f64
            + 4.0 * self.layers as f64 * f * (fh * fw) as f64;
        4.0 * (4.0 * self.parameter_count() as f64 + 2.0 * batch as f64 * per_image)
    }

    /// Spatial size after the stem (and pooling).
    pub(crate) fn feature_size(&self) -> (usize, usize) {
        let [_, h, w] = self.input;
        match self.pool {
            Pool::None => (h, w),
            Pool::Max2 => (h / 2, w / 2),
        }
    }

    pub(crate) fn head_inputs(&self) -> usize {
        let (h, w) = self.feature_size();
        match self.head {
            Head::Flatten => self.filters * h * w,
            Head::Gap => self.filters,
        }
    }
}
