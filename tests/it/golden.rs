//! A run's identity pinned: its id and pair id, the initial weights a seed gives and the first
//! losses of a fixed run are literal values here. A deliberate change to any of them — the id
//! hashing, the init, the random-number crates (rand 0.9 changed its samplers), the data order —
//! must fail this test, because every recorded sweep depends on them: a resumed sweep would mix
//! runs of the old and the new behaviour under the same ids.
use crate::common;

use common::{run_config, write_idx_dataset};
use shallow::data;
use shallow::model::{Activation, Architecture, Head, Layout, Net, Pool};
use shallow::sweep::store::identity::{pair_id, run_id};
use shallow::train::{self, Observer, RunConfig, Step};
use tch::{Device, Kind, nn};

#[test]
fn run_and_pair_ids_are_pinned() {
    let seq = run_config("mnist", Layout::Sequential);
    let par = run_config("mnist", Layout::Parallel);
    let bf16 = RunConfig {
        precision: shallow::model::Precision::Bf16,
        ..seq.clone()
    };
    let ids = [run_id(&seq), run_id(&par), pair_id(&seq), run_id(&bf16)];
    assert_eq!(
        ids,
        [
            "dbb2b4f59deede43",
            "37d0039f73e2c37e",
            "104055c1a7fe988a",
            "b0e1c515a986a923"
        ]
    );
    assert_eq!(pair_id(&seq), pair_id(&par));
}

fn arch(batchnorm: bool) -> Architecture {
    Architecture {
        layout: Layout::Sequential,
        input: [1, 28, 28],
        classes: 10,
        layers: 3,
        filters: 4,
        kernel: 3,
        activation: Activation::Relu,
        pool: Pool::None,
        batchnorm,
        head: Head::Flatten,
    }
}

/// Sum of every variable and the first value of each, by name, in f64.
fn fingerprint(vs: &nn::VarStore) -> Vec<(String, f64, f64)> {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(name, t)| {
            let t = t.to_kind(Kind::Double);
            let first = t.flatten(0, -1).double_value(&[0]);
            (name, t.sum(Kind::Double).double_value(&[]), first)
        })
        .collect()
}

/// (name, sum, first value) of seed 0's variables for L=3, F=4, k=3 on 28×28, without and with
/// batch norm (its nets have no unit bias, so the head draws later values of the stream).
const INIT: [&[(&str, f64, f64)]; 2] = [
    &[
        ("head.bias", -0.02486699726432562, 0.011791578494012356),
        ("head.weight", 1.8678416519953203, 0.002208031713962555),
        ("stem.bias", -0.36300504580140114, 0.048577263951301575),
        ("stem.weight", 2.604509907774627, 0.13938361406326294),
        ("units.bias", -0.23116173781454563, -0.11778432875871658),
        ("units.weight", -2.5740534134674817, -0.00396683206781745),
    ],
    &[
        ("head.bias", -0.011820330168120563, 0.007674514781683683),
        ("head.weight", 1.8409473751791552, -0.012619749642908573),
        ("stem.bias", -0.36300504580140114, 0.048577263951301575),
        ("stem.weight", 2.604509907774627, 0.13938361406326294),
        ("units.bn.bias", 0.0, 0.0),
        ("units.bn.running_mean", 0.0, 0.0),
        ("units.bn.running_var", 12.0, 1.0),
        ("units.bn.weight", 12.0, 1.0),
        ("units.weight", -2.5740534134674817, -0.00396683206781745),
    ],
];

#[test]
fn seed_zero_initial_weights_are_pinned() {
    for (batchnorm, expected) in [false, true].into_iter().zip(INIT) {
        let vs = nn::VarStore::new(Device::Cpu);
        Net::new(&vs.root(), arch(batchnorm), 0).unwrap();
        let got = fingerprint(&vs);
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for ((name, sum, first), (want_name, want_sum, want_first)) in got.iter().zip(expected) {
            assert_eq!(name, want_name);
            // Summed in f64 from the same f32 values: equal up to the last bits.
            assert!(
                (sum - want_sum).abs() <= 1e-12 * want_sum.abs().max(1.0),
                "{name}: {sum}"
            );
            assert_eq!(first, want_first, "{name}");
        }
    }
}

#[test]
fn first_losses_of_a_fixed_run_are_pinned() {
    struct Losses(Vec<f64>);
    impl Observer for Losses {
        fn step(&mut self, step: &Step) {
            self.0.push(step.loss.double_value(&[]));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    write_idx_dataset(&tmp.path().join("golden"), 64, 16, 8, true);
    let raw = data::load(tmp.path(), "golden").unwrap();
    let tensors = data::prepare(&raw, &data::Selection::all(), Device::Cpu).unwrap();
    let cfg = RunConfig {
        layers: 2,
        filters: 3,
        batch_size: 16,
        epochs: 2,
        seed: 7,
        train_limit: None,
        val_limit: None,
        ..run_config("golden", Layout::Parallel)
    };
    let mut losses = Losses(Vec::new());
    train::train(&cfg, &tensors, Device::Cpu, &mut losses).unwrap();
    // Two epochs of 4 steps. Tolerance: another CPU's kernels may round differently.
    let expected = [
        2.2662737369537354,
        2.314851760864258,
        2.4095804691314697,
        2.370204448699951,
        2.257122039794922,
        2.2171664237976074,
        2.2934184074401855,
        2.271953582763672,
    ];
    assert_eq!(losses.0.len(), expected.len());
    for (step, (got, want)) in losses.0.iter().zip(expected).enumerate() {
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "step {step}: {got} vs {want}"
        );
    }
}
