//! The network plan: the one place that knows a network's layers, in order, with their
//! PyTorch names, shapes, initialisation and constants.
//!
//! Everything else walks a plan rather than working the layers out again: the Burn module
//! ([`super::Model`]), digits' CPU engine (`crate::cpu`), parameter counts, initial weights, ONNX export and
//! the state-dict bookkeeping of import and export. A new layer kind is a variant of [`Layer`]
//! and one arm in each of those walks; the compiler lists the walks that lack it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layers::Normalization;
use super::weights::{NamedTensor, Weights};
use crate::choice::Choice;
use crate::data::{IMAGE_SIDE, NUM_CLASSES};

/// PyTorch's `BatchNorm2d` defaults, used by training, inference and ONNX export alike.
pub const BATCH_NORM_EPSILON: f64 = 1e-5;
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// The non-linearity between layers. The tutorial uses ReLU and discusses sigmoid; tanh is
/// LeNet's and many older models'; GELU (exact, with erf, as PyTorch's `nn.GELU()`) is the
/// transformer-era default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
    Gelu,
}

impl Choice for Activation {
    const KIND: &'static str = "activation";
    const ALL: &'static [Self] = &[Self::Relu, Self::Sigmoid, Self::Tanh, Self::Gelu];

    fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
        }
    }
}

/// How a 2x2 window (stride 2) is reduced to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// `nn.MaxPool2d(2)`.
    Max,
    /// `nn.AvgPool2d(2)`: LeNet-5's original subsampling, and common in imported models.
    Average,
}

/// One layer, with everything needed to build, name, initialise and export it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `nn.Conv2d(inputs, outputs, kernel, padding=padding, bias=bias)`, stride 1.
    Conv {
        name: String,
        inputs: usize,
        outputs: usize,
        kernel: usize,
        padding: usize,
        bias: bool,
    },
    /// `nn.BatchNorm2d(channels)` with PyTorch's defaults.
    BatchNorm {
        name: String,
        channels: usize,
    },
    Activation(Activation),
    Pool(Pooling),
    /// Feature maps `[N, C, H, W]` to features `[N, C*H*W]`, in PyTorch's order.
    Flatten,
    /// Dropout with this probability while training; nothing at inference.
    Dropout(f64),
    /// `nn.Linear(inputs, outputs)`.
    Linear {
        name: String,
        inputs: usize,
        outputs: usize,
    },
}

/// What a layer's tensor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Weight,
    Bias,
    /// Batch norm's learned scale (`weight` in PyTorch).
    Scale,
    /// Batch norm's learned shift (`bias` in PyTorch).
    Shift,
    RunningMean,
    RunningVar,
}

impl Role {
    /// Whether the optimizer updates it (batch norm's running statistics are buffers).
    pub fn is_trainable(self) -> bool {
        !matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// One tensor of a layer, under its PyTorch state-dict name, in PyTorch's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

impl Layer {
    /// The layer's tensors in state-dict order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let spec = |name: &str, suffix: &str, shape: Vec<usize>, role| ParamSpec {
            name: format!("{name}.{suffix}"),
            shape,
            role,
        };
        match self {
            Layer::Conv {
                name,
                inputs,
                outputs,
                kernel,
                bias,
                ..
            } => {
                let mut params = vec![spec(
                    name,
                    "weight",
                    vec![*outputs, *inputs, *kernel, *kernel],
                    Role::Weight,
                )];
                if *bias {
                    params.push(spec(name, "bias", vec![*outputs], Role::Bias));
                }
                params
            }
            Layer::BatchNorm { name, channels } => vec![
                spec(name, "weight", vec![*channels], Role::Scale),
                spec(name, "bias", vec![*channels], Role::Shift),
                spec(name, "running_mean", vec![*channels], Role::RunningMean),
                spec(name, "running_var", vec![*channels], Role::RunningVar),
            ],
            Layer::Linear {
                name,
                inputs,
                outputs,
            } => vec![
                spec(name, "weight", vec![*outputs, *inputs], Role::Weight),
                spec(name, "bias", vec![*outputs], Role::Bias),
            ],
            Layer::Activation(_) | Layer::Pool(_) | Layer::Flatten | Layer::Dropout(_) => {
                Vec::new()
            }
        }
    }
}

/// Why a config does not describe a network that fits a 28x28 image.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{name}: kernel {kernel} with padding {padding} (kernels are at most {IMAGE_SIDE} wide, \
         padding smaller than the kernel)"
    )]
    KernelOutOfRange {
        name: String,
        kernel: usize,
        padding: usize,
    },
    #[error("{name} ({channels} channels, kernel {kernel}) does not fit a {side}x{side} input")]
    ConvolutionDoesNotFit {
        name: String,
        channels: usize,
        kernel: usize,
        side: usize,
    },
    #[error("nothing is left of the image after {after}")]
    NothingLeft { after: String },
    #[error("{channels} channels is too many")]
    TooManyFeatures { channels: usize },
    #[error("{name} has no units")]
    NoUnits { name: String },
    #[error("dropout {0} is not in [0, 1)")]
    Dropout(f64),
    #[error("{name} needs feature maps, but the layers before it flattened them")]
    AfterFlatten { name: String },
    #[error("{name} needs flat features: put a flatten before it")]
    NotFlattened { name: String },
    #[error("the network ends in {found}, not in {NUM_CLASSES} logits")]
    NotTenLogits { found: String },
}

/// What flows between layers, so each layer can check its input.
#[derive(Debug, Clone, Copy)]
enum Flow {
    Maps { channels: usize, side: usize },
    Features(usize),
}

/// A whole network: input normalisation, then layers, from `[N, 1, 28, 28]` pixels in [0, 1]
/// to `[N, 10]` logits. Built only by [`PlanBuilder`], so every plan fits together.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    normalization: Option<Normalization>,
    layers: Vec<Layer>,
}

impl Plan {
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The input standardisation done before the first layer, if any.
    pub fn normalization(&self) -> Option<Normalization> {
        self.normalization
    }

    /// Every tensor of every layer, in state-dict order.
    pub fn params(&self) -> impl Iterator<Item = ParamSpec> + '_ {
        self.layers.iter().flat_map(Layer::params)
    }

    /// Trainable parameters (batch norm's running statistics are not).
    pub fn parameter_count(&self) -> usize {
        self.params()
            .filter(|p| p.role.is_trainable())
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Fresh weights as PyTorch draws them: weights and biases uniform in `±1/sqrt(fan_in)`,
    /// batch norm scale 1, shift 0, running mean 0 and variance 1. Drawn on the host from a
    /// seeded generator, so every backend starts identically.
    ///
    /// A convolution without bias still draws one and drops it: the draws stay in step with
    /// those of the runs saved before the plan existed, so their recipes give the same weights.
    pub fn initial_weights(&self, seed: u64) -> Weights {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = Weights::new();
        for layer in &self.layers {
            let (bias_drawn_anyway, fan_in, outputs) = match layer {
                Layer::Conv {
                    name,
                    inputs,
                    outputs,
                    kernel,
                    bias: false,
                    ..
                } => (Some(name), inputs * kernel * kernel, *outputs),
                Layer::Conv {
                    inputs,
                    outputs,
                    kernel,
                    ..
                } => (None, inputs * kernel * kernel, *outputs),
                Layer::Linear {
                    inputs, outputs, ..
                } => (None, *inputs, *outputs),
                _ => (None, 0, 0),
            };
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let mut uniform = |len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-bound..bound)).collect()
            };
            for param in layer.params() {
                let len = param.shape.iter().product();
                let values = match param.role {
                    Role::Weight | Role::Bias => uniform(len),
                    Role::Scale | Role::RunningVar => vec![1.0; len],
                    Role::Shift | Role::RunningMean => vec![0.0; len],
                };
                weights.insert(
                    param.name,
                    NamedTensor {
                        shape: param.shape,
                        values,
                    },
                );
            }
            if bias_drawn_anyway.is_some() {
                uniform(outputs);
            }
        }
        weights
    }
}

impl Plan {
    /// Floating-point operations of one image's forward pass: two per multiply-add of the
    /// convolutions and fully connected layers (the rest is memory traffic). A training step
    /// costs about three times as much (forward, and the gradients of inputs and weights).
    pub fn forward_flops(&self) -> u64 {
        let mut side = IMAGE_SIDE as u64;
        let mut flops = 0;
        for layer in &self.layers {
            match layer {
                Layer::Conv {
                    inputs,
                    outputs,
                    kernel,
                    padding,
                    ..
                } => {
                    side = side + 2 * *padding as u64 + 1 - *kernel as u64;
                    flops += 2 * (inputs * outputs * kernel * kernel) as u64 * side * side;
                }
                Layer::Pool(_) => side /= 2,
                Layer::Linear {
                    inputs, outputs, ..
                } => flops += 2 * (inputs * outputs) as u64,
                Layer::BatchNorm { .. }
                | Layer::Activation(_)
                | Layer::Flatten
                | Layer::Dropout(_) => {}
            }
        }
        flops
    }

    /// A one-line description for logs: `mlp 784-128-400-10 relu` for a network of fully
    /// connected layers, `cnn conv32k3p-conv64k3p bn fc128 relu dropout0.25` with
    /// convolutions (`p` after a max-pooled one, `a` after an average-pooled one).
    pub fn describe(&self) -> String {
        let mut convs: Vec<String> = Vec::new();
        let mut widths: Vec<usize> = Vec::new();
        let (mut batch_norm, mut activation, mut dropout) = (false, None, None);
        for layer in &self.layers {
            match layer {
                Layer::Conv {
                    outputs, kernel, ..
                } => convs.push(format!("conv{outputs}k{kernel}")),
                Layer::Pool(pooling) => {
                    if let Some(conv) = convs.last_mut() {
                        conv.push(match pooling {
                            Pooling::Max => 'p',
                            Pooling::Average => 'a',
                        });
                    }
                }
                Layer::BatchNorm { .. } => batch_norm = true,
                Layer::Activation(f) => activation = activation.or(Some(*f)),
                Layer::Dropout(p) => dropout = dropout.or(Some(*p)),
                Layer::Linear {
                    inputs, outputs, ..
                } => {
                    if widths.is_empty() {
                        widths.push(*inputs);
                    }
                    widths.push(*outputs);
                }
                Layer::Flatten => {}
            }
        }
        let mut parts = Vec::new();
        if convs.is_empty() {
            let widths: Vec<String> = widths.iter().map(usize::to_string).collect();
            parts.extend(["mlp".to_string(), widths.join("-")]);
        } else {
            parts.extend(["cnn".to_string(), convs.join("-")]);
            if batch_norm {
                parts.push("bn".into());
            }
            // The widths between the first layer's input and the logits, if any layer is
            // fully connected at all.
            let hidden = widths.get(1..widths.len().saturating_sub(1)).unwrap_or(&[]);
            parts.extend(hidden.iter().map(|w| format!("fc{w}")));
        }
        parts.extend(activation.map(|f| f.name().to_string()));
        if let Some(p) = dropout {
            parts.push(format!("dropout{p}"));
        }
        parts.join(" ")
    }
}

/// Lays out a plan layer by layer, checking that each fits what the one before gives.
pub struct PlanBuilder {
    normalization: Option<Normalization>,
    layers: Vec<Layer>,
    flow: Flow,
}

impl PlanBuilder {
    /// A plan that starts from one 28x28 channel.
    pub fn new(normalization: Option<Normalization>) -> Self {
        Self {
            normalization,
            layers: Vec::new(),
            flow: Flow::Maps {
                channels: 1,
                side: IMAGE_SIDE,
            },
        }
    }

    /// A square `kernel` convolution to `outputs` channels, stride 1.
    pub fn conv(
        mut self,
        name: &str,
        outputs: usize,
        kernel: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self, PlanError> {
        let (inputs, side) = self.maps(name)?;
        // A config read from disk may hold anything: kernels wider than the image or padding
        // as wide as the kernel are refused before any size is computed from them.
        if kernel > IMAGE_SIDE || padding >= kernel.max(1) {
            return Err(PlanError::KernelOutOfRange {
                name: name.into(),
                kernel,
                padding,
            });
        }
        let padded = side + 2 * padding;
        if outputs == 0 || kernel == 0 || kernel > padded {
            return Err(PlanError::ConvolutionDoesNotFit {
                name: name.into(),
                channels: outputs,
                kernel,
                side,
            });
        }
        self.flow = Flow::Maps {
            channels: outputs,
            side: padded - kernel + 1,
        };
        self.layers.push(Layer::Conv {
            name: name.into(),
            inputs,
            outputs,
            kernel,
            padding,
            bias,
        });
        Ok(self)
    }

    /// Batch norm over the channels of the feature maps.
    pub fn batch_norm(mut self, name: &str) -> Result<Self, PlanError> {
        let (channels, _) = self.maps(name)?;
        self.layers.push(Layer::BatchNorm {
            name: name.into(),
            channels,
        });
        Ok(self)
    }

    pub fn activation(mut self, activation: Activation) -> Self {
        self.layers.push(Layer::Activation(activation));
        self
    }

    /// 2x2 pooling, stride 2, which halves the side (rounding down, as PyTorch does).
    pub fn pool(mut self, pooling: Pooling) -> Result<Self, PlanError> {
        let (channels, side) = self.maps("pooling")?;
        if side / 2 == 0 {
            return Err(PlanError::NothingLeft {
                after: self.last_named(),
            });
        }
        self.flow = Flow::Maps {
            channels,
            side: side / 2,
        };
        self.layers.push(Layer::Pool(pooling));
        Ok(self)
    }

    /// Dropout with probability `p`; none at all when `p` is 0. Refused unless `p` is in
    /// [0, 1): a config read from disk may hold anything, and Burn's own check would panic.
    pub fn dropout(mut self, p: f64) -> Result<Self, PlanError> {
        if !(0.0..1.0).contains(&p) {
            return Err(PlanError::Dropout(p));
        }
        if p > 0.0 {
            self.layers.push(Layer::Dropout(p));
        }
        Ok(self)
    }

    /// Feature maps to features, in PyTorch's `flatten(1)` order.
    pub fn flatten(mut self) -> Result<Self, PlanError> {
        let (channels, side) = self.maps("flatten")?;
        let features = channels
            .checked_mul(side * side)
            .ok_or(PlanError::TooManyFeatures { channels })?;
        self.flow = Flow::Features(features);
        self.layers.push(Layer::Flatten);
        Ok(self)
    }

    /// A fully connected layer to `outputs` units, after [`PlanBuilder::flatten`].
    pub fn linear(mut self, name: &str, outputs: usize) -> Result<Self, PlanError> {
        let Flow::Features(inputs) = self.flow else {
            return Err(PlanError::NotFlattened { name: name.into() });
        };
        if outputs == 0 {
            return Err(PlanError::NoUnits { name: name.into() });
        }
        self.flow = Flow::Features(outputs);
        self.layers.push(Layer::Linear {
            name: name.into(),
            inputs,
            outputs,
        });
        Ok(self)
    }

    /// The plan, which must end in the ten class logits.
    pub fn finish(self) -> Result<Plan, PlanError> {
        match self.flow {
            Flow::Features(NUM_CLASSES) => Ok(Plan {
                normalization: self.normalization,
                layers: self.layers,
            }),
            Flow::Features(features) => Err(PlanError::NotTenLogits {
                found: format!("{features} features"),
            }),
            Flow::Maps { channels, side } => Err(PlanError::NotTenLogits {
                found: format!("{channels} feature maps of {side}x{side}"),
            }),
        }
    }

    /// Channels and side of the feature maps that `name` takes.
    fn maps(&self, name: &str) -> Result<(usize, usize), PlanError> {
        match self.flow {
            Flow::Maps { channels, side } => Ok((channels, side)),
            Flow::Features(_) => Err(PlanError::AfterFlatten { name: name.into() }),
        }
    }

    /// The name of the last layer that has one, for messages.
    fn last_named(&self) -> String {
        self.layers
            .iter()
            .rev()
            .find_map(|layer| match layer {
                Layer::Conv { name, .. }
                | Layer::BatchNorm { name, .. }
                | Layer::Linear { name, .. } => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "the input".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet_like() -> Plan {
        PlanBuilder::new(None)
            .conv("conv1", 6, 5, 2, true)
            .and_then(|b| b.activation(Activation::Relu).pool(Pooling::Average))
            .and_then(PlanBuilder::flatten)
            .and_then(|b| b.linear("fc1", 32))
            .map(|b| b.activation(Activation::Relu))
            .and_then(|b| b.linear("output", NUM_CLASSES))
            .and_then(PlanBuilder::finish)
            .unwrap()
    }

    #[test]
    fn a_plan_names_and_shapes_every_tensor_in_state_dict_order() {
        let names: Vec<(String, Vec<usize>)> =
            lenet_like().params().map(|p| (p.name, p.shape)).collect();
        let expected = [
            ("conv1.weight", vec![6, 1, 5, 5]),
            ("conv1.bias", vec![6]),
            ("fc1.weight", vec![32, 6 * 14 * 14]),
            ("fc1.bias", vec![32]),
            ("output.weight", vec![10, 32]),
            ("output.bias", vec![10]),
        ];
        let expected: Vec<(String, Vec<usize>)> = expected
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        assert_eq!(names, expected);
        assert!(lenet_like().layers().contains(&Layer::Flatten));
    }

    #[test]
    fn initial_weights_have_every_tensor_and_follow_the_seed() {
        let plan = lenet_like();
        let weights = plan.initial_weights(3);
        assert_eq!(weights.len(), 6);
        assert_eq!(weights, plan.initial_weights(3));
        assert_ne!(weights, plan.initial_weights(4));
        let bound = 1.0 / 25f32.sqrt();
        assert!(
            weights["conv1.weight"]
                .values
                .iter()
                .all(|v| v.abs() <= bound)
        );
    }

    #[test]
    fn layers_that_do_not_fit_are_refused_with_their_name() {
        let too_wide = PlanBuilder::new(None).conv("conv1", 8, 29, 0, true);
        assert!(matches!(too_wide, Err(PlanError::KernelOutOfRange { .. })));
        let pooled_away = (0..5).try_fold(PlanBuilder::new(None), |b, _| b.pool(Pooling::Max));
        assert_eq!(
            pooled_away.err(),
            Some(PlanError::NothingLeft {
                after: "the input".into()
            })
        );
        assert!(matches!(
            PlanBuilder::new(None).dropout(1.0),
            Err(PlanError::Dropout(_))
        ));
        assert!(matches!(
            PlanBuilder::new(None)
                .flatten()
                .and_then(|b| b.linear("fc1", 0)),
            Err(PlanError::NoUnits { .. })
        ));
    }

    #[test]
    fn forward_flops_count_the_multiply_adds_of_convolutions_and_dense_layers() {
        use crate::model::ModelKind;
        let flops = |kind: ModelKind| kind.config().plan().unwrap().forward_flops();
        assert_eq!(
            flops(ModelKind::Mlp),
            2 * (784 * 128 + 128 * 400 + 400 * 10)
        );
        // conv1 1->32 on 28x28, conv2 32->64 on 14x14, fc1 3136->128, output 128->10.
        let cnn = 2 * (32 * 9 * 28 * 28 + 32 * 64 * 9 * 14 * 14 + 3136 * 128 + 128 * 10);
        assert_eq!(flops(ModelKind::Cnn), cnn);
    }

    #[test]
    fn a_network_of_convolutions_alone_describes_itself() {
        let plan = crate::model::LayersConfig::parse("conv10k28,flatten")
            .unwrap()
            .plan()
            .unwrap();
        assert_eq!(plan.describe(), "cnn conv10k28");
    }

    #[test]
    fn descriptions_are_read_off_the_plan() {
        use crate::model::ModelKind;
        let described = |kind: ModelKind| kind.config().describe();
        assert_eq!(described(ModelKind::Mlp), "mlp 784-128-400-10 relu");
        assert_eq!(
            described(ModelKind::MlpLarge),
            "mlp 784-800-800-10 relu dropout0.5"
        );
        assert_eq!(
            described(ModelKind::Lenet5),
            "cnn conv6k5p-conv16k5p fc120 fc84 relu"
        );
        assert_eq!(
            described(ModelKind::Cnn),
            "cnn conv32k3p-conv64k3p bn fc128 relu dropout0.25"
        );
        assert_eq!(
            described(ModelKind::CnnLarge),
            "cnn conv32k3-conv32k3p-conv64k3-conv64k3p bn fc256 relu dropout0.4"
        );
    }
}
