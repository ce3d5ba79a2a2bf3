//! Training on digits' own CPU engine ([`crate::cpu`]): the loss's gradient, and the Adam,
//! AdamW and SGD updates, each in one pass over a parameter, as PyTorch takes them.
//!
//! `Trainer` takes this path whenever it computes what Burn's would (`super::engine`
//! decides), and the same reference tests hold both to PyTorch's numbers.

use std::sync::{Mutex, PoisonError};

use crate::cpu::pair::{self, Side};
use crate::cpu::simd::with_avx2;
use crate::cpu::{Network, TrainingPass};
use crate::data::{Batch, NUM_CLASSES};
use crate::model::{Plan, Weights, WeightsError, weights};

use super::state::{EXP_AVG, EXP_AVG_SQ, MOMENTUM_BUFFER, OptimizerState};
use super::{NOT_DIGIT_WEIGHT, Optimizer};

/// PyTorch's Adam defaults (digits uses PyTorch's epsilon on both paths).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

/// The seed whose streams unseeded passes draw dropout from, one stream per pass.
const UNSEEDED: u64 = 0x5EED;

/// A network being trained on the CPU engine, with its optimizer's state.
pub(crate) struct FusedTrainer {
    network: Network,
    optimizer: Optimizer,
    label_smoothing: f32,
    /// Per parameter: Adam's two moments, or SGD's momentum buffer (empty until the first
    /// step, which starts it from the gradient, as PyTorch does).
    moments: Vec<[Vec<f32>; 2]>,
    /// Adam's steps taken (its bias correction needs them).
    steps: u64,
    /// Seeds dropout in passes that were given no seed.
    unseeded_passes: u64,
    /// The batch's digits then the marks that are no digit, when there are marks.
    inputs: Vec<f32>,
    d_logits: Vec<f32>,
}

impl FusedTrainer {
    pub fn new(
        plan: &Plan,
        weights: Weights,
        optimizer: Optimizer,
        label_smoothing: f64,
    ) -> Result<Self, WeightsError> {
        let network = Network::new(plan, weights)?;
        Ok(Self {
            moments: network
                .params()
                .iter()
                .map(|_| Default::default())
                .collect(),
            network,
            optimizer,
            label_smoothing: label_smoothing as f32,
            steps: 0,
            unseeded_passes: 0,
            inputs: Vec::new(),
            d_logits: Vec::new(),
        })
    }

    /// Forward and backward on `batch` and on `not_digits` (images pushed towards equal
    /// probabilities), leaving the gradients in place; returns the loss as Burn's path
    /// computes it. Without `seed`, dropout draws masks no other pass repeats. Batch norm's
    /// running statistics take in the batch only with `track_running`.
    pub fn backward(
        &mut self,
        batch: &Batch,
        not_digits: &[f32],
        seed: Option<u64>,
        track_running: bool,
    ) -> f32 {
        let seed = seed.unwrap_or_else(|| {
            self.unseeded_passes += 1;
            crate::cpu::mix_seed(UNSEEDED, self.unseeded_passes)
        });
        let pass = TrainingPass {
            seed,
            track_running,
        };
        let pixels = if not_digits.is_empty() {
            &batch.pixels[..]
        } else {
            self.inputs.clear();
            self.inputs.extend_from_slice(&batch.pixels);
            self.inputs.extend_from_slice(not_digits);
            &self.inputs[..]
        };
        let logits = self.network.forward_train(pixels, pass);
        let loss = loss_gradient(
            logits,
            &batch.labels,
            self.label_smoothing,
            &mut self.d_logits,
        );
        self.network.backward(&self.d_logits);
        loss
    }

    /// One optimizer step with learning rate `lr`; returns the loss before the step.
    pub fn step(&mut self, batch: &Batch, not_digits: &[f32], lr: f64, seed: Option<u64>) -> f32 {
        let loss = self.backward(batch, not_digits, seed, true);
        let lr = lr as f32;
        self.steps += 1;
        let cuts = self.network.parameter_cuts();
        let params = self.network.params_mut();
        match self.optimizer {
            Optimizer::Adam { weight_decay } | Optimizer::AdamW { weight_decay } => {
                let decay = weight_decay as f32;
                let decoupled = matches!(self.optimizer, Optimizer::AdamW { .. });
                let update = AdamUpdate {
                    shrink: if decoupled { 1.0 - lr * decay } else { 1.0 },
                    l2: if decoupled { 0.0 } else { decay },
                    step_size: lr / (1.0 - BETA1.powi(self.steps as i32)),
                    correction2: (1.0 - BETA2.powi(self.steps as i32)).sqrt(),
                };
                // Each parameter cut where the engine's passes cut it, so that each core
                // updates the rows it computes (every value's update is the same either way).
                let mut sides: [Vec<_>; 2] = Default::default();
                for (i, (param, [m, v])) in params.iter_mut().zip(&mut self.moments).enumerate() {
                    m.resize(param.value.len(), 0.0);
                    v.resize(param.value.len(), 0.0);
                    let cut = cuts.as_ref().map_or(param.value.len(), |(cuts, _)| cuts[i]);
                    let (p, p2) = param.value.split_at_mut(cut);
                    let (g, g2) = param.grad.split_at(cut);
                    let (m, m2) = m.split_at_mut(cut);
                    let (v, v2) = v.split_at_mut(cut);
                    sides[0].push((p, g, m, v));
                    sides[1].push((p2, g2, m2, v2));
                }
                // Each side's pieces behind a lock of their own, only to hand them mutably to
                // the side's thread through a shared closure; no two threads take one lock.
                let sides = sides.map(Mutex::new);
                let update_side = |side: Side| {
                    let mut pieces = sides[side.index()]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for (p, g, m, v) in pieces.iter_mut() {
                        adam_update(&update, p, g, m, v);
                    }
                };
                match cuts {
                    Some((_, cores)) => _ = pair::run(cores, &[&update_side]),
                    None => Side::BOTH.into_iter().for_each(update_side),
                }
            }
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => {
                let (momentum, decay) = (momentum as f32, weight_decay as f32);
                for (param, [buffer, _]) in params.iter_mut().zip(&mut self.moments) {
                    let gradients = param.grad.iter().zip(param.value.iter_mut());
                    if momentum == 0.0 {
                        gradients.for_each(|(g, p)| *p -= lr * (g + decay * *p));
                    } else if buffer.is_empty() {
                        buffer.extend(gradients.map(|(g, p)| {
                            let g = g + decay * *p;
                            *p -= lr * g;
                            g
                        }));
                    } else {
                        for ((g, p), b) in gradients.zip(buffer.iter_mut()) {
                            *b = momentum * *b + g + decay * *p;
                            *p -= lr * *b;
                        }
                    }
                }
            }
        }
        loss
    }

    /// The weights (batch norm's running statistics included), or the latest gradients.
    pub fn tensors(&self, gradients: bool) -> Weights {
        self.network.tensors(gradients)
    }

    /// The moments of each kind the optimizer keeps, and its step count, under PyTorch's names.
    pub fn state(&self) -> OptimizerState {
        let mut state = OptimizerState {
            tensors: Weights::new(),
            step: match self.optimizer {
                Optimizer::Sgd { .. } => 0,
                Optimizer::Adam { .. } | Optimizer::AdamW { .. } => self.steps,
            },
        };
        for &(kind, slot) in self.kinds() {
            let moments: Weights = self
                .network
                .params()
                .iter()
                .zip(&self.moments)
                .filter(|(_, moments)| !moments[slot].is_empty())
                .map(|(param, moments)| {
                    let tensor = crate::model::NamedTensor {
                        shape: param.shape.clone(),
                        values: moments[slot].clone(),
                    };
                    (param.name.clone(), tensor)
                })
                .collect();
            state.insert_moments(kind, moments);
        }
        state
    }

    /// The kinds of moment this optimizer keeps, each with its slot in `moments`.
    fn kinds(&self) -> &'static [(&'static str, usize)] {
        match self.optimizer {
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => &[(EXP_AVG, 0), (EXP_AVG_SQ, 1)],
            Optimizer::Sgd { momentum, .. } if momentum != 0.0 => &[(MOMENTUM_BUFFER, 0)],
            Optimizer::Sgd { .. } => &[],
        }
    }

    /// Restores a state saved for the same network. A state without this optimizer's moments
    /// (kept by another optimizer) leaves it starting fresh.
    pub fn restore(&mut self, state: &OptimizerState) -> Result<(), WeightsError> {
        let kinds: Vec<&str> = self.kinds().iter().map(|(kind, _)| *kind).collect();
        let mut saved = state.of_kinds(&kinds);
        if saved.is_empty() {
            return Ok(());
        }
        let kinds_and_slots = self.kinds();
        for (param, moments) in self.network.params().iter().zip(&mut self.moments) {
            for &(kind, slot) in kinds_and_slots {
                let name = format!("{}.{kind}", param.name);
                moments[slot] = weights::take(&mut saved, &name, &param.shape)?;
            }
        }
        weights::ensure_consumed(&saved)?;
        if matches!(
            self.optimizer,
            Optimizer::Adam { .. } | Optimizer::AdamW { .. }
        ) {
            self.steps = state.step;
        }
        Ok(())
    }
}

/// One Adam step's constants, as PyTorch's Adam (`l2`: weight decay added to the gradient)
/// and AdamW (`shrink`: the weights scaled by `1 - lr * decay` first) take them.
struct AdamUpdate {
    shrink: f32,
    l2: f32,
    /// `lr / (1 - β1^t)`.
    step_size: f32,
    /// `sqrt(1 - β2^t)`.
    correction2: f32,
}

with_avx2! {
    /// Updates one parameter and its moments: a dozen operations per value, a square root and
    /// a division among them, 8 values at a time with AVX2 (the same results: every operation
    /// is IEEE-exact either way and none is fused). The tutorial epoch went from 1.0 s to 0.8 s.
    fn adam_update(update: &AdamUpdate, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let moments = m.iter_mut().zip(v.iter_mut());
        for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(moments) {
            let g = g + update.l2 * *p;
            *p *= update.shrink;
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *p -= update.step_size * *m / (v.sqrt() / update.correction2 + EPSILON);
        }
    }
}

/// The loss Burn's path computes, and its gradient with respect to `logits` in `d_logits`:
/// the mean cross-entropy over the `labels.len()` digits (with labels smoothed by
/// `smoothing`), plus, for each row after them (a mark that is no digit), `NOT_DIGIT_WEIGHT`
/// times the mean of `-log p` over the ten classes.
fn loss_gradient(logits: &[f32], labels: &[i64], smoothing: f32, d_logits: &mut Vec<f32>) -> f32 {
    let digits = labels.len();
    let marks = logits.len() / NUM_CLASSES - digits;
    d_logits.clear();
    d_logits.extend_from_slice(logits);
    let mut digit_loss = 0.0;
    let mut mark_loss = 0.0;
    for (i, row) in d_logits.chunks_exact_mut(NUM_CLASSES).enumerate() {
        let log_p = crate::cpu::log_softmax(row);
        if let Some(&label) = labels.get(i) {
            let off = smoothing / NUM_CLASSES as f32;
            for (j, v) in row.iter_mut().enumerate() {
                let target = off
                    + if j == label as usize {
                        1.0 - smoothing
                    } else {
                        0.0
                    };
                digit_loss -= target * log_p[j];
                *v = (log_p[j].exp() - target) / digits as f32;
            }
        } else {
            let scale = NOT_DIGIT_WEIGHT / marks as f32;
            for (j, v) in row.iter_mut().enumerate() {
                mark_loss -= log_p[j] / NUM_CLASSES as f32;
                *v = scale * (log_p[j].exp() - 1.0 / NUM_CLASSES as f32);
            }
        }
    }
    let mut loss = digit_loss / digits as f32;
    if marks > 0 {
        loss += NOT_DIGIT_WEIGHT * mark_loss / marks as f32;
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_gradient_matches_finite_differences_with_smoothing_and_marks() {
        let logits: Vec<f32> = (0..3 * NUM_CLASSES)
            .map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let labels = [3, 7];
        let mut gradient = Vec::new();
        loss_gradient(&logits, &labels, 0.1, &mut gradient);
        let mut scratch = Vec::new();
        for i in 0..logits.len() {
            let h = 1e-2;
            let mut shifted = logits.clone();
            shifted[i] += h;
            let up = loss_gradient(&shifted, &labels, 0.1, &mut scratch) as f64;
            shifted[i] -= 2.0 * h;
            let down = loss_gradient(&shifted, &labels, 0.1, &mut scratch) as f64;
            let numeric = (up - down) / (2.0 * h as f64);
            assert!(
                (numeric - gradient[i] as f64).abs() < 1e-3,
                "logit {i}: numeric {numeric}, analytic {}",
                gradient[i]
            );
        }
    }
}
