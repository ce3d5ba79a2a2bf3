//! A naive baseline for the tutorial workload: the tutorial MLP's forward pass, softmax
//! cross-entropy, backward pass and Adam step as plain loops, with no framework, no GEMM
//! library and no code shared with the fused training path (`train::fused`), so that
//! `digits bench` sets digits beside something written independently of it.
//!
//! The loops are the textbook ones, ordered only so that the innermost runs along contiguous
//! memory (which lets the compiler vectorise it); nothing is blocked, packed or threaded. The
//! fused path's GEMM is therefore expected to beat it: the ratio says what the optimised path
//! gains over straightforward code, and a regression shows as that ratio rising. How close
//! digits comes to the machine is what the comparison with PyTorch says. `tests/reference.rs`
//! holds this baseline to PyTorch's numbers exactly as it holds the model, so a mistake in it
//! cannot flatter digits.

use crate::data::{Batch, IMAGE_PIXELS, NUM_CLASSES};
use crate::model::{NamedTensor, Weights, WeightsError, weights};

const NAMES: [&str; 3] = ["hidden1", "hidden2", "output"];
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

/// One fully connected layer, with its gradient and Adam's moments.
struct Layer {
    inputs: usize,
    outputs: usize,
    /// The weight as `[inputs, outputs]` (the transpose of PyTorch's layout, so that a row of
    /// the output is a sum of contiguous weight rows), then the bias `[outputs]`: one buffer,
    /// so one loop updates both.
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The tutorial MLP (784-128-400-10, ReLU) trained with Adam, in plain loops.
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
            let weight =
                weights::take(&mut weights, &format!("{name}.weight"), &[outputs, inputs])?;
            let mut params = transpose(&weight, outputs, inputs);
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
            // y[r] = bias + sum over j of x[r][j] * (row j of the weight).
            for (x_row, y_row) in x
                .chunks_exact(layer.inputs)
                .zip(y.chunks_exact_mut(layer.outputs))
            {
                y_row.copy_from_slice(bias);
                for (&x_j, w_row) in x_row.iter().zip(weight.chunks_exact(layer.outputs)) {
                    for (out, &w) in y_row.iter_mut().zip(w_row) {
                        *out += x_j * w;
                    }
                }
                if i < last {
                    y_row.iter_mut().for_each(|v| *v = v.max(0.0));
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
            let (weight, _) = layer.params.split_at(layer.outputs * layer.inputs);
            let (grad_w, grad_b) = layer.grads.split_at_mut(layer.outputs * layer.inputs);
            // dW[j] = sum over the batch of x[r][j] * delta[r]; db = sum of delta[r].
            grad_w.fill(0.0);
            grad_b.fill(0.0);
            for (x_row, d_row) in x
                .chunks_exact(layer.inputs)
                .zip(delta.chunks_exact(layer.outputs))
            {
                for (&x_j, g_row) in x_row.iter().zip(grad_w.chunks_exact_mut(layer.outputs)) {
                    for (g, &d) in g_row.iter_mut().zip(d_row) {
                        *g += x_j * d;
                    }
                }
                grad_b.iter_mut().zip(d_row).for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                // dx[r][j] = delta[r] · (row j of the weight), where the ReLU that produced
                // x[r][j] let it through.
                let mut dx = vec![0.0; n * layer.inputs];
                for ((dx_row, d_row), x_row) in dx
                    .chunks_exact_mut(layer.inputs)
                    .zip(delta.chunks_exact(layer.outputs))
                    .zip(x.chunks_exact(layer.inputs))
                {
                    for ((d_x, w_row), &a) in dx_row
                        .iter_mut()
                        .zip(weight.chunks_exact(layer.outputs))
                        .zip(x_row)
                    {
                        if a > 0.0 {
                            *d_x = d_row.iter().zip(w_row).map(|(d, w)| d * w).sum();
                        }
                    }
                }
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

    /// The weights, or with `gradients` the latest gradients, under the tutorial's names and
    /// in PyTorch's layout.
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
                    values: transpose(weight, layer.inputs, layer.outputs),
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
