//! A fused CPU path for MLPs: forward, cross-entropy, backward and the optimizer step written
//! out over a GEMM, with every buffer allocated once.
//!
//! At the tutorial's batch of 32 the arithmetic is small (a step is about 30 MFLOP) and a
//! framework's per-operation cost dominates: Burn's path spent about 70% of a step outside
//! matrix products (PERFORMANCE.md). `Trainer` takes this path whenever it computes exactly
//! what Burn's would (`super::engine::fused_path` decides), and the same reference tests hold
//! it to PyTorch's numbers.

use crate::data::{Batch, IMAGE_PIXELS, NUM_CLASSES};
use crate::model::{
    Activation, Layer, NamedTensor, Normalization, Plan, Weights, WeightsError, weights,
};

use super::engine::{FusedOptimizer, WhyBurn};
use super::state::{EXP_AVG, EXP_AVG_SQ, OptimizerState};

/// PyTorch's Adam defaults (digits uses PyTorch's epsilon on both paths).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

/// `c[m×n] = a[m×k] · b[k×n]`, each matrix given with its row and column strides.
pub(crate) fn gemm(
    [m, k, n]: [usize; 3],
    (a, a_rows, a_cols): (&[f32], usize, usize),
    (b, b_rows, b_cols): (&[f32], usize, usize),
    c: &mut [f32],
) {
    assert!(c.len() >= m * n);
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_rows + (k - 1) * a_cols);
    assert!(k == 0 || n == 0 || b.len() > (k - 1) * b_rows + (n - 1) * b_cols);
    // SAFETY: the asserts above keep every element the strides reach inside its slice, and
    // `c` (borrowed mutably) cannot alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_rows as isize,
            a_cols as isize,
            b.as_ptr(),
            b_rows as isize,
            b_cols as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// One layer: weight `[outputs, inputs]` then bias, in one buffer so one loop updates both.
struct Dense {
    name: String,
    inputs: usize,
    outputs: usize,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// Adam's first and second moments; empty for SGD.
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl Dense {
    fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }
}

/// An MLP being trained on the fused path.
pub(crate) struct FusedMlp {
    layers: Vec<Dense>,
    activation: DenseActivation,
    normalization: Option<Normalization>,
    optimizer: FusedOptimizer,
    /// Adam steps taken (its bias correction needs them).
    steps: u64,
    /// The input, then each layer's output (after the activation, except the logits).
    outputs: Vec<Vec<f32>>,
    /// Gradients flowing back: one buffer per layer output.
    deltas: Vec<Vec<f32>>,
}

/// The layers of a plan that the fused path computes: flatten, then fully connected layers
/// with one ReLU, sigmoid or tanh between each, and no dropout.
pub(crate) struct DenseStack {
    /// `(name, inputs, outputs)` of each layer.
    layers: Vec<(String, usize, usize)>,
    activation: DenseActivation,
    normalization: Option<Normalization>,
}

/// The activations this path differentiates: those whose derivative follows from their
/// output, which is all it stores (GELU's needs the input).
#[derive(Clone, Copy, PartialEq)]
enum DenseActivation {
    Relu,
    Sigmoid,
    Tanh,
}

impl DenseStack {
    /// The plan's dense stack, or why the fused path cannot compute the plan.
    pub(crate) fn of(plan: &Plan) -> Result<Self, WhyBurn> {
        // Fully connected layers with activations between them: an odd count, ending in the
        // logits (the forward pass below applies no activation after the last layer).
        let [Layer::Flatten, rest @ ..] = plan.layers() else {
            return Err(WhyBurn::NotAnMlp);
        };
        if rest.len() % 2 == 0 {
            return Err(WhyBurn::NotAnMlp);
        }
        let mut layers = Vec::new();
        let mut activation = None;
        for (i, layer) in rest.iter().enumerate() {
            match (i % 2, layer) {
                (
                    0,
                    Layer::Linear {
                        name,
                        inputs,
                        outputs,
                    },
                ) => layers.push((name.clone(), *inputs, *outputs)),
                (1, Layer::Activation(f)) => {
                    let f = match f {
                        Activation::Relu => DenseActivation::Relu,
                        Activation::Sigmoid => DenseActivation::Sigmoid,
                        Activation::Tanh => DenseActivation::Tanh,
                        Activation::Gelu => return Err(WhyBurn::Activation),
                    };
                    if activation.is_some_and(|a| a != f) {
                        return Err(WhyBurn::Activation);
                    }
                    activation = Some(f);
                }
                (_, Layer::Dropout(_)) => return Err(WhyBurn::Dropout),
                _ => return Err(WhyBurn::NotAnMlp),
            }
        }
        Ok(Self {
            layers,
            activation: activation.unwrap_or(DenseActivation::Relu),
            normalization: plan.normalization(),
        })
    }
}

impl FusedMlp {
    pub fn new(
        stack: DenseStack,
        mut weights: Weights,
        optimizer: FusedOptimizer,
    ) -> Result<Self, WeightsError> {
        let count = stack.layers.len();
        let mut layers = Vec::with_capacity(count);
        for (name, inputs, outputs) in stack.layers {
            let mut params =
                weights::take(&mut weights, &format!("{name}.weight"), &[outputs, inputs])?;
            params.extend(weights::take(
                &mut weights,
                &format!("{name}.bias"),
                &[outputs],
            )?);
            let len = params.len();
            let moments = if optimizer == FusedOptimizer::Adam {
                len
            } else {
                0
            };
            layers.push(Dense {
                name,
                inputs,
                outputs,
                params,
                grads: vec![0.0; len],
                exp_avg: vec![0.0; moments],
                exp_avg_sq: vec![0.0; moments],
            });
        }
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            outputs: vec![Vec::new(); count + 1],
            deltas: vec![Vec::new(); count + 1],
            layers,
            activation: stack.activation,
            normalization: stack.normalization,
            optimizer,
            steps: 0,
        })
    }

    /// The forward pass on `pixels` (`[n, 784]`); leaves every layer's output in place.
    fn forward(&mut self, pixels: &[f32]) {
        let n = pixels.len() / IMAGE_PIXELS;
        let input = &mut self.outputs[0];
        input.clear();
        match self.normalization {
            Some(Normalization { mean, std }) => {
                input.extend(pixels.iter().map(|p| (p - mean) / std))
            }
            None => input.extend_from_slice(pixels),
        }
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (before, after) = self.outputs.split_at_mut(i + 1);
            let (x, y) = (&before[i], &mut after[0]);
            y.resize(n * layer.outputs, 0.0);
            let (weight, bias) = layer.params.split_at(layer.weight_len());
            // y = x · Wᵀ; W is row-major [out, in], so Wᵀ walks it with strides (1, in).
            gemm(
                [n, layer.inputs, layer.outputs],
                (x, layer.inputs, 1),
                (weight, 1, layer.inputs),
                y,
            );
            for row in y.chunks_exact_mut(layer.outputs) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                if i < last {
                    match self.activation {
                        DenseActivation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
                        DenseActivation::Sigmoid => {
                            row.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()))
                        }
                        DenseActivation::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
                    }
                }
            }
        }
    }

    /// Forward and backward on `batch`, leaving the gradients in place; returns the mean
    /// cross-entropy.
    pub fn backward(&mut self, batch: &Batch) -> f32 {
        self.forward(&batch.pixels);
        let n = batch.len();
        let count = self.layers.len();
        // d(mean cross-entropy)/d(logits) = (softmax − one-hot) / n.
        let mut loss = 0.0;
        let (logits, delta) = (&self.outputs[count], &mut self.deltas[count]);
        delta.clear();
        delta.extend_from_slice(logits);
        for (row, &label) in delta.chunks_exact_mut(NUM_CLASSES).zip(&batch.labels) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row
                .iter_mut()
                .map(|v| {
                    *v = (*v - max).exp();
                    *v
                })
                .sum();
            loss -= (row[label as usize] / sum).ln();
            row.iter_mut().for_each(|v| *v /= sum * n as f32);
            row[label as usize] -= 1.0 / n as f32;
        }
        for i in (0..count).rev() {
            let layer = &mut self.layers[i];
            let (below, above) = self.deltas.split_at_mut(i + 1);
            let (delta_in, delta) = (&mut below[i], &above[0]);
            let x = &self.outputs[i];
            let weight_len = layer.weight_len();
            let (grad_w, grad_b) = layer.grads.split_at_mut(weight_len);
            // dW = deltaᵀ · x: [out, n] · [n, in].
            gemm(
                [layer.outputs, n, layer.inputs],
                (delta, 1, layer.outputs),
                (x, layer.inputs, 1),
                grad_w,
            );
            grad_b.fill(0.0);
            for row in delta.chunks_exact(layer.outputs) {
                grad_b.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                // dx = delta · W, then back through the activation that produced x.
                delta_in.resize(n * layer.inputs, 0.0);
                gemm(
                    [n, layer.outputs, layer.inputs],
                    (delta, layer.outputs, 1),
                    (&layer.params[..weight_len], layer.inputs, 1),
                    delta_in,
                );
                match self.activation {
                    DenseActivation::Relu => delta_in.iter_mut().zip(x).for_each(|(d, &a)| {
                        if a <= 0.0 {
                            *d = 0.0
                        }
                    }),
                    DenseActivation::Sigmoid => delta_in
                        .iter_mut()
                        .zip(x)
                        .for_each(|(d, &a)| *d *= a * (1.0 - a)),
                    DenseActivation::Tanh => delta_in
                        .iter_mut()
                        .zip(x)
                        .for_each(|(d, &a)| *d *= 1.0 - a * a),
                }
            }
        }
        loss / n as f32
    }

    /// One optimizer step with learning rate `lr`, as PyTorch's Adam or SGD takes it; returns
    /// the batch's loss before the step.
    pub fn step(&mut self, batch: &Batch, lr: f64) -> f32 {
        let loss = self.backward(batch);
        let lr = lr as f32;
        match self.optimizer {
            FusedOptimizer::Adam => {
                self.steps += 1;
                let correction1 = 1.0 - BETA1.powi(self.steps as i32);
                let correction2 = (1.0 - BETA2.powi(self.steps as i32)).sqrt();
                let step_size = lr / correction1;
                for layer in &mut self.layers {
                    let moments = layer.exp_avg.iter_mut().zip(&mut layer.exp_avg_sq);
                    for ((p, g), (m, v)) in layer.params.iter_mut().zip(&layer.grads).zip(moments) {
                        *m = BETA1 * *m + (1.0 - BETA1) * g;
                        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                        *p -= step_size * *m / (v.sqrt() / correction2 + EPSILON);
                    }
                }
            }
            FusedOptimizer::Sgd => {
                for layer in &mut self.layers {
                    layer
                        .params
                        .iter_mut()
                        .zip(&layer.grads)
                        .for_each(|(p, g)| *p -= lr * g);
                }
            }
        }
        loss
    }

    /// The weights, or the latest gradients, in PyTorch's layout and names.
    pub fn tensors(&self, gradients: bool) -> Weights {
        self.per_layer(|layer| match gradients {
            true => &layer.grads,
            false => &layer.params,
        })
    }

    /// What `values` gives for each layer (weight then bias, as in [`Dense`]), under the
    /// layer's PyTorch names and in its layout.
    fn per_layer(&self, values: impl Fn(&Dense) -> &[f32]) -> Weights {
        let mut out = Weights::new();
        for layer in &self.layers {
            let (weight, bias) = values(layer).split_at(layer.weight_len());
            out.insert(
                format!("{}.weight", layer.name),
                NamedTensor {
                    shape: vec![layer.outputs, layer.inputs],
                    values: weight.to_vec(),
                },
            );
            out.insert(
                format!("{}.bias", layer.name),
                NamedTensor {
                    shape: vec![layer.outputs],
                    values: bias.to_vec(),
                },
            );
        }
        out
    }

    /// The update this path takes.
    pub fn optimizer(&self) -> FusedOptimizer {
        self.optimizer
    }

    /// The optimizer's state: Adam's moments under PyTorch's names, and its step count.
    pub fn state(&self) -> OptimizerState {
        let mut state = OptimizerState {
            tensors: Weights::new(),
            step: self.steps,
        };
        if self.optimizer == FusedOptimizer::Adam {
            state.insert_moments(EXP_AVG, self.per_layer(|layer| &layer.exp_avg));
            state.insert_moments(EXP_AVG_SQ, self.per_layer(|layer| &layer.exp_avg_sq));
        }
        state
    }

    /// Restores a state for the same architecture. SGD keeps no state, and Adam starts fresh
    /// from a state without Adam's moments (kept by another optimizer).
    pub fn restore(&mut self, state: &OptimizerState) -> Result<(), WeightsError> {
        let mut moments = state.of_kinds(&[EXP_AVG, EXP_AVG_SQ]);
        if self.optimizer != FusedOptimizer::Adam || moments.is_empty() {
            return Ok(());
        }
        for layer in &mut self.layers {
            let name = &layer.name;
            let shapes = [
                ("weight", vec![layer.outputs, layer.inputs]),
                ("bias", vec![layer.outputs]),
            ];
            for (kind, target) in [
                (EXP_AVG, &mut layer.exp_avg),
                (EXP_AVG_SQ, &mut layer.exp_avg_sq),
            ] {
                target.clear();
                for (parameter, shape) in &shapes {
                    let values =
                        weights::take(&mut moments, &format!("{name}.{parameter}.{kind}"), shape)?;
                    target.extend(values);
                }
            }
        }
        weights::ensure_consumed(&moments)?;
        self.steps = state.step;
        Ok(())
    }
}
