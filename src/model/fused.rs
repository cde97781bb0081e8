//! M nets of one architecture trained as one: a horizontally fused array (HFTA, Wang et al.,
//! MLSys 2021).
//!
//! Every convolution is a grouped convolution over M groups — member m's channels are group m,
//! so members never mix — batch norm is per channel and so per member, and the head is a batched
//! matrix product. The input holds each member's own minibatch in its own group of channels:
//! `[N, M·C, H, W]`. Each variable keeps an explicit member axis, so that a member's slice can be
//! read, frozen or given its own learning rate:
//! - stem `[M, F, C, k, k]`, `[M, F]`; head `[M, classes, D]`, `[M, classes]`;
//! - units `[D, M, L/D, F, F, k, k]` for D stages of L/D units (sequential: D = L, parallel:
//!   D = 1): stage s of every member is one contiguous slice, applied as one grouped
//!   convolution; their biases and batch norm `[D, M, L/D, F]` alike.
//!
//! Member m starts from exactly the weights a solo [`Net`](super::Net) of its seed starts from.
use anyhow::{Result, ensure};
use tch::{Device, Kind, Tensor};

use super::{Architecture, BN_EPS, BN_MOMENTUM, Head, Init, Net, Precision, same_conv};

pub struct FusedNet {
    arch: Architecture,
    members: i64,
    stem_w: Tensor,
    stem_b: Tensor,
    units_w: Tensor,
    units_b: Option<Tensor>,
    bn: Option<FusedBatchNorm>,
    head_w: Tensor,
    head_b: Tensor,
    precision: Precision,
}

struct FusedBatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

/// A trainable variable and the axis that indexes the members.
pub struct MemberVar<'a> {
    pub tensor: &'a Tensor,
    pub member_axis: usize,
}

impl FusedNet {
    /// One member per seed, each initialised exactly as a solo net of that seed.
    pub fn new(arch: Architecture, seeds: &[u64], device: Device) -> Result<FusedNet> {
        ensure!(!seeds.is_empty(), "a fused net needs at least one member");
        let inits = seeds
            .iter()
            .map(|&seed| Init::draw(&arch, seed))
            .collect::<Result<Vec<_>>>()?;
        let (l, f) = (arch.layers as i64, arch.filters as i64);
        let m = seeds.len() as i64;
        let d = arch.layout.stages(arch.layers) as i64;
        let stack = |pick: &dyn Fn(&Init) -> Tensor, axis: i64| {
            let parts: Vec<Tensor> = inits.iter().map(pick).collect();
            Tensor::stack(&parts, axis)
                .to_device(device)
                .set_requires_grad(true)
        };
        // A member's [L·F, …] unit tensor as [D, L/D, F, …], stacked on the member axis 1.
        let staged = |t: &Tensor| {
            let mut dims = vec![d, l / d, f];
            dims.extend_from_slice(&t.size()[1..]);
            t.view(&dims[..])
        };
        let units_w = stack(&|i| staged(&i.units_w), UNIT_MEMBER_AXIS as i64);
        let units_b = (!arch.batchnorm).then(|| {
            stack(
                &|i| staged(i.units_b.as_ref().expect("no batch norm: a bias")),
                UNIT_MEMBER_AXIS as i64,
            )
        });
        let bn_shape = [d, m, l / d, f];
        let filled = |value: f64, train: bool| {
            Tensor::full(bn_shape, value, (Kind::Float, device)).set_requires_grad(train)
        };
        let bn = arch.batchnorm.then(|| FusedBatchNorm {
            weight: filled(1.0, true),
            bias: filled(0.0, true),
            running_mean: filled(0.0, false),
            running_var: filled(1.0, false),
        });
        Ok(FusedNet {
            arch,
            members: m,
            stem_w: stack(&|i| i.stem_w.shallow_clone(), 0),
            stem_b: stack(&|i| i.stem_b.shallow_clone(), 0),
            units_w,
            units_b,
            bn,
            head_w: stack(&|i| i.head_w.shallow_clone(), 0),
            head_b: stack(&|i| i.head_b.shallow_clone(), 0),
            precision: Precision::Fp32,
        })
    }

    /// Computes in `precision` from now on (the variables stay f32).
    pub fn with_precision(mut self, precision: Precision) -> FusedNet {
        self.precision = precision;
        self
    }

    pub fn members(&self) -> usize {
        self.members as usize
    }

    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The trainable variables, each with its member axis.
    pub fn trainable(&self) -> Vec<MemberVar<'_>> {
        let unit_axis = UNIT_MEMBER_AXIS;
        let mut vars = vec![
            MemberVar {
                tensor: &self.stem_w,
                member_axis: 0,
            },
            MemberVar {
                tensor: &self.stem_b,
                member_axis: 0,
            },
            MemberVar {
                tensor: &self.units_w,
                member_axis: unit_axis,
            },
        ];
        let unit_vars = self.units_b.iter().chain(
            self.bn
                .iter()
                .flat_map(|bn| [&bn.weight, &bn.bias].into_iter()),
        );
        vars.extend(unit_vars.map(|tensor| MemberVar {
            tensor,
            member_axis: unit_axis,
        }));
        vars.extend([&self.head_w, &self.head_b].map(|tensor| MemberVar {
            tensor,
            member_axis: 0,
        }));
        vars
    }

    /// Member `m`'s trainable variables (or what `of` maps each to, e.g. its gradient) in a solo
    /// [`Net`](super::Net)'s shapes, in the order of a solo net's variable names sorted:
    /// head.bias, head.weight, stem.bias, stem.weight, (units.bias | units.bn.bias,
    /// units.bn.weight), units.weight.
    pub fn member_variables(
        &self,
        m: usize,
        of: &dyn Fn(&Tensor) -> Tensor,
    ) -> Vec<(&'static str, Tensor)> {
        let (l, f) = (self.arch.layers as i64, self.arch.filters as i64);
        let m = m as i64;
        let unit = |t: &Tensor| {
            let t = of(t).select(UNIT_MEMBER_AXIS as i64, m);
            let mut dims = vec![l * f];
            dims.extend_from_slice(&t.size()[3..]);
            t.reshape(&dims[..])
        };
        let mut vars = vec![
            ("head.bias", of(&self.head_b).get(m)),
            ("head.weight", of(&self.head_w).get(m)),
            ("stem.bias", of(&self.stem_b).get(m)),
            ("stem.weight", of(&self.stem_w).get(m)),
        ];
        if let Some(b) = &self.units_b {
            vars.push(("units.bias", unit(b)));
        }
        if let Some(bn) = &self.bn {
            vars.push(("units.bn.bias", unit(&bn.bias)));
            vars.push(("units.bn.weight", unit(&bn.weight)));
        }
        vars.push(("units.weight", unit(&self.units_w)));
        vars
    }

    /// Copies of member `m`'s variables and batch-norm running statistics under a solo
    /// [`Net`](super::Net)'s names and shapes: what [`super::saved::save`] writes for it.
    pub fn member_state(&self, m: usize) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> = self
            .member_variables(m, &|t| t.detach().copy())
            .into_iter()
            .map(|(name, t)| (name.to_owned(), t))
            .collect();
        if let Some(bn) = &self.bn {
            let size = (self.arch.layers * self.arch.filters) as i64;
            for (name, t) in [
                ("units.bn.running_mean", &bn.running_mean),
                ("units.bn.running_var", &bn.running_var),
            ] {
                let member = t.detach().select(UNIT_MEMBER_AXIS as i64, m as i64);
                state.push((name.to_owned(), member.reshape([size]).copy()));
            }
        }
        state
    }

    /// Member `m` as a solo [`Net`] of copies of its weights (for evaluation; batch norm's
    /// running statistics fresh).
    pub fn member_net(&self, m: usize) -> Net {
        let vars: std::collections::HashMap<&str, Tensor> = self
            .member_variables(m, &|t| t.detach().copy())
            .into_iter()
            .collect();
        let take = |name: &str| vars[name].shallow_clone();
        let weights = Init {
            stem_w: take("stem.weight"),
            stem_b: take("stem.bias"),
            units_w: take("units.weight"),
            units_b: vars.get("units.bias").map(Tensor::shallow_clone),
            head_w: take("head.weight"),
            head_b: take("head.bias"),
        };
        let bn = self
            .bn
            .as_ref()
            .map(|_| (take("units.bn.weight"), take("units.bn.bias")));
        Net::from_weights(self.arch, weights, bn).with_precision(self.precision)
    }

    /// Views of member `m`'s slice of every variable, batch-norm statistics included (writing
    /// into a view writes into the array).
    pub fn member_slices(&self, m: usize) -> Vec<Tensor> {
        let m = m as i64;
        let mut slices: Vec<Tensor> = self
            .trainable()
            .into_iter()
            .map(|v| v.tensor.narrow(v.member_axis as i64, m, 1))
            .collect();
        if let Some(bn) = &self.bn {
            let axis = UNIT_MEMBER_AXIS as i64;
            slices.push(bn.running_mean.narrow(axis, m, 1));
            slices.push(bn.running_var.narrow(axis, m, 1));
        }
        slices
    }

    /// Resets member `m`'s batch-norm running statistics (to a fresh net's), e.g. after its
    /// training diverged and left NaN in them.
    pub fn reset_statistics(&self, m: usize) {
        let Some(bn) = &self.bn else { return };
        let axis = UNIT_MEMBER_AXIS as i64;
        tch::no_grad(|| {
            let _ = bn.running_mean.narrow(axis, m as i64, 1).fill_(0.0);
            let _ = bn.running_var.narrow(axis, m as i64, 1).fill_(1.0);
        });
    }

    /// Logits `[M, N, classes]` for inputs `[N, M·C, H, W]` (member m's images in channels
    /// m·C..(m+1)·C); `train` selects batch statistics for batch norm.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.stem(&self.precision.apply(x));
        let stages = self.arch.layout.stages(self.arch.layers) as i64;
        let width = self.arch.layers as i64 / stages;
        let h = (0..stages).fold(h, |h, s| {
            let fs = self.stage(&h, s, width, train);
            h + fs
        });
        let logits = self.head(&h);
        match self.precision {
            Precision::Fp32 => logits,
            Precision::Bf16 => logits.to_kind(Kind::Float),
        }
    }

    /// Member m's images `[N, C, H, W]` of each member's batch `[M, N, C, H, W]` as one input.
    pub fn interleave(batches: &Tensor) -> Tensor {
        let [m, n, c, h, w] = batches.size()[..] else {
            panic!("interleave takes [M, N, C, H, W]")
        };
        batches.transpose(0, 1).reshape([n, m * c, h, w])
    }

    fn stem(&self, x: &Tensor) -> Tensor {
        let (m, f) = (self.members, self.arch.filters as i64);
        let [_, _, c, k, _] = self.stem_w.size()[..] else {
            unreachable!("stem weight is 5-d")
        };
        let w = self.stem_w.view([m * f, c, k, k]);
        let h = self
            .arch
            .activation
            .apply(self.conv(x, &w, Some(&self.stem_b.view([m * f]))));
        self.arch.pool.apply(h)
    }

    fn conv(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        same_conv(x, w, b, self.precision, self.members)
    }

    /// `Σ_{i in stage s} F_i(h)` for every member at once: the stage's `width` units of every
    /// member as one grouped convolution, batch norm and activation on all their channels, then
    /// each member's sum over its units.
    fn stage(&self, h: &Tensor, s: i64, width: i64, train: bool) -> Tensor {
        let (m, f, k) = (
            self.members,
            self.arch.filters as i64,
            self.arch.kernel as i64,
        );
        let channels = m * width * f;
        let flat = |t: &Tensor| t.select(0, s).reshape([channels]);
        let w = self.units_w.select(0, s).reshape([channels, f, k, k]);
        let bias = self.units_b.as_ref().map(flat);
        let z = self.conv(h, &w, bias.as_ref());
        let z = match &self.bn {
            Some(bn) => z.batch_norm(
                Some(&flat(&bn.weight)),
                Some(&flat(&bn.bias)),
                Some(&bn.running_mean.select(0, s).view([channels])),
                Some(&bn.running_var.select(0, s).view([channels])),
                train,
                BN_MOMENTUM,
                BN_EPS,
                false,
            ),
            None => z,
        };
        let z = self.arch.activation.apply(z);
        if width == 1 {
            return z;
        }
        let [n, _, hh, ww] = z.size()[..] else {
            unreachable!("conv2d output is 4-d")
        };
        z.view([n, m, width, f, hh, ww])
            .sum_dim_intlist(2, false, None::<Kind>)
            .view([n, m * f, hh, ww])
    }

    fn head(&self, h: &Tensor) -> Tensor {
        let m = self.members;
        let n = h.size()[0];
        let features = match self.arch.head {
            Head::Flatten => h.view([n, m, -1]),
            Head::Gap => h
                .mean_dim(&[2i64, 3][..], false, None::<Kind>)
                .view([n, m, -1]),
        }
        .transpose(0, 1);
        let w = self.precision.apply(&self.head_w).transpose(1, 2);
        let b = self.precision.apply(&self.head_b).unsqueeze(1);
        b.baddbmm(&features, &w, 1.0, 1.0)
    }
}

/// The member axis of the units' variables `[D, M, L/D, …]`.
const UNIT_MEMBER_AXIS: usize = 1;
