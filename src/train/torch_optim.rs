//! libtorch's own optimizers (`torch::optim::Adam`, `AdamW`, `SGD`, the C++ updates of
//! `torch.optim`), driven exactly as tch's `nn::Optimizer` drives them, plus what tch does not
//! offer: their state written to bytes and read back (`cpp/optimizer_state.cpp`), so that a run
//! resumed from a checkpoint takes the same steps as one never stopped.
use std::ffi::{CStr, c_char};

use anyhow::{Result, bail};
use tch::{Tensor, nn};
use torch_sys::C_optimizer;

unsafe extern "C" {
    fn shallow_optimizer_save(
        opt: *mut C_optimizer,
        data: *mut *mut c_char,
        size: *mut usize,
    ) -> *mut c_char;
    fn shallow_optimizer_load(
        opt: *mut C_optimizer,
        data: *const c_char,
        size: usize,
    ) -> *mut c_char;
}

/// A libtorch optimizer over the trainable variables of one variable store.
pub struct TorchOptimizer {
    raw: *mut C_optimizer,
}

/// Which of libtorch's optimizers, with its hyperparameters (as `tch::nn`'s configs hold them).
pub enum Kind {
    Adam {
        wd: f64,
    },
    AdamW {
        wd: f64,
    },
    Sgd {
        momentum: f64,
        wd: f64,
        nesterov: bool,
    },
}

/// The message of libtorch's last error on this thread, if any (cleared).
fn last_error() -> Result<()> {
    // SAFETY: libtch returns null or a string allocated with malloc that the caller frees.
    unsafe { take_message(torch_sys::get_and_reset_last_err()) }
}

/// Turns a message allocated with malloc (null: none) into an error, freeing it.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string from malloc, not used again.
unsafe fn take_message(ptr: *mut c_char) -> Result<()> {
    if ptr.is_null() {
        return Ok(());
    }
    // SAFETY: as the caller promises.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated with malloc, freed once.
    unsafe { libc::free(ptr.cast()) };
    bail!("libtorch: {text}")
}

impl TorchOptimizer {
    /// The optimizer `kind` at rate `lr` over `vars`' trainable variables, in their order and
    /// groups (β = 0.9, 0.999, ε = 1e-8 for Adam and AdamW, as `tch::nn`'s defaults).
    pub fn new(kind: &Kind, vars: &nn::VarStore, lr: f64) -> Result<TorchOptimizer> {
        // SAFETY: plain constructors; errors are read right after.
        let raw = unsafe {
            match *kind {
                Kind::Adam { wd } => torch_sys::ato_adam(lr, 0.9, 0.999, wd, 1e-8, false),
                Kind::AdamW { wd } => torch_sys::ato_adamw(lr, 0.9, 0.999, wd, 1e-8, false),
                Kind::Sgd {
                    momentum,
                    wd,
                    nesterov,
                } => torch_sys::ato_sgd(lr, momentum, 0.0, wd, nesterov.into()),
            }
        };
        last_error()?;
        let opt = TorchOptimizer { raw };
        let variables = vars.variables_.lock().expect("variable store lock");
        for var in &variables.trainable_variables {
            // SAFETY: the optimizer keeps its own reference to the tensor.
            unsafe {
                torch_sys::ato_add_parameters(opt.raw, var.tensor.as_ptr().cast_mut(), var.group)
            };
            last_error()?;
        }
        Ok(opt)
    }

    pub fn set_lr(&mut self, lr: f64) {
        // SAFETY: a live optimizer.
        unsafe { torch_sys::ato_set_learning_rate(self.raw, lr) };
        last_error().expect("setting the learning rate");
    }

    /// Zeroes the gradients, back-propagates `loss` and updates the variables.
    pub fn backward_step(&mut self, loss: &Tensor) {
        // SAFETY: a live optimizer.
        unsafe { torch_sys::ato_zero_grad(self.raw) };
        last_error().expect("zeroing the gradients");
        loss.backward();
        // SAFETY: a live optimizer.
        unsafe { torch_sys::ato_step(self.raw) };
        last_error().expect("an optimizer step");
    }

    /// The optimizer's state (libtorch's archive format): per variable, Adam's moments and step
    /// count or SGD's momentum buffer, and the groups' options.
    pub fn state(&self) -> Result<Vec<u8>> {
        let mut data: *mut c_char = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: a live optimizer; on success `data` is a malloc'd buffer of `size` bytes.
        unsafe { take_message(shallow_optimizer_save(self.raw, &mut data, &mut size))? };
        // SAFETY: as above; copied, then freed once.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) }.to_vec();
        unsafe { libc::free(data.cast()) };
        Ok(bytes)
    }

    /// Replaces the state with `bytes` from [`TorchOptimizer::state`] of an optimizer of the same
    /// kind over variables of the same shapes.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        // SAFETY: a live optimizer and a buffer of `bytes.len()` bytes, read only.
        unsafe {
            take_message(shallow_optimizer_load(
                self.raw,
                bytes.as_ptr().cast(),
                bytes.len(),
            ))
        }
    }
}

impl Drop for TorchOptimizer {
    fn drop(&mut self) {
        // SAFETY: freed once, here.
        unsafe { torch_sys::ato_free(self.raw) };
    }
}
