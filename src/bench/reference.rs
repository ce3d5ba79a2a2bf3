//! The measuring stick for the tutorial workload: the tutorial MLP's forward pass,
//! cross-entropy, backward pass and Adam step written out by hand over a GEMM, with no
//! framework in between. It is what "close to the hardware" means at batch 32, and
//! `tests/reference.rs` holds it to PyTorch's numbers exactly as it holds the model.

use crate::data::{Batch, IMAGE_PIXELS, NUM_CLASSES};
use crate::model::{NamedTensor, Weights, WeightsError, weights};
use crate::train::fused::gemm;

const NAMES: [&str; 3] = ["hidden1", "hidden2", "output"];
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

/// One fully connected layer in PyTorch's layout, with its gradient and Adam's moments.
struct Layer {
    inputs: usize,
    outputs: usize,
    /// `[outputs, inputs]` then `[outputs]`, one buffer so one loop updates both.
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// The tutorial MLP (784-128-400-10, ReLU) trained with Adam, by hand.
pub struct ReferenceMlp {
    layers: Vec<Layer>,
    lr: f32,
    steps: i32,
    /// Each layer's input (activations), then the logits; reused across steps.
    activations: Vec<Vec<f32>>,
}

impl ReferenceMlp {
    /// From weights named as the tutorial's `Net` names them.
    pub fn new(mut weights: Weights, lr: f32) -> Result<Self, WeightsError> {
        let widths = [IMAGE_PIXELS, 128, 400, NUM_CLASSES];
        let mut layers = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let (inputs, outputs) = (widths[i], widths[i + 1]);
            let mut params =
                weights::take(&mut weights, &format!("{name}.weight"), &[outputs, inputs])?;
            params.extend(weights::take(
                &mut weights,
                &format!("{name}.bias"),
                &[outputs],
            )?);
            let len = params.len();
            layers.push(Layer {
                inputs,
                outputs,
                params,
                grads: vec![0.0; len],
                m: vec![0.0; len],
                v: vec![0.0; len],
            });
        }
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            layers,
            lr,
            steps: 0,
            activations: Vec::new(),
        })
    }

    /// `[n, 10]` logits of `n` images.
    pub fn forward(&mut self, pixels: &[f32]) -> &[f32] {
        let n = pixels.len() / IMAGE_PIXELS;
        self.activations.resize(self.layers.len() + 1, Vec::new());
        self.activations[0].clear();
        self.activations[0].extend_from_slice(pixels);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (before, after) = self.activations.split_at_mut(i + 1);
            let (x, y) = (&before[i], &mut after[0]);
            y.resize(n * layer.outputs, 0.0);
            let (weight, bias) = layer.params.split_at(layer.outputs * layer.inputs);
            // y = x · Wᵀ: W is [out, in] row-major, so Wᵀ has row stride 1, column stride in.
            gemm(
                [n, layer.inputs, layer.outputs],
                (x, layer.inputs, 1),
                (weight, 1, layer.inputs),
                y,
            );
            for row in y.chunks_exact_mut(layer.outputs) {
                for (value, b) in row.iter_mut().zip(bias) {
                    *value += b;
                    if i < last {
                        *value = value.max(0.0);
                    }
                }
            }
        }
        &self.activations[self.layers.len()]
    }

    /// Forward and backward on one batch, leaving the gradients in place; returns the mean
    /// cross-entropy.
    pub fn backward(&mut self, batch: &Batch) -> f32 {
        let n = batch.len();
        let logits = self.forward(&batch.pixels).to_vec();
        // d(mean CE)/d(logits) = (softmax - onehot) / n.
        let mut delta = logits;
        let mut loss = 0.0;
        for (row, &label) in delta.chunks_exact_mut(NUM_CLASSES).zip(&batch.labels) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row
                .iter_mut()
                .map(|v| {
                    *v = (*v - max).exp();
                    *v
                })
                .sum();
            loss -= (row[label as usize] / sum).ln();
            for v in row.iter_mut() {
                *v /= sum * n as f32;
            }
            row[label as usize] -= 1.0 / n as f32;
        }
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            let x = &self.activations[i];
            let weight = &layer.params[..layer.outputs * layer.inputs];
            let (grad_w, grad_b) = layer.grads.split_at_mut(layer.outputs * layer.inputs);
            // dW = deltaᵀ · x: [out, n] · [n, in].
            gemm(
                [layer.outputs, n, layer.inputs],
                (&delta, 1, layer.outputs),
                (x, layer.inputs, 1),
                grad_w,
            );
            grad_b.fill(0.0);
            for row in delta.chunks_exact(layer.outputs) {
                grad_b.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                // dx = delta · W, then through the ReLU that produced x.
                let mut dx = vec![0.0; n * layer.inputs];
                gemm(
                    [n, layer.outputs, layer.inputs],
                    (&delta, layer.outputs, 1),
                    (weight, layer.inputs, 1),
                    &mut dx,
                );
                dx.iter_mut().zip(x).for_each(|(d, &a)| {
                    if a <= 0.0 {
                        *d = 0.0
                    }
                });
                delta = dx;
            }
        }
        loss / n as f32
    }

    /// One training step (PyTorch's Adam); returns the batch's loss before it.
    pub fn step(&mut self, batch: &Batch) -> f32 {
        let loss = self.backward(batch);
        self.steps += 1;
        let correction1 = 1.0 - BETA1.powi(self.steps);
        let correction2 = (1.0 - BETA2.powi(self.steps)).sqrt();
        let step_size = self.lr / correction1;
        for layer in &mut self.layers {
            for (((p, g), m), v) in layer
                .params
                .iter_mut()
                .zip(&layer.grads)
                .zip(&mut layer.m)
                .zip(&mut layer.v)
            {
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                *p -= step_size * *m / (v.sqrt() / correction2 + EPSILON);
            }
        }
        loss
    }

    /// The weights, or with `gradients` the latest gradients, under the tutorial's names.
    pub fn tensors(&self, gradients: bool) -> Weights {
        let mut out = Weights::new();
        for (name, layer) in NAMES.iter().zip(&self.layers) {
            let values = if gradients {
                &layer.grads
            } else {
                &layer.params
            };
            let (weight, bias) = values.split_at(layer.outputs * layer.inputs);
            out.insert(
                format!("{name}.weight"),
                NamedTensor {
                    shape: vec![layer.outputs, layer.inputs],
                    values: weight.to_vec(),
                },
            );
            out.insert(
                format!("{name}.bias"),
                NamedTensor {
                    shape: vec![layer.outputs],
                    values: bias.to_vec(),
                },
            );
        }
        out
    }
}
