//! digits' own CPU engine: a network plan's forward and backward passes written out over a
//! GEMM, with every layer's output and gradient buffer kept from one batch to the next.
//!
//! Burn's CPU backend pays for each tensor operation: an allocation, a pass over memory, and
//! for convolutions an im2col per call and generic backward passes built from other operations
//! (PERFORMANCE.md). Here a [`Plan`] is compiled once into [`Step`]s that each know their
//! shapes, keep what their backward pass needs (patches, batch statistics, pooling winners,
//! dropout masks) and split their work over the cores. Training (`crate::train`) and
//! inference (`crate::eval`, `crate::predict`) both drive it; Burn's path computes the same
//! plan, and the same PyTorch reference values hold both.

mod chain;
mod kernels;
pub(crate) mod pair;
pub(crate) mod simd;

use kernels::{ConvGeometry, NormSaved, PoolGeometry};
pub(crate) use kernels::{gemm, mix_seed};

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};
use crate::model::plan::{BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM};
use crate::model::{
    Activation, Layer, NamedTensor, Normalization, Plan, Pooling, Weights, WeightsError, weights,
};

/// Whether this engine computes `plan`: every layer kind but GELU, whose derivative it does not
/// implement.
pub fn computes(plan: &Plan) -> bool {
    plan.layers().iter().all(|layer| match layer {
        Layer::Activation(activation) => Unary::of(*activation).is_some(),
        _ => true,
    })
}

/// The activations the engine computes: those whose derivative follows from their output.
#[derive(Debug, Clone, Copy)]
enum Unary {
    Relu,
    Sigmoid,
    Tanh,
}

impl Unary {
    fn of(activation: Activation) -> Option<Self> {
        match activation {
            Activation::Relu => Some(Unary::Relu),
            Activation::Sigmoid => Some(Unary::Sigmoid),
            Activation::Tanh => Some(Unary::Tanh),
            Activation::Gelu => None,
        }
    }
}

/// One trainable tensor, in PyTorch's layout, with its latest gradient.
pub(crate) struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Parameter {
    fn take(weights: &mut Weights, name: String, shape: Vec<usize>) -> Result<Self, WeightsError> {
        let value = weights::take(weights, &name, &shape)?;
        Ok(Self {
            grad: vec![0.0; value.len()],
            name,
            shape,
            value,
        })
    }
}

/// A layer of the plan, compiled for channels-last buffers, with what its backward pass needs.
enum Step {
    Conv {
        geometry: ConvGeometry,
        weight: usize,
        bias: Option<usize>,
        /// The weight as the GEMM takes it, refreshed every training forward pass.
        packed: Vec<f32>,
        /// The same for inference, packed on first use and dropped whenever the weights may
        /// change ([`Network::params_mut`]): repacking per call was a seventh of reading one
        /// digit with the built-in models.
        packed_for_eval: OnceLock<Vec<f32>>,
    },
    BatchNorm(Norm),
    /// Batch norm, ReLU and max pooling in one pass over memory each way: what every
    /// convolution block of digits' CNNs ends with.
    NormReluPool {
        norm: Norm,
        geometry: PoolGeometry,
        /// Which of each window's four values won, from the latest training forward pass.
        argmax: Vec<u8>,
    },
    Activation(Unary),
    Pool {
        pooling: Pooling,
        geometry: PoolGeometry,
        /// Which of each window's four values won, from the latest training forward pass.
        argmax: Vec<u8>,
    },
    /// Channels-last maps to PyTorch's `[N, C*H*W]` order (left out of the steps when there
    /// is one channel, where the two orders agree).
    Flatten {
        shape: [usize; 3],
    },
    Dropout {
        probability: f32,
        /// 0 or `1 / (1 - probability)` per value, from the latest training forward pass.
        mask: Vec<f32>,
    },
    Linear(Dense),
}

/// A fully connected layer: its sizes and the indices of its weight and bias.
struct Dense {
    inputs: usize,
    outputs: usize,
    weight: usize,
    bias: usize,
    /// The weight input by input, for inference on inputs that are mostly zeros, made on
    /// first use and dropped whenever the weights may change ([`Network::params_mut`]).
    input_major_for_eval: OnceLock<kernels::InputMajor>,
}

impl Dense {
    /// The forward pass, with `activation` applied in the same pass; in eval mode (`eval`)
    /// over the nonzero inputs alone where they are few.
    fn forward(
        &self,
        params: &[Parameter],
        input: &[f32],
        out: &mut [f32],
        eval: bool,
        activation: impl Fn(f32) -> f32 + Sync,
    ) {
        let weight = &params[self.weight].value;
        let dims = [self.inputs, self.outputs];
        let input_major = (eval && kernels::nonzero_terms_summed_here()).then(|| {
            self.input_major_for_eval
                .get_or_init(|| kernels::InputMajor::of(weight, dims))
        });
        kernels::linear_forward(
            input,
            weight,
            input_major,
            &params[self.bias].value,
            dims,
            out,
            activation,
        );
    }
}

thread_local! {
    /// Each thread's two layer buffers for inference ([`Network::logits_here`]), kept from one
    /// call to the next. Fresh buffers cost a fill with zeros and the page faults of new
    /// memory: 5% of the MLP's inference in batches of 1,000 (perf, Xeon with AVX-512).
    static LAYER_BUFFERS: Cell<[Vec<f32>; 2]> = Cell::default();
}

/// The values (1 MiB) of each of a thread's [`LAYER_BUFFERS`], or one image's widest layer
/// where that is more: inference runs a batch in chunks of as many images as fit, rather than
/// each layer over the whole batch. For a `cnn` that is ten images, whose activations stay in
/// a core's second-level cache from one layer to the next; a batch of 1,000 through it took
/// 164 MB and ran at half the speed in one piece per thread. The MLP's widest layer takes 655
/// images.
const BUFFER_VALUES: usize = 1 << 18;

/// The first `len` values of `buffer`, which grows (with zeros) only when it is shorter: a
/// step overwrites every value of its output, so reused values need no clearing.
fn grown_to(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Batch norm's tensors, and the batch's statistics from the latest training forward pass.
struct Norm {
    name: String,
    gamma: usize,
    beta: usize,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Norm {
    /// The per-channel `(scale, shift)` of eval mode, from the running statistics.
    fn eval_scale_shift(&self, params: &[Parameter]) -> (Vec<f32>, Vec<f32>) {
        let inv_std: Vec<f32> = self
            .running_var
            .iter()
            .map(|&v| (1.0 / (v as f64 + BATCH_NORM_EPSILON).sqrt()) as f32)
            .collect();
        self.affine(params, &self.running_mean, &inv_std)
    }

    /// The per-channel `(scale, shift)` of training mode, from the statistics of the batch
    /// (`input`), which the running ones take in when `pass.track_running` says so.
    fn train_scale_shift(
        &mut self,
        params: &[Parameter],
        input: &[f32],
        pass: TrainingPass,
    ) -> (Vec<f32>, Vec<f32>) {
        let channels = self.running_mean.len();
        let (mean, variance) = kernels::batch_statistics(input, channels);
        if pass.track_running {
            // PyTorch's running variance takes the unbiased batch variance.
            let samples = (input.len() / channels) as f64;
            let bessel = if samples > 1.0 {
                samples / (samples - 1.0)
            } else {
                1.0
            };
            let blend = |running: &mut f32, batch: f64| {
                *running = ((1.0 - BATCH_NORM_MOMENTUM) * *running as f64
                    + BATCH_NORM_MOMENTUM * batch) as f32
            };
            for c in 0..channels {
                blend(&mut self.running_mean[c], mean[c]);
                blend(&mut self.running_var[c], variance[c] * bessel);
            }
        }
        self.mean = mean.iter().map(|&m| m as f32).collect();
        self.inv_std = variance
            .iter()
            .map(|&v| (1.0 / (v + BATCH_NORM_EPSILON).sqrt()) as f32)
            .collect();
        self.affine(params, &self.mean, &self.inv_std)
    }

    /// `gamma * (x - mean) * inv_std + beta` as a scale and a shift per channel.
    fn affine(&self, params: &[Parameter], mean: &[f32], inv_std: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = params[self.gamma]
            .value
            .iter()
            .zip(inv_std)
            .map(|(g, s)| g * s)
            .collect();
        let shift = params[self.beta]
            .value
            .iter()
            .zip(mean.iter().zip(&scale))
            .map(|(b, (m, s))| b - m * s)
            .collect();
        (scale, shift)
    }

    /// What the backward pass needs, with the layer's `input`.
    fn saved<'a>(&'a self, params: &'a [Parameter], input: &'a [f32]) -> NormSaved<'a> {
        NormSaved {
            input,
            mean: &self.mean,
            inv_std: &self.inv_std,
            gamma: &params[self.gamma].value,
        }
    }

    /// Runs `backward(saved, d_gamma, d_beta)` with the gradients of the scale and shift.
    fn backward(
        &self,
        params: &mut [Parameter],
        input: &[f32],
        backward: impl FnOnce(NormSaved, &mut [f32], &mut [f32]),
    ) {
        let mut d_gamma = std::mem::take(&mut params[self.gamma].grad);
        let mut d_beta = std::mem::take(&mut params[self.beta].grad);
        backward(self.saved(params, input), &mut d_gamma, &mut d_beta);
        params[self.gamma].grad = d_gamma;
        params[self.beta].grad = d_beta;
    }
}

/// How a training forward pass treats randomness and batch norm's running statistics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrainingPass {
    /// Seeds dropout's masks.
    pub seed: u64,
    /// Whether batch norm's running statistics take in this batch (not when only gradients
    /// are asked for).
    pub track_running: bool,
}

/// A network compiled from its plan, holding its weights.
pub struct Network {
    steps: Vec<Step>,
    params: Vec<Parameter>,
    normalization: Option<Normalization>,
    /// The (normalised) input, then each step's output, from the latest training pass.
    outputs: Vec<Vec<f32>>,
    /// The gradient buffers the backward pass alternates between.
    deltas: [Vec<f32>; 2],
    /// The layers as a chain of fully connected ones, when that is all the network is: small
    /// batches of it train on two cores in lockstep ([`chain`]).
    chain: Option<Vec<chain::Link>>,
    /// Whether the chain's steps run on one core or two.
    pacer: pair::Pacer,
    /// The cores the latest training pass chose, when that pass was the chain's.
    chain_pass: Option<pair::Cores>,
}

impl Network {
    /// Compiles `plan` with `weights` (every tensor the plan names, nothing else). `plan`
    /// must be one this engine [`computes`].
    pub fn new(plan: &Plan, mut weights: Weights) -> Result<Self, WeightsError> {
        let mut params = Vec::new();
        let mut take = |weights: &mut Weights, name: String, shape: Vec<usize>| {
            params.push(Parameter::take(weights, name, shape)?);
            Ok::<_, WeightsError>(params.len() - 1)
        };
        let mut steps = Vec::new();
        // The shape of the current output: `[H, W, C]`, or `[1, 1, features]` once flat.
        let mut shape = [IMAGE_SIDE, IMAGE_SIDE, 1];
        let mut layers = plan.layers();
        while let [layer, rest @ ..] = layers {
            layers = rest;
            let [height, width, channels] = shape;
            match layer {
                Layer::Conv {
                    name,
                    inputs,
                    outputs,
                    kernel,
                    padding,
                    bias,
                } => {
                    let geometry = ConvGeometry {
                        inputs: *inputs,
                        outputs: *outputs,
                        kernel: *kernel,
                        padding: *padding,
                        height,
                        width,
                    };
                    let weight = take(
                        &mut weights,
                        format!("{name}.weight"),
                        vec![*outputs, *inputs, *kernel, *kernel],
                    )?;
                    let bias = match bias {
                        true => Some(take(&mut weights, format!("{name}.bias"), vec![*outputs])?),
                        false => None,
                    };
                    shape = [geometry.out_height(), geometry.out_width(), *outputs];
                    steps.push(Step::Conv {
                        geometry,
                        weight,
                        bias,
                        packed: Vec::new(),
                        packed_for_eval: OnceLock::new(),
                    });
                }
                Layer::BatchNorm { name, channels } => {
                    let gamma = take(&mut weights, format!("{name}.weight"), vec![*channels])?;
                    let beta = take(&mut weights, format!("{name}.bias"), vec![*channels])?;
                    let mut running = |kind: &str| {
                        weights::take(&mut weights, &format!("{name}.{kind}"), &[*channels])
                    };
                    let norm = Norm {
                        name: name.clone(),
                        gamma,
                        beta,
                        running_mean: running("running_mean")?,
                        running_var: running("running_var")?,
                        mean: Vec::new(),
                        inv_std: Vec::new(),
                    };
                    match layers {
                        [
                            Layer::Activation(Activation::Relu),
                            Layer::Pool(Pooling::Max),
                            rest @ ..,
                        ] => {
                            layers = rest;
                            steps.push(Step::NormReluPool {
                                norm,
                                geometry: PoolGeometry {
                                    height,
                                    width,
                                    channels: *channels,
                                },
                                argmax: Vec::new(),
                            });
                            shape = [height / 2, width / 2, *channels];
                        }
                        _ => steps.push(Step::BatchNorm(norm)),
                    }
                }
                Layer::Activation(activation) => steps.push(Step::Activation(
                    Unary::of(*activation).expect("plans with GELU are not compiled"),
                )),
                Layer::Pool(pooling) => {
                    steps.push(Step::Pool {
                        pooling: *pooling,
                        geometry: PoolGeometry {
                            height,
                            width,
                            channels,
                        },
                        argmax: Vec::new(),
                    });
                    shape = [height / 2, width / 2, channels];
                }
                Layer::Flatten => {
                    if channels > 1 {
                        steps.push(Step::Flatten { shape });
                    }
                    shape = [1, 1, height * width * channels];
                }
                Layer::Dropout(probability) => steps.push(Step::Dropout {
                    probability: *probability as f32,
                    mask: Vec::new(),
                }),
                Layer::Linear {
                    name,
                    inputs,
                    outputs,
                } => {
                    let weight = take(
                        &mut weights,
                        format!("{name}.weight"),
                        vec![*outputs, *inputs],
                    )?;
                    let bias = take(&mut weights, format!("{name}.bias"), vec![*outputs])?;
                    steps.push(Step::Linear(Dense {
                        inputs: *inputs,
                        outputs: *outputs,
                        weight,
                        bias,
                        input_major_for_eval: OnceLock::new(),
                    }));
                    shape = [1, 1, *outputs];
                }
            }
        }
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            outputs: vec![Vec::new(); steps.len() + 1],
            chain: chain::links(&steps),
            pacer: pair::Pacer::default(),
            chain_pass: None,
            steps,
            params,
            normalization: plan.normalization(),
            deltas: [Vec::new(), Vec::new()],
        })
    }

    pub(crate) fn params(&self) -> &[Parameter] {
        &self.params
    }

    pub(crate) fn params_mut(&mut self) -> &mut [Parameter] {
        for step in &mut self.steps {
            match step {
                Step::Conv {
                    packed_for_eval, ..
                } => drop(packed_for_eval.take()),
                Step::Linear(dense) => drop(dense.input_major_for_eval.take()),
                _ => {}
            }
        }
        &mut self.params
    }

    /// Where each parameter is cut between the two sides of [`pair::run`] for its optimizer
    /// update (the first value of the second side's part), and the cores the latest training
    /// pass chose, when that pass was a [`chain`]'s: each side then updates the rows its
    /// passes compute, in its own cache.
    pub(crate) fn parameter_cuts(&self) -> Option<(Vec<usize>, pair::Cores)> {
        let (links, cores) = (self.chain.as_ref()?, self.chain_pass?);
        Some((chain::parameter_cuts(links, &self.params), cores))
    }

    /// `pixels` as the first layer takes them, into `input` (as long as `pixels`).
    fn normalize(&self, pixels: &[f32], input: &mut [f32]) {
        match self.normalization {
            Some(Normalization { mean, std }) => input
                .iter_mut()
                .zip(pixels)
                .for_each(|(v, p)| *v = (p - mean) / std),
            None => input.copy_from_slice(pixels),
        }
    }

    /// The logits of `pixels` (`[n, 784]`) by each of `networks`, in eval mode: batch norm's
    /// running statistics, no dropout. The batch is split over the cores once, each piece
    /// running every layer of one network on its own thread, in chunks that fit the thread's
    /// two kept buffers ([`BUFFER_VALUES`]), so a large batch costs little memory and no
    /// hand-offs between layers. Every network's pieces go to the
    /// cores in one pass: one digit read at three sizes by three networks, on two cores, is six
    /// pieces of work spread over both at once, instead of three passes of two uneven pieces.
    pub fn logits_of_each(networks: &[Network], pixels: &[f32]) -> Vec<Vec<f32>> {
        let images = pixels.len() / IMAGE_PIXELS;
        let per = kernels::images_per_thread(images);
        let mut logits = vec![vec![0.0; images * NUM_CLASSES]; networks.len()];
        logits
            .par_iter_mut()
            .zip(networks)
            .flat_map(|(logits, network)| {
                logits
                    .par_chunks_mut(per * NUM_CLASSES)
                    .zip(pixels.par_chunks(per * IMAGE_PIXELS))
                    .map(move |(logits, pixels)| (network, logits, pixels))
            })
            .for_each(|(network, logits, pixels)| {
                network.logits_here(pixels, logits);
            });
        logits
    }

    /// One network's part of [`Network::logits_of_each`], on the calling thread, into
    /// `logits`: in chunks of as many images as the thread's two [`LAYER_BUFFERS`] hold at
    /// the widest layer, each layer writing into one buffer and reading the other.
    fn logits_here(&self, pixels: &[f32], logits: &mut [f32]) {
        let chunk = (BUFFER_VALUES / self.values_per_image()).max(1);
        // Taken, not borrowed: while a layer waits for its parallel pieces, rayon may run
        // another network's call on this thread, which then starts with buffers of its own.
        let mut buffers = LAYER_BUFFERS.take();
        for (pixels, logits) in pixels
            .chunks(chunk * IMAGE_PIXELS)
            .zip(logits.chunks_mut(chunk * NUM_CLASSES))
        {
            self.chunk_logits(pixels, logits, &mut buffers);
        }
        LAYER_BUFFERS.set(buffers);
    }

    /// [`Network::logits_here`] for one chunk of images.
    fn chunk_logits(&self, pixels: &[f32], logits: &mut [f32], buffers: &mut [Vec<f32>; 2]) {
        let images = pixels.len() / IMAGE_PIXELS;
        let [current, next] = buffers;
        let mut from_pixels = self.normalization.is_none();
        if !from_pixels {
            self.normalize(pixels, grown_to(current, pixels.len()));
        }
        let mut len = pixels.len();
        let mut steps = &self.steps[..];
        while let [step, rest @ ..] = steps {
            let input = if from_pixels { pixels } else { &current[..len] };
            from_pixels = false;
            len = step.out_len(input.len(), images);
            let out = grown_to(next, len);
            steps = match (step, rest) {
                // A fully connected layer and its activation in one pass.
                (Step::Linear(dense), [Step::Activation(activation), rest @ ..]) => {
                    let params = &self.params;
                    match activation {
                        Unary::Relu => dense.forward(params, input, out, true, relu),
                        Unary::Sigmoid => dense.forward(params, input, out, true, sigmoid),
                        Unary::Tanh => dense.forward(params, input, out, true, f32::tanh),
                    }
                    rest
                }
                _ => {
                    step.forward_eval(&self.params, input, out);
                    rest
                }
            };
            std::mem::swap(current, next);
        }
        logits.copy_from_slice(&current[..len]);
    }

    /// The most values [`Network::chunk_logits`] writes into one buffer per image: the widest
    /// layer's output, or the normalized pixels (the raw ones are read where they are).
    fn values_per_image(&self) -> usize {
        let input = match self.normalization {
            Some(_) => IMAGE_PIXELS,
            None => 0,
        };
        let outputs = self.steps.iter().scan(IMAGE_PIXELS, |len, step| {
            *len = step.out_len(*len, 1);
            Some(*len)
        });
        outputs.fold(input, usize::max)
    }

    /// The logits of `pixels` in training mode, keeping what the backward pass needs.
    pub(crate) fn forward_train(&mut self, pixels: &[f32], pass: TrainingPass) -> &[f32] {
        let images = pixels.len() / IMAGE_PIXELS;
        let mut input = std::mem::take(&mut self.outputs[0]);
        input.resize(pixels.len(), 0.0);
        self.normalize(pixels, &mut input);
        self.outputs[0] = input;
        let chained = self.chain.as_deref();
        self.chain_pass = None;
        if let Some(links) = chained.filter(|links| chain::takes(links, images)) {
            let cores = self.pacer.next_step();
            self.chain_pass = Some(cores);
            chain::forward(cores, links, &self.params, &mut self.outputs);
            return &self.outputs[self.steps.len()];
        }
        for (i, step) in self.steps.iter_mut().enumerate() {
            let (before, after) = self.outputs.split_at_mut(i + 1);
            // Each step draws from its own stream of the pass's seed.
            let seed = kernels::mix_seed(pass.seed, i as u64);
            step.forward_train(&self.params, &before[i], &mut after[0], images, seed, pass);
        }
        &self.outputs[self.steps.len()]
    }

    /// Every parameter's gradient from the logits' gradient `d_logits`, after
    /// [`Network::forward_train`] on the same batch.
    pub(crate) fn backward(&mut self, d_logits: &[f32]) {
        if let (Some(links), Some(cores)) = (&self.chain, self.chain_pass) {
            let (params, outputs) = (&mut self.params, &self.outputs);
            chain::backward(cores, links, params, outputs, d_logits, &mut self.deltas);
            return;
        }
        // The two gradient buffers only ever grow, and each step is handed the length it
        // needs: every step's backward pass writes each value of its input's gradient, so what
        // a buffer held before needs no clearing (zero-filling them to each layer's size took
        // 3% of a `cnn` training step, on one thread while the others waited).
        let grow = |buffer: &mut Vec<f32>, len: usize| {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        };
        let [mut d_out, mut d_in] = std::mem::take(&mut self.deltas);
        grow(&mut d_out, d_logits.len());
        d_out[..d_logits.len()].copy_from_slice(d_logits);
        let mut d_out_len = d_logits.len();
        for i in (0..self.steps.len()).rev() {
            let (input, output) = (&self.outputs[i], &self.outputs[i + 1]);
            // The network's input needs no gradient.
            let d_input = (i > 0).then(|| {
                grow(&mut d_in, input.len());
                &mut d_in[..input.len()]
            });
            let d_out_now = &d_out[..d_out_len];
            self.steps[i].backward(&mut self.params, input, output, d_out_now, d_input);
            std::mem::swap(&mut d_out, &mut d_in);
            d_out_len = input.len();
        }
        self.deltas = [d_out, d_in];
    }

    /// The weights (batch norm's running statistics included), or the latest gradients, under
    /// PyTorch's names and in its layouts.
    pub fn tensors(&self, gradients: bool) -> Weights {
        let tensor = |shape: &[usize], values: &[f32]| NamedTensor {
            shape: shape.to_vec(),
            values: values.to_vec(),
        };
        let mut out: Weights = self
            .params
            .iter()
            .map(|p| {
                let values = if gradients { &p.grad } else { &p.value };
                (p.name.clone(), tensor(&p.shape, values))
            })
            .collect();
        if !gradients {
            for step in &self.steps {
                if let Step::BatchNorm(norm) | Step::NormReluPool { norm, .. } = step {
                    let channels = [norm.running_mean.len()];
                    let name = &norm.name;
                    let (mean, var) = (&norm.running_mean, &norm.running_var);
                    out.insert(format!("{name}.running_mean"), tensor(&channels, mean));
                    out.insert(format!("{name}.running_var"), tensor(&channels, var));
                }
            }
        }
        out
    }
}

/// One row of logits' log-softmax, taken around the row's largest value.
pub(crate) fn log_softmax(logits: &[f32]) -> [f32; NUM_CLASSES] {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max + logits.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    std::array::from_fn(|i| logits[i] - log_sum)
}

// The activations as functions of their own, which the loops they are passed to are compiled
// for: passed as `fn(f32) -> f32` pointers they cost a call per value and the loops stay
// scalar (a tenth of MLP batch inference's time went to that).
fn relu(v: f32) -> f32 {
    v.max(0.0)
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

// Each activation's derivative times the gradient `d` of its output, from that output `y`.
fn relu_derivative(d: f32, y: f32) -> f32 {
    if y > 0.0 { d } else { 0.0 }
}

fn sigmoid_derivative(d: f32, y: f32) -> f32 {
    d * y * (1.0 - y)
}

fn tanh_derivative(d: f32, y: f32) -> f32 {
    d * (1.0 - y * y)
}

impl Step {
    /// The length of this step's output for `images` images whose input is `input_len` long.
    fn out_len(&self, input_len: usize, images: usize) -> usize {
        match self {
            Step::Conv { geometry, .. } => images * geometry.out_len(),
            Step::NormReluPool { geometry, .. } | Step::Pool { geometry, .. } => {
                images * geometry.out_len()
            }
            Step::Linear(dense) => images * dense.outputs,
            Step::BatchNorm(_)
            | Step::Activation(_)
            | Step::Flatten { .. }
            | Step::Dropout { .. } => input_len,
        }
    }

    /// The eval-mode output into `out`, [`Step::out_len`] long, whose values it overwrites.
    fn forward_eval(&self, params: &[Parameter], input: &[f32], out: &mut [f32]) {
        match self {
            Step::Conv {
                geometry,
                weight,
                bias,
                packed_for_eval,
                ..
            } => {
                let packed = packed_for_eval.get_or_init(|| {
                    let mut packed = Vec::new();
                    geometry.pack_weight(&params[*weight].value, &mut packed);
                    packed
                });
                let bias = bias.map(|b| &params[b].value[..]);
                geometry.forward(input, packed, bias, out);
            }
            Step::BatchNorm(norm) => {
                let (scale, shift) = norm.eval_scale_shift(params);
                kernels::scale_shift(input, &scale, &shift, out);
            }
            Step::NormReluPool { norm, geometry, .. } => {
                let (scale, shift) = norm.eval_scale_shift(params);
                let mut argmax = vec![0; out.len()];
                kernels::max_pool_forward(
                    geometry,
                    input,
                    Some((&scale, &shift)),
                    out,
                    &mut argmax,
                );
            }
            Step::Activation(activation) => match activation {
                Unary::Relu => kernels::map(input, out, relu),
                Unary::Sigmoid => kernels::map(input, out, sigmoid),
                Unary::Tanh => kernels::map(input, out, f32::tanh),
            },
            Step::Pool {
                pooling, geometry, ..
            } => match pooling {
                Pooling::Max => {
                    let mut argmax = vec![0; out.len()];
                    kernels::max_pool_forward(geometry, input, None, out, &mut argmax);
                }
                Pooling::Average => geometry.average_forward(input, out),
            },
            Step::Flatten { shape } => kernels::flatten(input, *shape, out, false),
            Step::Dropout { .. } => out.copy_from_slice(input),
            Step::Linear(dense) => dense.forward(params, input, out, true, |v| v),
        }
    }

    fn forward_train(
        &mut self,
        params: &[Parameter],
        input: &[f32],
        out: &mut Vec<f32>,
        images: usize,
        seed: u64,
        pass: TrainingPass,
    ) {
        out.resize(self.out_len(input.len(), images), 0.0);
        match self {
            Step::Conv {
                geometry,
                weight,
                bias,
                packed,
                ..
            } => {
                geometry.pack_weight(&params[*weight].value, packed);
                let bias = bias.map(|b| &params[b].value[..]);
                geometry.forward(input, packed, bias, out);
            }
            Step::BatchNorm(norm) => {
                let (scale, shift) = norm.train_scale_shift(params, input, pass);
                kernels::scale_shift(input, &scale, &shift, out);
            }
            Step::NormReluPool {
                norm,
                geometry,
                argmax,
            } => {
                let (scale, shift) = norm.train_scale_shift(params, input, pass);
                argmax.resize(out.len(), 0);
                kernels::max_pool_forward(geometry, input, Some((&scale, &shift)), out, argmax);
            }
            Step::Pool {
                pooling: Pooling::Max,
                geometry,
                argmax,
            } => {
                argmax.resize(out.len(), 0);
                kernels::max_pool_forward(geometry, input, None, out, argmax);
            }
            Step::Dropout { probability, mask } => {
                mask.resize(input.len(), 0.0);
                kernels::dropout(input, *probability, seed, mask, out);
            }
            // Not over the nonzero inputs: the weights change after every step.
            Step::Linear(dense) => dense.forward(params, input, out, false, |v| v),
            _ => self.forward_eval(params, input, out),
        }
    }

    fn backward(
        &mut self,
        params: &mut [Parameter],
        input: &[f32],
        output: &[f32],
        d_out: &[f32],
        d_input: Option<&mut [f32]>,
    ) {
        match self {
            Step::Conv {
                geometry,
                weight,
                bias,
                packed,
                ..
            } => {
                let mut d_packed = vec![0.0; packed.len()];
                let mut d_bias = vec![0.0; geometry.outputs];
                let wants_bias = bias.is_some().then_some(&mut d_bias[..]);
                geometry.backward(input, packed, d_out, &mut d_packed, wants_bias, d_input);
                geometry.unpack_weight(&d_packed, &mut params[*weight].grad);
                if let Some(bias) = bias {
                    params[*bias].grad.copy_from_slice(&d_bias);
                }
            }
            Step::BatchNorm(norm) => norm.backward(params, input, |saved, d_gamma, d_beta| {
                kernels::batch_norm_backward(saved, d_out, d_gamma, d_beta, d_input)
            }),
            Step::NormReluPool {
                norm,
                geometry,
                argmax,
            } => norm.backward(params, input, |saved, d_gamma, d_beta| {
                kernels::norm_relu_max_pool_backward(
                    geometry, saved, output, d_out, argmax, d_gamma, d_beta, d_input,
                )
            }),
            Step::Activation(activation) => {
                let Some(d_input) = d_input else { return };
                let (d, y) = (d_out, output);
                match activation {
                    Unary::Relu => kernels::zip_map(d, y, d_input, relu_derivative),
                    Unary::Sigmoid => kernels::zip_map(d, y, d_input, sigmoid_derivative),
                    Unary::Tanh => kernels::zip_map(d, y, d_input, tanh_derivative),
                }
            }
            Step::Pool {
                pooling,
                geometry,
                argmax,
            } => {
                let Some(d_input) = d_input else { return };
                match pooling {
                    Pooling::Max => geometry.max_backward(d_out, argmax, d_input),
                    Pooling::Average => geometry.average_backward(d_out, d_input),
                }
            }
            Step::Flatten { shape } => {
                if let Some(d_input) = d_input {
                    kernels::flatten(d_out, *shape, d_input, true);
                }
            }
            Step::Dropout { mask, .. } => {
                if let Some(d_input) = d_input {
                    kernels::zip_map(d_out, mask, d_input, |d, m| d * m);
                }
            }
            Step::Linear(dense) => {
                let mut d_weight = std::mem::take(&mut params[dense.weight].grad);
                let mut d_bias = std::mem::take(&mut params[dense.bias].grad);
                kernels::linear_backward(
                    input,
                    &params[dense.weight].value,
                    d_out,
                    [dense.inputs, dense.outputs],
                    &mut d_weight,
                    &mut d_bias,
                    d_input,
                );
                params[dense.weight].grad = d_weight;
                params[dense.bias].grad = d_bias;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::data::{Dataset, Split};
    use crate::model::{Ensemble, LayersConfig, ModelConfig, ModelKind};
    use crate::train::{EngineChoice, Optimizer, TrainConfig, Trainer};

    /// Every layer kind the engine compiles, each where its own code runs, on odd sides where
    /// pooling drops an edge: a direct convolution of the one-channel input with bias (before
    /// no batch norm, which would zero its gradient) and one through patches of many channels
    /// without, max pooling alone (27 to 13) and fused with batch norm and
    /// ReLU (11 to 5), batch norm alone before a sigmoid, average pooling (5 to 2), tanh, and
    /// flattening many channels.
    const EVERY_KIND: &str = "conv16k4p1,relu,pool,conv6k3nobias,bn,relu,pool,\
         conv8k3p1nobias,bn,sigmoid,avgpool,flatten,fc12,tanh,fc10";

    fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
        let norm = |values: &mut dyn Iterator<Item = f32>| {
            values
                .map(|v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
        };
        norm(&mut ours.iter().zip(reference).map(|(a, b)| a - b))
            / norm(&mut reference.iter().copied()).max(1e-12)
    }

    /// A trainer with SGD and momentum, whose update is linear in the gradient: the engines'
    /// rounding differences stay as small in the weights as in the gradients, where Adam
    /// turns a gradient that rounds to either side of zero into a full step either way.
    /// (Adam and AdamW take the same steps on both engines: `train::fused`'s tests and the
    /// PyTorch references.)
    fn trainer(model: &ModelConfig, engine: EngineChoice) -> Trainer {
        let config = TrainConfig {
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            lr: 0.01,
            engine,
            ..TrainConfig::default()
        };
        Trainer::new(
            model.clone(),
            model.initial_weights(3),
            config,
            &Device::flex(),
        )
        .unwrap()
    }

    #[test]
    fn every_layer_kind_gives_burns_gradients_and_updates() {
        let model = ModelConfig::Layers(LayersConfig::parse(EVERY_KIND).unwrap());
        let data = Dataset::lite(Split::Train).truncated(48);
        let mut batches = data.batches(16, None);
        let (mut fused, mut burn) = (
            trainer(&model, EngineChoice::Auto),
            trainer(&model, EngineChoice::Burn),
        );
        assert!(fused.is_fused() && !burn.is_fused());
        for _ in 0..2 {
            let batch = batches.next().unwrap();
            fused.step(&batch);
            burn.step(&batch);
        }
        let batch = batches.next().unwrap();
        let ((fused_loss, fused_grads), (burn_loss, burn_grads)) =
            (fused.gradients(&batch), burn.gradients(&batch));
        assert!(
            (fused_loss - burn_loss).abs() < 1e-5 * burn_loss,
            "{fused_loss} {burn_loss}"
        );
        assert_eq!(fused_grads.len(), burn_grads.len());
        for (name, tensor) in &burn_grads {
            let error = relative_error(&fused_grads[name].values, &tensor.values);
            assert!(error < 1e-4, "{name}: relative error {error}");
        }
        for (name, tensor) in burn.weights() {
            let error = relative_error(&fused.weights()[&name].values, &tensor.values);
            assert!(
                error < 1e-5,
                "{name} after two steps: relative error {error}"
            );
        }
    }

    #[test]
    fn inference_gives_burns_probabilities() {
        let data = Dataset::lite(Split::Test).truncated(40);
        let batch = data.batches(40, None).next().unwrap();
        let layers = ModelConfig::Layers(LayersConfig::parse(EVERY_KIND).unwrap());
        for config in [
            ModelKind::Mlp.config(),
            ModelKind::Lenet5.config(),
            ModelKind::Cnn.config(),
            normalized_cnn(),
            layers,
        ] {
            // Two steps first, so that batch norm's running statistics are not their defaults.
            let mut trainer = trainer(&config, EngineChoice::Auto);
            for batch in Dataset::lite(Split::Train).truncated(64).batches(32, None) {
                trainer.step(&batch);
            }
            let error = error_against_burn(&Ensemble::new(vec![trainer.model()]), &batch);
            assert!(
                error < 1e-5,
                "{}: relative error {error}",
                config.describe()
            );
        }
    }

    /// Each value's bits, so that two runs compare exactly (NaN included).
    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The built-in `cnn` with MNIST's normalization in front, which it does not have.
    fn normalized_cnn() -> ModelConfig {
        let mut config = ModelKind::Cnn.config();
        *config.normalization_mut() = Some(Normalization {
            mean: 0.1307,
            std: 0.3081,
        });
        config
    }

    #[test]
    fn an_ensemble_gives_burns_probabilities() {
        let device = Device::flex();
        // Three views of one digit, as `predict` reads it: on two cores, two pieces per model.
        let batch = Dataset::lite(Split::Test)
            .truncated(3)
            .batches(3, None)
            .next()
            .unwrap();
        let configs = [ModelKind::Cnn, ModelKind::Lenet5, ModelKind::Cnn].map(ModelKind::config);
        let members = (configs.iter().enumerate())
            .map(|(seed, config)| {
                let weights = config.initial_weights(seed as u64);
                crate::model::Model::from_weights(config, weights, &device).unwrap()
            })
            .collect();
        let error = error_against_burn(&Ensemble::new(members), &batch);
        assert!(error < 1e-5, "relative error {error}");
    }

    /// How far the engine's log-probabilities of `batch` by `ensemble` are from Burn's.
    fn error_against_burn(ensemble: &Ensemble, batch: &crate::data::Batch) -> f64 {
        assert!(ensemble.runs_on_cpu_engine());
        let ours = ensemble.log_probabilities_of(&batch.pixels);
        let (images, _) = crate::eval::batch_tensors(batch, &ensemble.device());
        let burns: Vec<f32> = ensemble
            .log_probabilities(images)
            .into_data()
            .try_into_vec()
            .unwrap();
        relative_error(&ours, &burns)
    }

    #[test]
    fn an_images_logits_do_not_depend_on_its_batch_or_on_what_the_buffers_held() {
        // Run here, on the test's thread, so that the batch is one piece whatever the number
        // of cores: 70 images are seven of the `cnn`'s chunks, and as many rows as take the
        // MLP's hidden layers through the GEMM, where one image takes the nonzero sums.
        let pixels = Dataset::lite(Split::Test)
            .truncated(70)
            .batches(70, None)
            .next()
            .unwrap()
            .pixels;
        let layers = ModelConfig::Layers(LayersConfig::parse(EVERY_KIND).unwrap());
        for config in [ModelKind::Mlp.config(), normalized_cnn(), layers] {
            let plan = config.plan().unwrap();
            let network = Network::new(&plan, config.initial_weights(2)).unwrap();
            let logits_bits = |pixels: &[f32]| {
                let mut logits = vec![f32::NAN; pixels.len() / IMAGE_PIXELS * NUM_CLASSES];
                network.logits_here(pixels, &mut logits);
                bits(&logits)
            };
            let batch = logits_bits(&pixels);
            // One image at a time, each after calls that left longer buffers behind.
            let alone: Vec<u32> = pixels
                .chunks_exact(IMAGE_PIXELS)
                .flat_map(logits_bits)
                .collect();
            assert_eq!(alone, batch, "{}", config.describe());
            assert_eq!(logits_bits(&pixels), batch, "{}", config.describe());
        }
    }

    #[test]
    fn inference_lays_out_weights_again_after_they_change() {
        let config = ModelKind::Cnn.config();
        let plan = config.plan().unwrap();
        let pixels = Dataset::lite(Split::Test)
            .truncated(2)
            .batches(2, None)
            .next()
            .unwrap()
            .pixels;
        let mut network = Network::new(&plan, config.initial_weights(1)).unwrap();
        let before = Network::logits_of_each(std::slice::from_ref(&network), &pixels);
        for param in network.params_mut() {
            param.value.iter_mut().for_each(|v| *v *= 1.5);
        }
        let after = Network::logits_of_each(std::slice::from_ref(&network), &pixels);
        let fresh = Network::new(&plan, network.tensors(false)).unwrap();
        assert_ne!(after, before);
        assert_eq!(
            after,
            Network::logits_of_each(std::slice::from_ref(&fresh), &pixels)
        );
    }

    #[test]
    fn dropout_keeps_values_with_the_right_odds_and_scales_them() {
        let input = vec![1.0; 100_000];
        let (mut mask, mut out) = (vec![0.0; input.len()], vec![0.0; input.len()]);
        kernels::dropout(&input, 0.25, 9, &mut mask, &mut out);
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / input.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
        assert!(
            out.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        assert_eq!(mask, out);
        let mut again = vec![0.0; input.len()];
        kernels::dropout(&input, 0.25, 9, &mut mask, &mut again);
        assert_eq!(again, out, "the same seed draws the same mask");
        kernels::dropout(&input, 0.25, 10, &mut mask, &mut again);
        assert_ne!(again, out);
    }

    #[test]
    fn a_chain_of_layers_gives_the_same_bits_on_one_core_or_two() {
        // Tanh between the layers of the tutorial's sizes, and a layer with no activation
        // after it below the logits.
        let model = ModelConfig::Layers(LayersConfig::parse("fc128,tanh,fc400,fc10").unwrap());
        let plan = model.plan().unwrap();
        let batch = Dataset::lite(Split::Train).truncated(32).batch(0..32);
        let d_logits: Vec<f32> = (0..32 * NUM_CLASSES)
            .map(|i| (i % 7) as f32 - 3.0)
            .collect();
        let pass = |cores: pair::Cores| {
            let mut network = Network::new(&plan, model.initial_weights(5)).unwrap();
            let links = network
                .chain
                .take()
                .expect("a chain of fully connected layers");
            assert!(chain::takes(&links, 32));
            network.outputs[0] = batch.pixels.clone();
            let forward = chain::forward(cores, &links, &network.params, &mut network.outputs);
            let Network {
                params,
                outputs,
                deltas,
                ..
            } = &mut network;
            let backward = chain::backward(cores, &links, params, outputs, &d_logits, deltas);
            let outputs: Vec<Vec<u32>> = network.outputs.iter().map(|o| bits(o)).collect();
            let gradients: Vec<Vec<u32>> = network.params.iter().map(|p| bits(&p.grad)).collect();
            ((outputs, gradients), [forward, backward])
        };
        let (one, _) = pass(pair::Cores::One);
        // Other tests may hold the helper for a while: keep on until it has taken passes too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut on_two_cores = 0;
        for pass_pair in 0.. {
            let done = on_two_cores > 0 || std::time::Instant::now() > deadline;
            if pass_pair >= 10 && done {
                break;
            }
            let (two, cores) = pass(pair::Cores::Two);
            assert!(two == one, "two cores changed the bits");
            on_two_cores += cores.iter().filter(|&&c| c == pair::Cores::Two).count();
        }
        if rayon::current_num_threads() > 1 {
            assert!(on_two_cores > 0, "no pass ran on two cores");
        }
        // The engine's step-by-step passes, whose products are not cut, agree to rounding.
        let mut network = Network::new(&plan, model.initial_weights(5)).unwrap();
        network.chain = None;
        let pass = TrainingPass {
            seed: 0,
            track_running: true,
        };
        network.forward_train(&batch.pixels, pass);
        network.backward(&d_logits);
        let floats = |bits: &[u32]| bits.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
        for (ours, steps) in one.0.iter().zip(&network.outputs) {
            assert!(relative_error(&floats(ours), steps) < 1e-6);
        }
        for (ours, param) in one.1.iter().zip(&network.params) {
            let error = relative_error(&floats(ours), &param.grad);
            assert!(error < 1e-6, "{}: {error}", param.name);
        }
    }

    #[test]
    fn training_gives_the_same_bits_whether_or_not_the_batch_is_split_over_threads() {
        let model = ModelKind::Cnn.config();
        // Batches of 64, whose `fc1` products are large enough to be split.
        let data = Dataset::lite(Split::Train).truncated(128);
        let train = || {
            let mut trainer = trainer(&model, EngineChoice::Auto);
            assert!(trainer.is_fused());
            for batch in data.batches(64, None) {
                trainer.step(&batch);
            }
            trainer.weights()
        };
        // Called from a thread of rayon's pool, the kernels take the whole batch at once.
        let whole = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(train);
        assert!(train() == whole, "splitting the batch changed the weights");
    }
}
