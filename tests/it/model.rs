//! The two layouts: parameter parity, equivalence at L = 1, hand-computed forward passes,
//! finite-difference gradients, and the fused parallel convolution.
use shallow::model::{
    Activation, Architecture, Head, Layout, Net, Pool, Precision, determination_ratio,
    parameter_count,
};
use tch::{Device, Kind, Tensor, nn};

fn arch(layout: Layout, layers: usize, filters: usize, kernel: usize) -> Architecture {
    Architecture {
        layout,
        input: [1, 6, 6],
        classes: 10,
        layers,
        filters,
        kernel,
        activation: Activation::Relu,
        pool: Pool::None,
        batchnorm: false,
        head: Head::Flatten,
    }
}

fn build(a: Architecture, seed: u64) -> (nn::VarStore, Net) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), a, seed).unwrap();
    (vs, net)
}

fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].shallow_clone()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// P written out from the architecture, independently of the model code.
fn expected_params(a: &Architecture) -> usize {
    let [c, h, w] = a.input;
    let (l, f, k) = (a.layers, a.filters, a.kernel);
    let stem = f * c * k * k + f;
    // A unit: its kernel, plus a bias without batch norm or BN's scale and shift with it.
    let per_unit = f * f * k * k + if a.batchnorm { 2 * f } else { f };
    let units = l * per_unit;
    let (fh, fw) = match a.pool {
        Pool::None => (h, w),
        Pool::Max2 => (h / 2, w / 2),
    };
    let head_in = match a.head {
        Head::Flatten => f * fh * fw,
        Head::Gap => f,
    };
    stem + units + head_in * a.classes + a.classes
}

#[test]
fn both_layouts_have_the_same_parameter_count() {
    for layers in [1, 2, 5] {
        for filters in [1, 3, 8] {
            for kernel in [1, 3, 5] {
                for pool in [Pool::None, Pool::Max2] {
                    for batchnorm in [false, true] {
                        for head in [Head::Flatten, Head::Gap] {
                            let counts: Vec<usize> = [Layout::Sequential, Layout::Parallel]
                                .into_iter()
                                .map(|layout| {
                                    let a = Architecture {
                                        pool,
                                        batchnorm,
                                        head,
                                        ..arch(layout, layers, filters, kernel)
                                    };
                                    let (vs, _) = build(a, 1);
                                    assert_eq!(parameter_count(&vs), expected_params(&a), "{a:?}");
                                    assert_eq!(a.parameter_count(), expected_params(&a));
                                    parameter_count(&vs)
                                })
                                .collect();
                            assert_eq!(counts[0], counts[1]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn q_is_examples_times_outputs_over_parameters() {
    assert_eq!(determination_ratio(60_000, 10, 300_000), 2.0);
}

#[test]
fn same_seed_gives_both_layouts_identical_weights() {
    let (vs_s, _) = build(arch(Layout::Sequential, 3, 4, 3), 7);
    let (vs_p, _) = build(arch(Layout::Parallel, 3, 4, 3), 7);
    for (name, t) in vs_s.variables() {
        assert_eq!(max_abs_diff(&t, &var(&vs_p, &name)), 0.0, "{name}");
    }
    let (vs_other, _) = build(arch(Layout::Sequential, 3, 4, 3), 8);
    assert!(max_abs_diff(&var(&vs_s, "units.weight"), &var(&vs_other, "units.weight")) > 0.0);
}

#[test]
fn init_follows_pytorch_bounds() {
    let (vs, _) = build(arch(Layout::Parallel, 2, 8, 3), 3);
    let bound = 1.0 / ((8 * 3 * 3) as f64).sqrt();
    let w = var(&vs, "units.weight");
    let max = w.abs().max().double_value(&[]);
    assert!(
        max <= bound && max > 0.9 * bound,
        "max {max}, bound {bound}"
    );
}

#[test]
fn one_unit_gives_identical_outputs_in_both_layouts() {
    for batchnorm in [false, true] {
        for activation in [Activation::Relu, Activation::Tanh] {
            let make = |layout| Architecture {
                batchnorm,
                activation,
                ..arch(layout, 1, 4, 3)
            };
            let (vs_s, seq) = build(make(Layout::Sequential), 11);
            let (vs_p, par) = build(make(Layout::Parallel), 11);
            let x = Tensor::randn([5, 1, 6, 6], (Kind::Float, Device::Cpu));
            assert!(max_abs_diff(&seq.forward(&x, true), &par.forward(&x, true)) < 1e-6);
            assert!(max_abs_diff(&seq.forward(&x, false), &par.forward(&x, false)) < 1e-6);
            if batchnorm {
                let rm = "units.bn.running_mean";
                assert!(max_abs_diff(&var(&vs_s, rm), &var(&vs_p, rm)) < 1e-7);
            }
        }
    }
}

#[test]
fn sequential_batch_norm_updates_every_units_running_statistics() {
    let a = Architecture {
        batchnorm: true,
        ..arch(Layout::Sequential, 3, 2, 3)
    };
    let (vs, net) = build(a, 5);
    let x = Tensor::randn([4, 1, 6, 6], (Kind::Float, Device::Cpu));
    let _ = net.forward(&x, true);
    let mean = var(&vs, "units.bn.running_mean");
    for unit in 0..3 {
        let changed = mean
            .narrow(0, unit * 2, 2)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(changed > 0.0, "unit {unit} running mean not updated");
    }
}

/// Same-padded 2-d convolution written as loops: x [C][H][W], w [O][C][k][k].
fn conv_by_hand(x: &[Vec<Vec<f64>>], w: &Tensor, b: &Tensor) -> Vec<Vec<Vec<f64>>> {
    let [o, c, k, _] = w.size()[..] else { panic!() };
    let (h, wd) = (x[0].len() as i64, x[0][0].len() as i64);
    let p = k / 2;
    let mut out = vec![vec![vec![0.0; wd as usize]; h as usize]; o as usize];
    for oc in 0..o {
        for i in 0..h {
            for j in 0..wd {
                let mut s = b.double_value(&[oc]);
                for ic in 0..c {
                    for di in 0..k {
                        for dj in 0..k {
                            let (ii, jj) = (i + di - p, j + dj - p);
                            if ii >= 0 && ii < h && jj >= 0 && jj < wd {
                                s += w.double_value(&[oc, ic, di, dj])
                                    * x[ic as usize][ii as usize][jj as usize];
                            }
                        }
                    }
                }
                out[oc as usize][i as usize][j as usize] = s;
            }
        }
    }
    out
}

type Maps = Vec<Vec<Vec<f64>>>;

fn relu(m: Maps) -> Maps {
    m.into_iter()
        .map(|c| {
            c.into_iter()
                .map(|r| r.into_iter().map(|v| v.max(0.0)).collect())
                .collect()
        })
        .collect()
}

fn add(a: &Maps, b: &Maps) -> Maps {
    a.iter()
        .zip(b)
        .map(|(ca, cb)| {
            ca.iter()
                .zip(cb)
                .map(|(ra, rb)| ra.iter().zip(rb).map(|(x, y)| x + y).collect())
                .collect()
        })
        .collect()
}

/// The network of the module docs, computed by hand for one image.
fn forward_by_hand(vs: &nn::VarStore, a: &Architecture, image: &Tensor) -> Vec<f64> {
    let [c, h, w] = a.input;
    let x: Maps = (0..c as i64)
        .map(|ci| {
            (0..h as i64)
                .map(|i| {
                    (0..w as i64)
                        .map(|j| image.double_value(&[0, ci, i, j]))
                        .collect()
                })
                .collect()
        })
        .collect();
    let stem = relu(conv_by_hand(
        &x,
        &var(vs, "stem.weight"),
        &var(vs, "stem.bias"),
    ));
    let f = a.filters as i64;
    let unit = |i: i64, h: &Maps| {
        relu(conv_by_hand(
            h,
            &var(vs, "units.weight").narrow(0, i * f, f),
            &var(vs, "units.bias").narrow(0, i * f, f),
        ))
    };
    let l = a.layers as i64;
    let out = match a.layout {
        Layout::Sequential => (0..l).fold(stem, |h, i| add(&h, &unit(i, &h))),
        Layout::Parallel => (0..l).fold(stem.clone(), |acc, i| add(&acc, &unit(i, &stem))),
        // h_s = h_{s-1} + Σ_{i in stage s} F_i(h_{s-1}), stages of l/d consecutive units.
        Layout::Staged(d) => {
            let width = l / d as i64;
            (0..d as i64).fold(stem, |h, s| {
                (s * width..(s + 1) * width).fold(h.clone(), |acc, i| add(&acc, &unit(i, &h)))
            })
        }
    };
    let flat: Vec<f64> = out.into_iter().flatten().flatten().collect();
    let (hw, hb) = (var(vs, "head.weight"), var(vs, "head.bias"));
    (0..a.classes as i64)
        .map(|o| {
            hb.double_value(&[o])
                + flat
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * hw.double_value(&[o, i as i64]))
                    .sum::<f64>()
        })
        .collect()
}

#[test]
fn forward_pass_equals_the_formulas_computed_by_hand() {
    let layouts = [
        Layout::Sequential,
        Layout::Parallel,
        Layout::Staged(2),
        Layout::Staged(1),
        Layout::Staged(4),
    ];
    for layout in layouts {
        let a = Architecture {
            input: [2, 5, 4],
            ..arch(layout, 4, 3, 3)
        };
        let (vs, net) = build(a, 21);
        let x = Tensor::randn([1, 2, 5, 4], (Kind::Float, Device::Cpu));
        let logits = net.forward(&x, false);
        let expected = forward_by_hand(&vs, &a, &x);
        for (o, e) in expected.iter().enumerate() {
            let got = logits.double_value(&[0, o as i64]);
            assert!(
                (got - e).abs() < 1e-4 * (1.0 + e.abs()),
                "{layout} logit {o}: {got} vs {e}"
            );
        }
    }
}

#[test]
fn layouts_differ_beyond_one_unit() {
    let (_, seq) = build(arch(Layout::Sequential, 3, 4, 3), 2);
    let (_, par) = build(arch(Layout::Parallel, 3, 4, 3), 2);
    let x = Tensor::randn([2, 1, 6, 6], (Kind::Float, Device::Cpu));
    assert!(max_abs_diff(&seq.forward(&x, false), &par.forward(&x, false)) > 1e-4);
}

fn loss_of(net: &Net, x: &Tensor, y: &Tensor) -> Tensor {
    shallow::train::cross_entropy(&net.forward(x, true), y)
}

#[test]
fn gradients_match_finite_differences() {
    for layout in [Layout::Sequential, Layout::Parallel] {
        for batchnorm in [false, true] {
            let a = Architecture {
                activation: Activation::Tanh,
                batchnorm,
                input: [1, 4, 4],
                ..arch(layout, 2, 2, 3)
            };
            let (mut vs, net) = build(a, 31);
            vs.set_kind(Kind::Double);
            let x = Tensor::randn([3, 1, 4, 4], (Kind::Double, Device::Cpu));
            let y = Tensor::from_slice(&[1i64, 4, 7]);
            let loss = loss_of(&net, &x, &y);
            loss.backward();
            // With batch norm the units have its scale and shift instead of a bias.
            let unit_shift = if batchnorm {
                "units.bn.bias"
            } else {
                "units.bias"
            };
            for name in ["stem.weight", "units.weight", unit_shift, "head.weight"] {
                let param = var(&vs, name);
                let grad = param.grad().flatten(0, -1);
                let flat = param.detach().flatten(0, -1); // shares storage with the parameter
                let eps = 1e-6;
                let len = flat.size()[0];
                for i in [0, len / 2, len - 1] {
                    let original = flat.double_value(&[i]);
                    let at = |v: f64| {
                        tch::no_grad(|| {
                            let _ = flat.get(i).fill_(v);
                        });
                        tch::no_grad(|| loss_of(&net, &x, &y).double_value(&[]))
                    };
                    let numeric = (at(original + eps) - at(original - eps)) / (2.0 * eps);
                    at(original);
                    let analytic = grad.double_value(&[i]);
                    assert!(
                        (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                        "{layout} bn={batchnorm} {name}[{i}]: numeric {numeric} vs autograd {analytic}"
                    );
                }
            }
        }
    }
}

/// The parallel layout's one convolution with L·F output channels must be the sum of L separate
/// F-channel convolutions, in values and in gradients.
#[test]
fn fused_parallel_convolution_equals_separate_convolutions() {
    let (l, f) = (4i64, 3i64);
    let w = Tensor::randn([l * f, f, 3, 3], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let b = Tensor::randn([l * f], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let x = Tensor::randn([2, f, 5, 5], (Kind::Double, Device::Cpu));
    let fused = x
        .conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1)
        .relu()
        .view([2, l, f, 5, 5])
        .sum_dim_intlist(1, false, None::<Kind>);
    let separate = (0..l)
        .map(|i| {
            x.conv2d(
                &w.narrow(0, i * f, f),
                Some(&b.narrow(0, i * f, f)),
                [1, 1],
                [1, 1],
                [1, 1],
                1,
            )
            .relu()
        })
        .reduce(|a, c| a + c)
        .unwrap();
    assert!(max_abs_diff(&fused, &separate) < 1e-12);
    let upstream = Tensor::randn([2, f, 5, 5], (Kind::Double, Device::Cpu));
    let grads = |out: &Tensor| {
        let g = Tensor::run_backward(
            &[(out * &upstream).sum(Kind::Double)],
            &[&w, &b],
            true,
            false,
        );
        (g[0].copy(), g[1].copy())
    };
    let (gw_fused, gb_fused) = grads(&fused);
    let (gw_sep, gb_sep) = grads(&separate);
    assert!(max_abs_diff(&gw_fused, &gw_sep) < 1e-12);
    assert!(max_abs_diff(&gb_fused, &gb_sep) < 1e-12);
}

/// bf16 must really compute in bf16 (results differ from f32 by rounding, not more), return f32
/// logits, and leave f32 gradients on the f32 variables.
#[test]
fn bf16_computes_in_bf16_and_keeps_f32_variables_and_gradients() {
    for layout in [Layout::Sequential, Layout::Parallel] {
        let a = Architecture {
            batchnorm: true,
            ..arch(layout, 3, 8, 3)
        };
        let (_, fp32) = build(a, 5);
        let (vs, bf16) = build(a, 5);
        let bf16 = bf16.with_precision(Precision::Bf16);
        let x = Tensor::randn([4, 1, 6, 6], (Kind::Float, Device::Cpu));
        let (exact, low) = (fp32.forward(&x, true), bf16.forward(&x, true));
        assert_eq!(low.kind(), Kind::Float);
        let relative = max_abs_diff(&exact, &low) / exact.abs().max().double_value(&[]);
        assert!(
            relative > 1e-5 && relative < 0.05,
            "{layout}: relative difference {relative}"
        );
        shallow::train::cross_entropy(&low, &Tensor::from_slice(&[0i64, 1, 2, 3])).backward();
        for (name, v) in vs.variables() {
            if v.requires_grad() {
                assert_eq!(v.kind(), Kind::Float, "{name}");
                assert_eq!(v.grad().kind(), Kind::Float, "{name}");
                assert!(
                    v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{name}"
                );
            }
        }
    }
}

/// Logits and every variable's gradient of one net on a batch.
fn logits_and_gradients(
    a: Architecture,
    x: &Tensor,
    y: &Tensor,
) -> (Tensor, Vec<(String, Tensor)>) {
    let (vs, net) = build(a, 5);
    let logits = net.forward(x, true);
    shallow::train::cross_entropy(&logits, y).backward();
    let mut grads: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, t)| (name, t.grad()))
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (logits.detach(), grads)
}

#[test]
fn staged_ends_are_the_parallel_and_sequential_layouts_in_values_and_gradients() {
    let x = Tensor::randn([4, 1, 6, 6], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[1i64, 7, 3, 0]);
    for batchnorm in [false, true] {
        let with = |layout| Architecture {
            batchnorm,
            ..arch(layout, 4, 3, 3)
        };
        for (staged, end) in [
            (Layout::Staged(1), Layout::Parallel),
            (Layout::Staged(4), Layout::Sequential),
        ] {
            let (la, ga) = logits_and_gradients(with(staged), &x, &y);
            let (lb, gb) = logits_and_gradients(with(end), &x, &y);
            assert!(la.equal(&lb), "{staged} vs {end} (bn {batchnorm}): logits");
            for ((name, a), (_, b)) in ga.iter().zip(&gb) {
                assert!(
                    a.equal(b),
                    "{staged} vs {end} (bn {batchnorm}): gradient of {name}"
                );
            }
        }
        let (mid, _) = logits_and_gradients(with(Layout::Staged(2)), &x, &y);
        for end in [Layout::Parallel, Layout::Sequential] {
            let (other, _) = logits_and_gradients(with(end), &x, &y);
            assert!(
                max_abs_diff(&mid, &other) > 1e-5,
                "staged-2 differs from {end}"
            );
        }
    }
}

#[test]
fn every_number_of_stages_has_the_same_parameters_and_initial_weights() {
    let layouts = [
        Layout::Sequential,
        Layout::Staged(2),
        Layout::Staged(3),
        Layout::Parallel,
    ];
    for batchnorm in [false, true] {
        let (vs0, _) = build(
            Architecture {
                batchnorm,
                ..arch(Layout::Staged(6), 6, 3, 3)
            },
            9,
        );
        for layout in layouts {
            let a = Architecture {
                batchnorm,
                ..arch(layout, 6, 3, 3)
            };
            let (vs, _) = build(a, 9);
            assert_eq!(parameter_count(&vs), parameter_count(&vs0), "{layout}");
            assert_eq!(parameter_count(&vs), expected_params(&a), "{layout}");
            for (name, t) in vs0.variables() {
                assert!(t.equal(&var(&vs, &name)), "{layout}: initial {name}");
            }
        }
    }
}

#[test]
fn invalid_architectures_are_rejected() {
    let vs = nn::VarStore::new(Device::Cpu);
    let uneven = arch(Layout::Staged(3), 4, 2, 3);
    let err = Net::new(&vs.root(), uneven, 0).err().unwrap().to_string();
    assert!(
        err.contains("staged-3 needs a number of layers divisible by 3, got 4"),
        "{err}"
    );
    for bad in ["staged-0", "staged", "staged-x", "deep"] {
        let err = bad.parse::<Layout>().unwrap_err();
        assert!(
            err.contains("expected sequential, parallel or staged-D"),
            "{bad}: {err}"
        );
    }
    assert_eq!("staged-12".parse::<Layout>(), Ok(Layout::Staged(12)));
    assert_eq!(Layout::Staged(12).to_string(), "staged-12");
    let even = arch(Layout::Parallel, 2, 2, 4);
    let vs = nn::VarStore::new(Device::Cpu);
    let err = Net::new(&vs.root(), even, 0).err().unwrap().to_string();
    assert!(err.contains("kernel must be odd"), "{err}");
    let too_big = arch(Layout::Parallel, 2, 2, 7);
    assert!(Net::new(&vs.root(), too_big, 0).is_err());
}
