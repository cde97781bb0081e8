//! The same computations on a CUDA GPU. Ignored by default (CI has no GPU); on a GPU machine:
//! `cargo test --release --test cuda -- --ignored` (scripts/gpu-check.sh runs them).
use crate::common;

use common::assert_bf16_within_tolerance_of_fp32;
use shallow::device::{self, DeviceChoice};
use shallow::model::{Activation, Architecture, Head, Layout, Net, Pool};
use tch::{Device, Kind, Tensor, nn};

#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_is_chosen_when_asked_for_and_by_auto() {
    assert_eq!(
        device::select_device(DeviceChoice::Cuda).unwrap(),
        Device::Cuda(0)
    );
    assert_eq!(
        device::select_device(DeviceChoice::Auto).unwrap(),
        Device::Cuda(0)
    );
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let b = b.to_device(Device::Cpu);
    (a - &b).abs().max().double_value(&[]) / a.abs().max().double_value(&[])
}

/// Logits and gradients of both layouts (with batch norm) agree between CPU and GPU, up to the
/// TF32 arithmetic cuDNN uses for f32 convolutions by default.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_logits_and_gradients_match_the_cpu() {
    device::load_cuda_backend();
    for layout in [Layout::Sequential, Layout::Parallel] {
        let a = Architecture {
            layout,
            input: [1, 28, 28],
            classes: 10,
            layers: 4,
            filters: 16,
            kernel: 3,
            activation: Activation::Relu,
            pool: Pool::None,
            batchnorm: true,
            head: Head::Flatten,
        };
        let x = Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        let run = |device: Device| {
            let vs = nn::VarStore::new(device);
            let net = Net::new(&vs.root(), a, 9).unwrap();
            let logits = net.forward(&x.to_device(device), true);
            shallow::train::cross_entropy(&logits, &y.to_device(device)).backward();
            let grad = vs.variables()["units.weight"].grad();
            (logits, grad)
        };
        let (cpu_logits, cpu_grad) = run(Device::Cpu);
        let (gpu_logits, gpu_grad) = run(Device::Cuda(0));
        let logits = relative_difference(&cpu_logits, &gpu_logits);
        let grads = relative_difference(&cpu_grad, &gpu_grad);
        assert!(logits < 1e-2, "{layout}: logits differ by {logits}");
        assert!(grads < 2e-2, "{layout}: gradients differ by {grads}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_training_matches_fp32_tolerance_in_bf16() {
    device::load_cuda_backend();
    assert_bf16_within_tolerance_of_fp32(Device::Cuda(0), &[Layout::Sequential, Layout::Parallel]);
}

/// A fused array of 3 members on the GPU: each member's logits equal its solo net's on the GPU
/// (both on cuDNN, so up to TF32 rounding of different algorithms), in every layout.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_fused_members_equal_their_solo_nets() {
    use shallow::model::fused::FusedNet;
    device::load_cuda_backend();
    let gpu = Device::Cuda(0);
    for layout in [Layout::Sequential, Layout::Staged(2), Layout::Parallel] {
        let a = Architecture {
            layout,
            input: [1, 28, 28],
            classes: 10,
            layers: 4,
            filters: 16,
            kernel: 3,
            activation: Activation::Relu,
            pool: Pool::None,
            batchnorm: true,
            head: Head::Flatten,
        };
        let seeds = [1u64, 2, 3];
        let fused = FusedNet::new(a, &seeds, gpu).unwrap();
        let xs = Tensor::randn([3, 8, 1, 28, 28], (Kind::Float, gpu));
        let logits = fused.forward(&FusedNet::interleave(&xs), true);
        for (m, &seed) in seeds.iter().enumerate() {
            let vs = nn::VarStore::new(gpu);
            let solo = Net::new(&vs.root(), a, seed).unwrap();
            let alone = solo.forward(&xs.get(m as i64), true);
            let d = relative_difference(&logits.get(m as i64).to_device(Device::Cpu), &alone);
            assert!(d < 1e-2, "{layout} member {m}: {d:e}");
        }
    }
}
