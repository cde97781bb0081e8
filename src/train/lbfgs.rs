//! L-BFGS, the quasi-Newton ("second-order") method the paper suggests for future work: a port
//! of `torch.optim.LBFGS` (itself after minFunc) with its strong-Wolfe line search, step for step
//! (checked against PyTorch by the trace replay). libtorch's C++ API has an L-BFGS, but tch does
//! not expose it, and its line search differs from Python's in details the replay would see.
//!
//! Each call of [`Lbfgs::step`] runs up to `max_iter` iterations on one minibatch through a
//! closure that computes its loss and gradients; the curvature history carries over from step to
//! step, as in PyTorch.
use std::collections::HashMap;

use anyhow::{Context, Result, ensure};
use tch::{Kind, Tensor};

/// `torch.optim.LBFGS`'s defaults, and the strong-Wolfe constants of its line search.
const TOLERANCE_GRAD: f64 = 1e-7;
const TOLERANCE_CHANGE: f64 = 1e-9;
const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LS: usize = 25;

pub struct Lbfgs {
    params: Vec<Tensor>,
    lr: f64,
    max_iter: usize,
    max_eval: usize,
    history_size: usize,
    line_search: bool,
    n_iter: usize,
    d: Option<Tensor>,
    t: f64,
    old_dirs: Vec<Tensor>,
    old_stps: Vec<Tensor>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Tensor>,
}

/// The loss and the flat gradient at the parameters' current values.
type Evaluation = (f64, Tensor);

impl Lbfgs {
    /// Over `params` (trainable, in a fixed order), `max_iter` iterations per step at most,
    /// `history` curvature pairs, with or without the strong-Wolfe line search.
    pub fn new(
        params: Vec<Tensor>,
        lr: f64,
        max_iter: usize,
        history: usize,
        line_search: bool,
    ) -> Lbfgs {
        Lbfgs {
            params,
            lr,
            max_iter,
            max_eval: max_iter * 5 / 4,
            history_size: history,
            line_search,
            n_iter: 0,
            d: None,
            t: 0.0,
            old_dirs: Vec::new(),
            old_stps: Vec::new(),
            ro: Vec::new(),
            h_diag: 1.0,
            prev_flat_grad: None,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// What the next steps depend on besides the parameters, as named tensors (a checkpoint's
    /// part): the iteration count, the last direction and step, the curvature history and the
    /// last gradient.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![
            (
                "n_iter".to_owned(),
                Tensor::from_slice(&[self.n_iter as i64]),
            ),
            (
                "t_h_diag".to_owned(),
                Tensor::from_slice(&[self.t, self.h_diag]),
            ),
            ("ro".to_owned(), Tensor::from_slice(&self.ro)),
        ];
        let optional = [("d", &self.d), ("prev_flat_grad", &self.prev_flat_grad)];
        for (name, t) in optional {
            state.extend(t.as_ref().map(|t| (name.to_owned(), t.shallow_clone())));
        }
        for (i, (dir, stp)) in self.old_dirs.iter().zip(&self.old_stps).enumerate() {
            state.push((format!("old_dirs.{i}"), dir.shallow_clone()));
            state.push((format!("old_stps.{i}"), stp.shallow_clone()));
        }
        state
    }

    /// Takes back the [`Lbfgs::state`] of an optimizer over the same parameters (tensors moved
    /// to the parameters' device).
    pub fn restore(&mut self, state: &mut HashMap<String, Tensor>) -> Result<()> {
        let device = self.params.first().map_or(tch::Device::Cpu, Tensor::device);
        let mut take = |name: &str| state.remove(name).map(|t| t.to_device(device));
        let need = |t: Option<Tensor>, name: &str| t.with_context(|| format!("no L-BFGS {name}"));
        self.n_iter = usize::try_from(need(take("n_iter"), "n_iter")?.int64_value(&[0]))?;
        let t_h = Vec::<f64>::try_from(need(take("t_h_diag"), "step")?)?;
        ensure!(
            t_h.len() == 2,
            "L-BFGS step and scale: {} values",
            t_h.len()
        );
        (self.t, self.h_diag) = (t_h[0], t_h[1]);
        self.ro = Vec::<f64>::try_from(need(take("ro"), "ro")?)?;
        self.d = take("d");
        self.prev_flat_grad = take("prev_flat_grad");
        self.old_dirs.clear();
        self.old_stps.clear();
        for i in 0..self.ro.len() {
            self.old_dirs
                .push(need(take(&format!("old_dirs.{i}")), "history")?);
            self.old_stps
                .push(need(take(&format!("old_stps.{i}")), "history")?);
        }
        Ok(())
    }

    fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    fn flat_grad(&self) -> Tensor {
        let views: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.view(-1)
                } else {
                    p.zeros_like().view(-1)
                }
            })
            .collect();
        Tensor::cat(&views, 0)
    }

    /// The loss of `closure` (a forward pass returning the loss) with its gradients.
    fn evaluate(&self, closure: &mut dyn FnMut() -> Tensor) -> (Tensor, Evaluation) {
        self.zero_grad();
        let loss = tch::with_grad(|| {
            let loss = closure();
            loss.backward();
            loss
        });
        let value = loss.double_value(&[]);
        (loss, (value, self.flat_grad()))
    }

    fn add_grad(&self, step: f64, update: &Tensor) {
        tch::no_grad(|| {
            let mut offset = 0;
            for p in &self.params {
                let n = p.numel() as i64;
                let part = update.narrow(0, offset, n).view_as(p);
                let _ = p.shallow_clone().g_add_(&(part * step));
                offset += n;
            }
        });
    }

    fn clone_params(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.detach().copy()).collect()
    }

    fn set_params(&self, values: &[Tensor]) {
        tch::no_grad(|| {
            for (p, v) in self.params.iter().zip(values) {
                p.shallow_clone().copy_(v);
            }
        });
    }

    /// One optimisation step on the minibatch `closure` evaluates; returns its loss before the
    /// step (a scalar tensor).
    pub fn step(&mut self, closure: &mut dyn FnMut() -> Tensor) -> Tensor {
        let (orig_loss, (mut loss, mut flat_grad)) = self.evaluate(closure);
        let mut current_evals = 1;
        if max_abs(&flat_grad) <= TOLERANCE_GRAD {
            return orig_loss;
        }
        let mut n_iter = 0;
        while n_iter < self.max_iter {
            n_iter += 1;
            self.n_iter += 1;
            let d = self.direction(&flat_grad);
            self.prev_flat_grad = Some(flat_grad.copy());
            let prev_loss = loss;
            self.t = if self.n_iter == 1 {
                (1.0 / abs_sum(&flat_grad)).min(1.0) * self.lr
            } else {
                self.lr
            };
            let gtd = dot(&flat_grad, &d);
            if gtd > -TOLERANCE_CHANGE {
                self.d = Some(d);
                break;
            }
            let ls_evals;
            let mut opt_cond = false;
            if self.line_search {
                let x = self.clone_params();
                let (f, g, t, evals) = self.strong_wolfe(closure, &x, &d, (loss, &flat_grad), gtd);
                (loss, flat_grad, self.t, ls_evals) = (f, g, t, evals);
                self.add_grad(self.t, &d);
                opt_cond = max_abs(&flat_grad) <= TOLERANCE_GRAD;
            } else {
                self.add_grad(self.t, &d);
                ls_evals = usize::from(n_iter != self.max_iter);
                if n_iter != self.max_iter {
                    (loss, flat_grad) = self.evaluate(closure).1;
                    opt_cond = max_abs(&flat_grad) <= TOLERANCE_GRAD;
                }
            }
            current_evals += ls_evals;
            let moved = max_abs(&(&d * self.t));
            self.d = Some(d);
            if n_iter == self.max_iter
                || current_evals >= self.max_eval
                || opt_cond
                || moved <= TOLERANCE_CHANGE
                || (loss - prev_loss).abs() < TOLERANCE_CHANGE
            {
                break;
            }
        }
        orig_loss
    }

    /// The search direction from the gradient and the curvature history (two-loop recursion);
    /// the steepest descent in the very first iteration.
    fn direction(&mut self, flat_grad: &Tensor) -> Tensor {
        if self.n_iter == 1 {
            self.old_dirs.clear();
            self.old_stps.clear();
            self.ro.clear();
            self.h_diag = 1.0;
            return flat_grad.neg();
        }
        let prev = self.prev_flat_grad.as_ref().expect("a previous gradient");
        let y = flat_grad - prev;
        let s = self.d.as_ref().expect("a previous direction") * self.t;
        let ys = dot(&y, &s);
        if ys > 1e-10 {
            if self.old_dirs.len() == self.history_size {
                self.old_dirs.drain(..1);
                self.old_stps.drain(..1);
                self.ro.drain(..1);
            }
            self.h_diag = ys / dot(&y, &y);
            self.old_dirs.push(y);
            self.old_stps.push(s);
            self.ro.push(1.0 / ys);
        }
        let n = self.old_dirs.len();
        let mut al = vec![0.0; n];
        let q = flat_grad.neg();
        for i in (0..n).rev() {
            al[i] = dot(&self.old_stps[i], &q) * self.ro[i];
            let _ = q.shallow_clone().g_add_(&(&self.old_dirs[i] * -al[i]));
        }
        let r = q * self.h_diag;
        let pairs = self.old_dirs.iter().zip(&self.old_stps).zip(&self.ro);
        for (((y, s), ro), al_i) in pairs.zip(&al) {
            let be_i = dot(y, &r) * ro;
            let _ = r.shallow_clone().g_add_(&(s * (al_i - be_i)));
        }
        r
    }

    /// Loss and gradient at `x + t·d`; the parameters are put back to `x` afterwards.
    fn directional(
        &self,
        closure: &mut dyn FnMut() -> Tensor,
        x: &[Tensor],
        t: f64,
        d: &Tensor,
    ) -> Evaluation {
        self.add_grad(t, d);
        let evaluation = self.evaluate(closure).1;
        self.set_params(x);
        evaluation
    }

    /// `torch.optim.lbfgs._strong_wolfe`: a step length satisfying the strong Wolfe conditions,
    /// by bracketing and cubic interpolation. Returns the loss and gradient there, the step and
    /// the number of evaluations.
    fn strong_wolfe(
        &self,
        closure: &mut dyn FnMut() -> Tensor,
        x: &[Tensor],
        d: &Tensor,
        (f, g): (f64, &Tensor),
        gtd: f64,
    ) -> (f64, Tensor, f64, usize) {
        let start = Point::new(0.0, f, g.copy(), gtd);
        let mut search = Search {
            closure,
            x,
            d,
            start: &start,
            evals: 0,
            iterations: 0,
        };
        let (mut bracket, done) = search.bracket(self, self.t);
        if !done {
            search.zoom(self, &mut bracket);
        }
        let (low, _) = order(&bracket);
        let best = &bracket[low];
        (best.f, best.g.shallow_clone(), best.t, search.evals)
    }
}

/// One line search along `d` from the parameters `x`, whose loss, gradient and directional
/// derivative are `start`.
struct Search<'a> {
    closure: &'a mut dyn FnMut() -> Tensor,
    x: &'a [Tensor],
    d: &'a Tensor,
    start: &'a Point,
    evals: usize,
    iterations: usize,
}

impl Search<'_> {
    /// The trial step of length `t`.
    fn try_step(&mut self, opt: &Lbfgs, t: f64) -> Point {
        let (f, g) = opt.directional(self.closure, self.x, t, self.d);
        self.evals += 1;
        let gtd = dot(&g, self.d);
        Point::new(t, f, g, gtd)
    }

    /// Whether a trial step fails to decrease the loss enough (the Armijo condition).
    fn overshoots(&self, p: &Point) -> bool {
        p.f > self.start.f + C1 * p.t * self.start.gtd
    }

    /// Whether a trial step's slope is small enough (the strong curvature condition).
    fn flat(&self, p: &Point) -> bool {
        p.gtd.abs() <= -C2 * self.start.gtd
    }

    /// Grows the step from `t` until the Wolfe conditions hold (`done`) or an interval that
    /// holds such a step is bracketed.
    fn bracket(&mut self, opt: &Lbfgs, t: f64) -> (Vec<Point>, bool) {
        let mut new = self.try_step(opt, t);
        let mut prev = Point::new(0.0, self.start.f, self.start.g.copy(), self.start.gtd);
        while self.iterations < MAX_LS {
            if self.overshoots(&new) || (self.iterations > 1 && new.f >= prev.f) {
                return (vec![prev, new.copied()], false);
            }
            if self.flat(&new) {
                return (vec![new], true);
            }
            if new.gtd >= 0.0 {
                return (vec![prev, new.copied()], false);
            }
            let (min_step, max_step) = (new.t + 0.01 * (new.t - prev.t), new.t * 10.0);
            let t = cubic_interpolate(
                (prev.t, prev.f, prev.gtd),
                (new.t, new.f, new.gtd),
                Some((min_step, max_step)),
            );
            prev = new.copied();
            new = self.try_step(opt, t);
            self.iterations += 1;
        }
        let start = Point::new(0.0, self.start.f, self.start.g.copy(), f64::NAN);
        (vec![start, new.copied()], false)
    }

    /// Shrinks a bracket by cubic interpolation (with safeguards against steps too close to its
    /// ends) until a step satisfies the Wolfe conditions or the bracket is too small.
    fn zoom(&mut self, opt: &Lbfgs, bracket: &mut [Point]) {
        let (mut low, mut high) = order(bracket);
        let mut insufficient_progress = false;
        let d_norm = max_abs(self.d);
        while self.iterations < MAX_LS {
            let (lo_t, hi_t) = (
                bracket[0].t.min(bracket[1].t),
                bracket[0].t.max(bracket[1].t),
            );
            if (bracket[1].t - bracket[0].t).abs() * d_norm < TOLERANCE_CHANGE {
                return;
            }
            let (b0, b1) = (&bracket[0], &bracket[1]);
            let mut t = cubic_interpolate((b0.t, b0.f, b0.gtd), (b1.t, b1.f, b1.gtd), None);
            let eps = 0.1 * (hi_t - lo_t);
            if (hi_t - t).min(t - lo_t) < eps {
                if insufficient_progress || t >= hi_t || t <= lo_t {
                    t = if (t - hi_t).abs() < (t - lo_t).abs() {
                        hi_t - eps
                    } else {
                        lo_t + eps
                    };
                    insufficient_progress = false;
                } else {
                    insufficient_progress = true;
                }
            } else {
                insufficient_progress = false;
            }
            let new = self.try_step(opt, t);
            self.iterations += 1;
            if self.overshoots(&new) || new.f >= bracket[low].f {
                bracket[high] = new.copied();
                (low, high) = order(bracket);
                continue;
            }
            let done = self.flat(&new);
            if !done && new.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = new.copied();
            if done {
                return;
            }
        }
    }
}

/// A trial step of the line search: length, loss, gradient, directional derivative.
struct Point {
    t: f64,
    f: f64,
    g: Tensor,
    gtd: f64,
}

impl Point {
    fn new(t: f64, f: f64, g: Tensor, gtd: f64) -> Point {
        Point { t, f, g, gtd }
    }
}

impl Point {
    /// With a copy of its gradient (PyTorch's `clone()` where it keeps a gradient).
    fn copied(&self) -> Point {
        Point::new(self.t, self.f, self.g.copy(), self.gtd)
    }
}

impl Clone for Point {
    fn clone(&self) -> Point {
        Point::new(self.t, self.f, self.g.shallow_clone(), self.gtd)
    }
}

/// Indices of the bracket's lower-loss and higher-loss ends (the first on ties; a one-point
/// bracket is its own low end).
fn order(bracket: &[Point]) -> (usize, usize) {
    if bracket.len() < 2 || bracket[0].f <= bracket[bracket.len() - 1].f {
        (0, 1)
    } else {
        (1, 0)
    }
}

/// The minimiser of the cubic through two points with their derivatives, within `bounds` (by
/// default the points' interval); the middle when the cubic has none.
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.dot(b).double_value(&[])
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

fn abs_sum(t: &Tensor) -> f64 {
    t.abs().sum(Kind::Float).double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L-BFGS with the line search minimises a convex quadratic in a few iterations.
    #[test]
    fn minimises_a_quadratic() {
        let x = Tensor::from_slice(&[3.0f32, -2.0, 1.0]).set_requires_grad(true);
        let scale = Tensor::from_slice(&[1.0f32, 10.0, 100.0]);
        let mut opt = Lbfgs::new(vec![x.shallow_clone()], 1.0, 50, 10, true);
        let mut closure = || (&x * &x * &scale).sum(Kind::Float);
        for _ in 0..3 {
            let _ = opt.step(&mut closure);
        }
        let v = Vec::<f32>::try_from(x.detach()).unwrap();
        assert!(v.iter().all(|c| c.abs() < 1e-3), "{v:?}");
    }

    #[test]
    fn cubic_interpolation_finds_the_minimum_of_a_cubic() {
        // f(x) = (x − 1)², f' = 2(x − 1): the interpolant is exact, its minimum at 1.
        let f = |x: f64| (x - 1.0) * (x - 1.0);
        let g = |x: f64| 2.0 * (x - 1.0);
        let m = cubic_interpolate((0.0, f(0.0), g(0.0)), (3.0, f(3.0), g(3.0)), None);
        assert!((m - 1.0).abs() < 1e-12, "{m}");
    }
}
