//! A fused CPU path for MLPs: forward, cross-entropy, backward and the optimizer step written
//! out over a GEMM, with every buffer allocated once.
//!
//! At the tutorial's batch of 32 the arithmetic is small (a step is about 30 MFLOP) and a
//! framework's per-operation cost dominates: Burn's path spent about 70% of a step outside
//! matrix products (PERFORMANCE.md). `Trainer` takes this path whenever it computes exactly
//! what Burn's would (an MLP without dropout, Adam without weight decay or plain SGD, no label
//! smoothing, on the CPU), and the same reference tests hold it to PyTorch's numbers.

use crate::data::{Batch, IMAGE_PIXELS, NUM_CLASSES};
use crate::model::{
    Activation, Layer, ModelConfig, NamedTensor, Normalization, Plan, Weights, WeightsError,
    weights,
};

use super::{Optimizer, TrainConfig};

/// PyTorch's Adam defaults (digits uses PyTorch's epsilon on both paths).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;
/// The name of the step count in a saved state.
const STEP: &str = "step";

/// `c[m×n] = a[m×k] · b[k×n]`, each matrix given with its row and column strides.
fn gemm(
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

/// The optimizers this path implements: PyTorch's Adam and plain SGD, neither with weight
/// decay. Other settings cannot be represented, so cannot be mistaken for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FusedOptimizer {
    Adam,
    Sgd,
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
/// with one ReLU or sigmoid between each, and no dropout.
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
    fn of(plan: &Plan) -> Option<Self> {
        let [Layer::Flatten, rest @ ..] = plan.layers() else {
            return None;
        };
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
                        Activation::Gelu => return None,
                    };
                    if activation.is_some_and(|a| a != f) {
                        return None;
                    }
                    activation = Some(f);
                }
                _ => return None,
            }
        }
        Some(Self {
            layers,
            activation: activation.unwrap_or(DenseActivation::Relu),
            normalization: plan.normalization(),
        })
    }
}

impl FusedMlp {
    /// The network's layers and the optimizer this path runs for this run, when it computes
    /// what Burn's would; `None` when the run needs Burn's path.
    pub fn applies(
        model: &ModelConfig,
        config: &TrainConfig,
        device: &burn::tensor::Device,
    ) -> Option<(DenseStack, FusedOptimizer)> {
        let optimizer = match config.optimizer {
            Optimizer::Adam { weight_decay } if weight_decay == 0.0 => FusedOptimizer::Adam,
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } if momentum == 0.0 && weight_decay == 0.0 => FusedOptimizer::Sgd,
            _ => return None,
        };
        let applies = config.engine == super::EngineChoice::Auto
            && config.label_smoothing == 0.0
            && config.not_digits == 0.0
            && *device == burn::tensor::Device::flex();
        let stack = DenseStack::of(&model.plan().ok()?)?;
        applies.then_some((stack, optimizer))
    }

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
        let mut out = Weights::new();
        for layer in &self.layers {
            let values = if gradients {
                &layer.grads
            } else {
                &layer.params
            };
            let (weight, bias) = values.split_at(layer.weight_len());
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

    /// The optimizer state as safetensors, named as PyTorch's Adam names it
    /// (`hidden1.weight.exp_avg`, ...) plus `step`.
    pub fn state(&self) -> Result<Vec<u8>, WeightsError> {
        let mut state = Weights::new();
        for layer in &self.layers {
            for (suffix, values) in [
                ("exp_avg", &layer.exp_avg),
                ("exp_avg_sq", &layer.exp_avg_sq),
            ] {
                if values.is_empty() {
                    continue;
                }
                let (weight, bias) = values.split_at(layer.weight_len());
                let tensor = |shape: Vec<usize>, values: &[f32]| NamedTensor {
                    shape,
                    values: values.to_vec(),
                };
                state.insert(
                    format!("{}.weight.{suffix}", layer.name),
                    tensor(vec![layer.outputs, layer.inputs], weight),
                );
                state.insert(
                    format!("{}.bias.{suffix}", layer.name),
                    tensor(vec![layer.outputs], bias),
                );
            }
        }
        weights::to_safetensors_bytes_with_counters(
            &state,
            &[(STEP.to_string(), self.steps as i64)],
        )
    }

    /// Restores a state written by [`FusedMlp::state`] for the same architecture. SGD keeps
    /// no state, and Adam starts fresh from a state that has no moments (written by SGD).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), WeightsError> {
        let origin = "optimizer state";
        let steps = weights::read_counter(bytes, STEP, origin)?.unwrap_or(0);
        let mut moments = weights::select_from_safetensors_bytes(bytes, origin, |name| {
            (name != STEP).then_some(name)
        })?;
        if self.optimizer != FusedOptimizer::Adam || moments.is_empty() {
            return Ok(());
        }
        for layer in &mut self.layers {
            for (suffix, target) in [
                ("exp_avg", &mut layer.exp_avg),
                ("exp_avg_sq", &mut layer.exp_avg_sq),
            ] {
                let mut values = weights::take(
                    &mut moments,
                    &format!("{}.weight.{suffix}", layer.name),
                    &[layer.outputs, layer.inputs],
                )?;
                values.extend(weights::take(
                    &mut moments,
                    &format!("{}.bias.{suffix}", layer.name),
                    &[layer.outputs],
                )?);
                *target = values;
            }
        }
        weights::ensure_consumed(&moments)?;
        self.steps = steps.max(0) as u64;
        Ok(())
    }
}
