//! The layouts of one residual network: sequential, parallel and the staged continuum between.
//!
//! Stem: conv k×k (C_in→F, same padding) + φ, optionally a 2×2 max-pool. Then L residual units
//! `F_i(h) = φ(BN?(conv_i(h)))`, each conv k×k F→F — with a bias, except before batch norm, whose
//! shift makes a bias redundant (as in ResNets: P counts no parameter the output cannot depend
//! on, and Adam does not random-walk a bias whose gradient is rounding noise) — arranged either
//! - **sequential** (deep): `h_i = h_{i-1} + F_i(h_{i-1})`, or
//! - **parallel** (shallow): `y = x + Σ_i F_i(x)` — the first-order terms of the expansion of
//!   `(I+F_L)∘…∘(I+F_1)`, or
//! - **staged-D** (between): D stages in sequence, each of L/D consecutive units side by side,
//!   `h_s = h_{s-1} + Σ_{i in stage s} F_i(h_{s-1})` — D = 1 is parallel, D = L sequential.
//!
//! Then a head (flatten or global average pool) and a linear layer to the classes.
//!
//! All layouts hold the L unit convolutions in one `[L·F, F, k, k]` weight tensor (and one
//! `L·F` bias, and batch norm over `L·F` channels). Every layout applies a stage through a slice
//! of it, as one convolution with (units in the stage)·F output channels: the sequential layout
//! unit by unit, the parallel layout all units at once — the same arithmetic in one large kernel
//! call instead of L small ones. All layouts therefore have the same variables, shapes and
//! parameter count, and one seed gives them identical initial weights.
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor, nn};

mod architecture;
pub mod fused;
pub mod saved;
pub(crate) mod tensor_file;

pub use architecture::{Activation, Architecture, Head, Layout, Pool, Precision};

/// Batch-norm state of the units, over all L·F channels.
struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// A net's initial weights (CPU, f32), drawn from its seed alone, in the order and shapes a solo
/// [`Net`] holds them; the fused array of [`fused::FusedNet`] stacks several of them.
pub(crate) struct Init {
    pub stem_w: Tensor,
    pub stem_b: Tensor,
    pub units_w: Tensor,
    pub units_b: Option<Tensor>,
    pub head_w: Tensor,
    pub head_b: Tensor,
}

impl Init {
    /// Initialised as PyTorch's `nn.Conv2d`/`nn.Linear` do (weights kaiming-uniform with a = √5
    /// and biases, both U(±1/√fan_in)).
    pub fn draw(arch: &Architecture, seed: u64) -> Result<Init> {
        arch.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let [c, _, _] = arch.input;
        let (l, f, k) = (arch.layers as i64, arch.filters as i64, arch.kernel as i64);
        let mut uniform = |dims: &[i64], fan_in: i64| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n: i64 = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| rng.gen_range(-bound..bound) as f32)
                .collect();
            Tensor::from_slice(&values).view(dims)
        };
        let stem_w = uniform(&[f, c as i64, k, k], c as i64 * k * k);
        let stem_b = uniform(&[f], c as i64 * k * k);
        let units_w = uniform(&[l * f, f, k, k], f * k * k);
        let units_b = (!arch.batchnorm).then(|| uniform(&[l * f], f * k * k));
        let head_in = arch.head_inputs() as i64;
        let classes = arch.classes as i64;
        let head_w = uniform(&[classes, head_in], head_in);
        let head_b = uniform(&[classes], head_in);
        Ok(Init {
            stem_w,
            stem_b,
            units_w,
            units_b,
            head_w,
            head_b,
        })
    }
}

pub struct Net {
    arch: Architecture,
    stem_w: Tensor,
    stem_b: Tensor,
    units_w: Tensor,
    /// Absent with batch norm (its shift takes the bias's place).
    units_b: Option<Tensor>,
    bn: Option<BatchNorm>,
    head_w: Tensor,
    head_b: Tensor,
    precision: Precision,
    /// Batch norm's momentum for its running statistics (PyTorch's default, 0.1, except while
    /// re-estimating them).
    bn_momentum: f64,
}

pub(crate) const BN_MOMENTUM: f64 = 0.1;
pub(crate) const BN_EPS: f64 = 1e-5;

impl Net {
    /// Builds the net's variables in `vs`, initialised as PyTorch's `nn.Conv2d`/`nn.Linear` do
    /// ([`Init::draw`]), from `seed` alone.
    ///
    /// We do not use tch's default init (Kaiming with the ReLU gain): its √6 larger weights make
    /// the residual sum's initial logits explode (first-step loss ≈ 86 instead of ≈ 10 on MNIST)
    /// and the nets train worse. Drawing from our own seeded generator keeps runs independent of
    /// libtorch's global RNG, so concurrent trainings in one process stay reproducible.
    pub fn new(vs: &nn::Path, arch: Architecture, seed: u64) -> Result<Net> {
        let init = Init::draw(&arch, seed)?;
        let (l, f) = (arch.layers as i64, arch.filters as i64);
        let stem_w = (vs / "stem").var_copy("weight", &init.stem_w);
        let stem_b = (vs / "stem").var_copy("bias", &init.stem_b);
        let units_w = (vs / "units").var_copy("weight", &init.units_w);
        let units_b = init.units_b.map(|b| (vs / "units").var_copy("bias", &b));
        let head_w = (vs / "head").var_copy("weight", &init.head_w);
        let head_b = (vs / "head").var_copy("bias", &init.head_b);
        let bn_path = vs / "units" / "bn";
        let bn = arch.batchnorm.then(|| BatchNorm {
            weight: bn_path.ones("weight", &[l * f]),
            bias: bn_path.zeros("bias", &[l * f]),
            running_mean: bn_path.zeros_no_train("running_mean", &[l * f]),
            running_var: bn_path.ones_no_train("running_var", &[l * f]),
        });
        Ok(Net {
            arch,
            stem_w,
            stem_b,
            units_w,
            units_b,
            bn,
            head_w,
            head_b,
            precision: Precision::Fp32,
            bn_momentum: BN_MOMENTUM,
        })
    }

    /// A net of these weights (not variables of any store: for evaluation), its batch norm, if
    /// any, with `bn` = (scale, shift) and fresh running statistics.
    pub(crate) fn from_weights(arch: Architecture, w: Init, bn: Option<(Tensor, Tensor)>) -> Net {
        let bn = bn.map(|(weight, bias)| BatchNorm {
            running_mean: weight.zeros_like(),
            running_var: weight.ones_like(),
            weight,
            bias,
        });
        Net {
            arch,
            stem_w: w.stem_w,
            stem_b: w.stem_b,
            units_w: w.units_w,
            units_b: w.units_b,
            bn,
            head_w: w.head_w,
            head_b: w.head_b,
            precision: Precision::Fp32,
            bn_momentum: BN_MOMENTUM,
        }
    }

    /// Computes in `precision` from now on (the variables stay f32).
    pub fn with_precision(mut self, precision: Precision) -> Net {
        self.precision = precision;
        self
    }

    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The same trained units arranged as `layout` (sharing this net's variables), e.g. a
    /// sequential net's units side by side: its first-order truncation. With batch norm the
    /// rearranged net gets running statistics of its own, reset; re-estimate them with
    /// [`Net::reestimate_statistics`] before evaluating it.
    pub fn rearranged(&self, layout: Layout) -> Result<Net> {
        let arch = Architecture {
            layout,
            ..self.arch
        };
        arch.validate()?;
        let bn = self.bn.as_ref().map(|bn| BatchNorm {
            weight: bn.weight.shallow_clone(),
            bias: bn.bias.shallow_clone(),
            running_mean: bn.running_mean.zeros_like(),
            running_var: bn.running_var.ones_like(),
        });
        Ok(Net {
            arch,
            stem_w: self.stem_w.shallow_clone(),
            stem_b: self.stem_b.shallow_clone(),
            units_w: self.units_w.shallow_clone(),
            units_b: self.units_b.as_ref().map(Tensor::shallow_clone),
            bn,
            head_w: self.head_w.shallow_clone(),
            head_b: self.head_b.shallow_clone(),
            precision: self.precision,
            bn_momentum: BN_MOMENTUM,
        })
    }

    /// Re-estimates batch norm's running statistics from `batches` (in train mode, without
    /// gradients or any change to the weights) as their plain average over the batches: after
    /// resetting them, batch t is folded in with momentum 1/(t+1). Does nothing without batch norm.
    pub fn reestimate_statistics(&mut self, batches: impl Iterator<Item = Tensor>) {
        {
            let Some(bn) = &mut self.bn else { return };
            let _ = bn.running_mean.zero_();
            let _ = bn.running_var.fill_(1.0);
        }
        for (t, x) in batches.enumerate() {
            self.bn_momentum = 1.0 / (t + 1) as f64;
            tch::no_grad(|| {
                let _ = self.forward(&x, true);
            });
        }
        self.bn_momentum = BN_MOMENTUM;
    }

    /// Logits (in the variables' kind) for a batch `[N, C, H, W]`; `train` selects batch statistics for batch norm.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.stem(&self.low(x));
        let stages = self.arch.layout.stages(self.arch.layers);
        let width = self.arch.layers / stages;
        let h = (0..stages).fold(h, |h, s| {
            let fs = self.unit_group(&h, s * width..(s + 1) * width, train);
            h + fs
        });
        let logits = self.head(&h);
        match self.precision {
            Precision::Fp32 => logits,
            Precision::Bf16 => logits.to_kind(Kind::Float),
        }
    }

    /// `t` in the compute precision ([`Precision::apply`]).
    fn low(&self, t: &Tensor) -> Tensor {
        self.precision.apply(t)
    }

    fn stem(&self, x: &Tensor) -> Tensor {
        let h = self.activate(self.conv(x, &self.stem_w, Some(&self.stem_b)));
        self.arch.pool.apply(h)
    }

    fn conv(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        same_conv(x, w, b, self.precision, 1)
    }

    fn activate(&self, x: Tensor) -> Tensor {
        self.arch.activation.apply(x)
    }

    /// `Σ_{i ∈ units} F_i(h)` for consecutive units, as one convolution with `units.len()·F`
    /// output channels (a slice of the shared tensors), batch norm and activation on all of them,
    /// then the sum over the groups of F channels. Each stage calls it with its units: the
    /// sequential layout with one, the parallel layout with all of them.
    fn unit_group(&self, h: &Tensor, units: std::ops::Range<usize>, train: bool) -> Tensor {
        let f = self.arch.filters as i64;
        let (first, count) = (units.start as i64, units.len() as i64);
        let slice = |t: &Tensor| t.narrow(0, first * f, count * f);
        let bias = self.units_b.as_ref().map(slice);
        let z = self.conv(h, &slice(&self.units_w), bias.as_ref());
        let z = match &self.bn {
            Some(bn) => z.batch_norm(
                Some(&slice(&bn.weight)),
                Some(&slice(&bn.bias)),
                Some(&slice(&bn.running_mean)),
                Some(&slice(&bn.running_var)),
                train,
                self.bn_momentum,
                BN_EPS,
                false,
            ),
            None => z,
        };
        let z = self.activate(z);
        if count == 1 {
            return z;
        }
        let [n, _, hh, ww] = z.size()[..] else {
            unreachable!("conv2d output is 4-d")
        };
        z.view([n, count, f, hh, ww])
            .sum_dim_intlist(1, false, None::<Kind>)
    }

    fn head(&self, h: &Tensor) -> Tensor {
        let features = match self.arch.head {
            Head::Flatten => h.flatten(1, -1),
            Head::Gap => h.mean_dim(&[2i64, 3][..], false, None::<Kind>),
        };
        features.linear(&self.low(&self.head_w), Some(self.low(&self.head_b)))
    }
}

/// A k×k convolution with same padding (k from `w`), stride 1, over `groups` groups, computed in
/// `precision`.
pub(crate) fn same_conv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    precision: Precision,
    groups: i64,
) -> Tensor {
    let pad = w.size()[3] / 2;
    x.conv2d(
        &precision.apply(w),
        b.map(|b| precision.apply(b)),
        [1, 1],
        [pad, pad],
        [1, 1],
        groups,
    )
}

/// Number of trainable parameters of the variables in `vs`.
pub fn parameter_count(vs: &nn::VarStore) -> usize {
    vs.trainable_variables().iter().map(|t| t.numel()).sum()
}

/// The determination ratio Q = (training examples × outputs) / parameters.
pub fn determination_ratio(examples: usize, outputs: usize, params: usize) -> f64 {
    (examples * outputs) as f64 / params as f64
}

/// The paper's bins of the determination ratio Q: [0,1), [1,3), [3,10), [10,∞).
pub const Q_EDGES: [f64; 3] = [1.0, 3.0, 10.0];
pub const Q_BINS: [&str; 4] = ["[0,1)", "[1,3)", "[3,10)", "[10,∞)"];

/// Index of the Q bin: lower edge inclusive, upper edge exclusive.
pub fn q_bin(q: f64) -> usize {
    Q_EDGES.iter().take_while(|&&edge| q >= edge).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A sequential net with batch norm rearranged side by side: its re-estimated running
    /// statistics are the plain averages, over the batches, of each batch's per-channel mean and
    /// unbiased variance of the (single, parallel) unit convolution — computed here by hand.
    #[test]
    fn rearranged_batch_norm_statistics_are_the_batch_averages() {
        let arch = Architecture {
            layout: Layout::Sequential,
            input: [1, 6, 6],
            classes: 10,
            layers: 3,
            filters: 2,
            kernel: 3,
            activation: Activation::Relu,
            pool: Pool::None,
            batchnorm: true,
            head: Head::Flatten,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let deep = Net::new(&vs.root(), arch, 4).unwrap();
        let mut wide = deep.rearranged(Layout::Parallel).unwrap();
        let batches: Vec<Tensor> = (0..3)
            .map(|_| Tensor::randn([5, 1, 6, 6], (Kind::Float, Device::Cpu)))
            .collect();
        wide.reestimate_statistics(batches.iter().map(Tensor::shallow_clone));
        let (mut mean, mut var) = (Tensor::zeros([6], FLOAT), Tensor::zeros([6], FLOAT));
        for x in &batches {
            let h = deep.stem(x);
            let z = h.conv2d(&deep.units_w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
            let per_channel = z.transpose(0, 1).reshape([6, -1]);
            mean += per_channel.mean_dim(1, false, None::<Kind>) / 3.0;
            var += per_channel.var_dim(1, true, false) / 3.0;
        }
        let bn = wide.bn.as_ref().unwrap();
        assert!(bn.running_mean.allclose(&mean, 1e-5, 1e-6, false));
        assert!(bn.running_var.allclose(&var, 1e-5, 1e-6, false));
        // The trained net's own statistics are untouched, and its weights shared.
        let own = deep.bn.as_ref().unwrap();
        assert!(own.running_mean.equal(&Tensor::zeros([6], FLOAT)));
        assert!(wide.units_w.equal(&deep.units_w));
    }

    const FLOAT: (Kind, Device) = (Kind::Float, Device::Cpu);
}
