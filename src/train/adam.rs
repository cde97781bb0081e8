//! Adam for a fused array of members, each with its own learning rate and state: the same update
//! as libtorch's `torch::optim::Adam` (β = 0.9, 0.999, ε = 1e-8, no weight decay), applied to
//! every member's slice at once.
use tch::{Kind, Tensor};

use crate::model::fused::FusedNet;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

struct Slot {
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// The members' learning rates, shaped to broadcast over the variable along its member axis.
    lr: Tensor,
    member_axis: i64,
}

pub struct MemberAdam {
    slots: Vec<Slot>,
    steps: i32,
}

impl MemberAdam {
    /// One learning rate per member of `net`.
    pub fn new(net: &FusedNet, lrs: &[f64]) -> MemberAdam {
        let slots = net
            .trainable()
            .into_iter()
            .map(|var| {
                let param = var.tensor.shallow_clone();
                let mut shape = vec![1i64; param.dim()];
                shape[var.member_axis] = lrs.len() as i64;
                let lr = Tensor::from_slice(lrs)
                    .to_kind(Kind::Float)
                    .to_device(param.device())
                    .view(&shape[..]);
                Slot {
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    param,
                    lr,
                    member_axis: var.member_axis as i64,
                }
            })
            .collect();
        MemberAdam { slots, steps: 0 }
    }

    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            let mut grad = slot.param.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update of every member from its gradients.
    pub fn step(&mut self) {
        self.steps += 1;
        let bias1 = 1.0 - BETA1.powi(self.steps);
        let bias2 = 1.0 - BETA2.powi(self.steps);
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let grad = slot.param.grad();
                if !grad.defined() {
                    continue;
                }
                let _ = slot.exp_avg.g_mul_scalar_(BETA1);
                let _ = slot.exp_avg.g_add_(&(&grad * (1.0 - BETA1)));
                let _ = slot.exp_avg_sq.g_mul_scalar_(BETA2);
                let _ = slot.exp_avg_sq.g_add_(&(&grad * &grad * (1.0 - BETA2)));
                let denom = slot.exp_avg_sq.sqrt() / bias2.sqrt() + EPS;
                let update = (&slot.exp_avg / denom) * (&slot.lr / bias1);
                let _ = slot.param.g_sub_(&update);
            }
        });
    }

    /// Member `m`'s moments (views of its slices, first then second moment of every variable)
    /// and the step count all members share.
    pub fn member_state(&self, m: usize) -> (Vec<Tensor>, i32) {
        let slices = self
            .slots
            .iter()
            .flat_map(|s| [&s.exp_avg, &s.exp_avg_sq].map(|t| t.narrow(s.member_axis, m as i64, 1)))
            .collect();
        (slices, self.steps)
    }

    /// Sets the step count all members share (a resumed array's).
    pub fn set_steps(&mut self, steps: i32) {
        self.steps = steps;
    }

    /// Stops member `m` for good: its weights, state and learning rate set to zero, so that its
    /// slice computes finite zeros (whatever NaN it held) and never changes again.
    pub fn freeze(&mut self, m: usize) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let axis = slot.member_axis;
                for t in [&slot.param, &slot.exp_avg, &slot.exp_avg_sq, &slot.lr] {
                    let _ = t.narrow(axis, m as i64, 1).zero_();
                }
            }
        });
    }

    /// Member `m`'s learning rate from now on.
    pub fn set_lr(&mut self, m: usize, lr: f64) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let _ = slot.lr.narrow(slot.member_axis, m as i64, 1).fill_(lr);
            }
        });
    }
}
