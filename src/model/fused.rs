//! M nets of one architecture trained as one: a horizontally fused array (HFTA, Wang et al.,
//! MLSys 2021).
//!
//! Every convolution is a grouped convolution over M groups — member m's channels are group m,
//! so members never mix — batch norm is per channel and so per member, and the head is a batched
//! matrix product. The input holds each member's own minibatch in its own group of channels:
//! `[N, M·C, H, W]`. Each variable keeps an explicit member axis, so that a member's slice can be
//! read, frozen or given its own learning rate:
//! - stem `[M, F, C, k, k]`, `[M, F]`; head `[M, classes, D]`, `[M, classes]`;
//! - units, parallel layout: `[M, L, F, F, k, k]` (one grouped convolution applies every unit of
//!   every member), sequential: `[L, M, F, F, k, k]` (unit i of every member is one contiguous
//!   slice); their biases and batch norm `[M, L, F]` or `[L, M, F]` alike.
//!
//! Member m starts from exactly the weights a solo [`Net`](super::Net) of its seed starts from.
use anyhow::{Result, ensure};
use tch::{Device, Kind, Tensor};

use super::{Architecture, BN_EPS, BN_MOMENTUM, Head, Init, Layout, Pool, Precision};

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
        // The units' member axis: 0 (parallel) or 1 (sequential, unit-major).
        let unit_axis = units_member_axis(arch.layout) as i64;
        let stack = |pick: &dyn Fn(&Init) -> Tensor, axis: i64| {
            let parts: Vec<Tensor> = inits.iter().map(pick).collect();
            Tensor::stack(&parts, axis)
                .to_device(device)
                .set_requires_grad(true)
        };
        let unit_shape = |t: &Tensor| {
            let mut dims = vec![l, f];
            dims.extend_from_slice(&t.size()[1..]);
            t.view(&dims[..])
        };
        let units_w = stack(&|i| unit_shape(&i.units_w), unit_axis);
        let units_b = (!arch.batchnorm).then(|| {
            stack(
                &|i| unit_shape(i.units_b.as_ref().expect("no batch norm: a bias")),
                unit_axis,
            )
        });
        let bn_shape: [i64; 3] = if unit_axis == 0 { [m, l, f] } else { [l, m, f] };
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
        let unit_axis = units_member_axis(self.arch.layout);
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
        let unit_axis = units_member_axis(self.arch.layout) as i64;
        let (l, f) = (self.arch.layers as i64, self.arch.filters as i64);
        let m = m as i64;
        let unit = |t: &Tensor| {
            let t = of(t).select(unit_axis, m);
            let mut dims = vec![l * f];
            dims.extend_from_slice(&t.size()[2..]);
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

    /// Resets member `m`'s batch-norm running statistics (to a fresh net's), e.g. after its
    /// training diverged and left NaN in them.
    pub fn reset_statistics(&self, m: usize) {
        let Some(bn) = &self.bn else { return };
        let axis = units_member_axis(self.arch.layout) as i64;
        tch::no_grad(|| {
            let _ = bn.running_mean.narrow(axis, m as i64, 1).fill_(0.0);
            let _ = bn.running_var.narrow(axis, m as i64, 1).fill_(1.0);
        });
    }

    /// Logits `[M, N, classes]` for inputs `[N, M·C, H, W]` (member m's images in channels
    /// m·C..(m+1)·C); `train` selects batch statistics for batch norm.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.stem(&self.precision.apply(x));
        let h = match self.arch.layout {
            Layout::Sequential => (0..self.arch.layers as i64).fold(h, |h, i| {
                let select = |t: &Tensor| t.select(0, i);
                let fi = self.units(&h, &select, 1, train);
                h + fi
            }),
            Layout::Parallel => {
                let all = |t: &Tensor| t.shallow_clone();
                let branches = self.units(&h, &all, self.arch.layers as i64, train);
                h + branches
            }
        };
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
        match self.arch.pool {
            Pool::None => h,
            Pool::Max2 => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
        }
    }

    fn conv(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        let pad = (self.arch.kernel / 2) as i64;
        x.conv2d(
            &self.precision.apply(w),
            b.map(|b| self.precision.apply(b)),
            [1, 1],
            [pad, pad],
            [1, 1],
            self.members,
        )
    }

    /// `Σ_i F_i(h)` over the `count` units that `pick` selects from the unit variables (all of
    /// them, or unit i of every member), for every member at once.
    fn units(
        &self,
        h: &Tensor,
        pick: &dyn Fn(&Tensor) -> Tensor,
        count: i64,
        train: bool,
    ) -> Tensor {
        let (m, f, k) = (
            self.members,
            self.arch.filters as i64,
            self.arch.kernel as i64,
        );
        let channels = m * count * f;
        let flat = |t: &Tensor| pick(t).reshape([channels]);
        let w = pick(&self.units_w).reshape([channels, f, k, k]);
        let bias = self.units_b.as_ref().map(flat);
        let z = self.conv(h, &w, bias.as_ref());
        let z = match &self.bn {
            Some(bn) => z.batch_norm(
                Some(&flat(&bn.weight)),
                Some(&flat(&bn.bias)),
                Some(&pick(&bn.running_mean).view([channels])),
                Some(&pick(&bn.running_var).view([channels])),
                train,
                BN_MOMENTUM,
                BN_EPS,
                false,
            ),
            None => z,
        };
        let z = self.arch.activation.apply(z);
        if count == 1 {
            return z;
        }
        let [n, _, hh, ww] = z.size()[..] else {
            unreachable!("conv2d output is 4-d")
        };
        z.view([n, m, count, f, hh, ww])
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

/// Where the units' variables keep their member axis: sequential nets are unit-major, so that
/// unit i of every member is one contiguous slice.
fn units_member_axis(layout: Layout) -> usize {
    match layout {
        Layout::Parallel => 0,
        Layout::Sequential => 1,
    }
}
