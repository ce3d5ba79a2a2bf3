//! Convolutional networks: LeNet-5 and a modern small CNN, both described by one config.
//!
//! Tensor names follow the PyTorch module a reader would write for the same network
//! (`conv1`, `bn1`, `fc1`, ..., `output`), in PyTorch's layouts, so a state dict moves between
//! the two without renaming:
//!
//! ```python
//! # digits' `cnn` model in PyTorch
//! class Cnn(nn.Module):
//!     def __init__(self):
//!         super().__init__()
//!         self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False); self.bn1 = nn.BatchNorm2d(32)
//!         self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False); self.bn2 = nn.BatchNorm2d(64)
//!         self.fc1 = nn.Linear(64 * 7 * 7, 128); self.output = nn.Linear(128, 10)
//!         self.dropout = nn.Dropout(0.25)
//!     def forward(self, x):
//!         x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
//!         x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
//!         x = F.relu(self.fc1(self.dropout(x.flatten(1))))
//!         return self.output(self.dropout(x))
//! ```

use burn::module::RunningState;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::layers::{self, Normalization, ParamIds, PyTorchInit, Reading};
use super::mlp::Activation;
use super::weights::{self, ArchitectureError, Weights, WeightsError};
use crate::data::{IMAGE_SIDE, NUM_CLASSES};

/// PyTorch's `BatchNorm2d` defaults.
const BATCH_NORM_EPSILON: f64 = 1e-5;
const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// One convolution: `channels` square `kernel`s, zero `padding` on each side, stride 1,
/// followed by batch norm (if the network has it), the activation and, if `pool`, a 2x2 max
/// pooling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvLayer {
    pub channels: usize,
    pub kernel: usize,
    pub padding: usize,
    pub pool: bool,
}

/// The shape of a convolutional network: convolutions, then fully connected layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    pub conv: Vec<ConvLayer>,
    /// Batch norm after every convolution (whose bias it makes redundant, so they have none).
    pub batch_norm: bool,
    /// Widths of the fully connected hidden layers, named `fc1`, `fc2`, ...
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Dropout probability on the input of every fully connected layer (0: none).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

impl CnnConfig {
    /// LeNet-5 (LeCun et al. 1998) as it is usually written today: ReLU and max pooling
    /// instead of scaled tanh and trainable subsampling, 28x28 input padded to 32x32 by the
    /// first convolution. 61,706 parameters.
    pub fn lenet5() -> Self {
        let conv = |channels, padding| ConvLayer {
            channels,
            kernel: 5,
            padding,
            pool: true,
        };
        Self {
            conv: vec![conv(6, 2), conv(16, 0)],
            batch_norm: false,
            hidden: vec![120, 84],
            activation: Activation::Relu,
            dropout: 0.0,
            normalization: None,
        }
    }

    /// The `cnn` model: two blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling
    /// (32 and 64 channels), a 128-unit layer, dropout. Chosen for the 2-core laptop: the
    /// usual second convolution per block triples the time per image (measured: 155 against
    /// 730 images/s training on 2 cores) for a few hundredths of a point.
    pub fn small() -> Self {
        let conv = |channels| ConvLayer {
            channels,
            kernel: 3,
            padding: 1,
            pool: true,
        };
        Self {
            conv: vec![conv(32), conv(64)],
            batch_norm: true,
            hidden: vec![128],
            activation: Activation::Relu,
            dropout: 0.25,
            normalization: None,
        }
    }

    /// The `cnn-large` model: the VGG pattern, two 3x3 convolutions per block (32 then 64
    /// channels) with batch norm, a 256-unit layer and dropout 0.4. For Fashion-MNIST, where
    /// `cnn` stops near 92%: clothes need depth that digits do not. About 4.5 times `cnn`'s
    /// arithmetic per image; twice these widths cost 4 times more for under a point at five
    /// epochs (92.4% against 91.3% on Fashion-MNIST, measured on a GPU).
    pub fn large() -> Self {
        let conv = |channels, pool| ConvLayer {
            channels,
            kernel: 3,
            padding: 1,
            pool,
        };
        Self {
            conv: vec![
                conv(32, false),
                conv(32, true),
                conv(64, false),
                conv(64, true),
            ],
            batch_norm: true,
            hidden: vec![256],
            activation: Activation::Relu,
            dropout: 0.4,
            normalization: None,
        }
    }

    /// Channels and side of the feature map after each convolution block, or why the
    /// layers do not fit a 28x28 image.
    fn feature_maps(&self) -> Result<Vec<(usize, usize)>, WeightsError> {
        let mut side = IMAGE_SIDE;
        let mut maps = Vec::new();
        for (i, layer) in self.conv.iter().enumerate() {
            // A config read from disk may hold anything: kernels wider than the image or
            // padding as wide as the kernel are refused before any size is computed from them.
            if layer.kernel > IMAGE_SIDE || layer.padding >= layer.kernel.max(1) {
                return Err(ArchitectureError::Kernel {
                    layer: i + 1,
                    kernel: layer.kernel,
                    padding: layer.padding,
                }
                .into());
            }
            let padded = side + 2 * layer.padding;
            if layer.channels == 0 || layer.kernel == 0 || layer.kernel > padded {
                return Err(ArchitectureError::DoesNotFit {
                    layer: i + 1,
                    channels: layer.channels,
                    kernel: layer.kernel,
                    side,
                }
                .into());
            }
            side = padded - layer.kernel + 1;
            if layer.pool {
                side /= 2;
            }
            if side == 0 {
                return Err(ArchitectureError::NothingLeft { layer: i + 1 }.into());
            }
            maps.push((layer.channels, side));
        }
        Ok(maps)
    }

    /// `(name, [inputs, outputs])` of each fully connected layer.
    fn linear_layers(&self) -> Result<Vec<(String, [usize; 2])>, WeightsError> {
        let (channels, side) = self
            .feature_maps()?
            .last()
            .copied()
            .unwrap_or((1, IMAGE_SIDE));
        let features = channels
            .checked_mul(side * side)
            .ok_or(ArchitectureError::TooManyChannels { channels })?;
        let widths: Vec<usize> = std::iter::once(features)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(NUM_CLASSES))
            .collect();
        let count = widths.len() - 1;
        Ok((0..count)
            .map(|i| {
                let name = if i + 1 == count {
                    "output".to_string()
                } else {
                    format!("fc{}", i + 1)
                };
                (name, [widths[i], widths[i + 1]])
            })
            .collect())
    }

    /// Fresh weights as PyTorch draws them (batch norm: scale 1, shift 0, running mean 0 and
    /// variance 1).
    pub fn initial_weights(&self, seed: u64) -> Weights {
        let mut init = PyTorchInit::new(seed);
        let mut inputs = 1;
        for (i, layer) in self.conv.iter().enumerate() {
            let name = format!("conv{}", i + 1);
            init.layer(
                &name,
                vec![layer.channels, inputs, layer.kernel, layer.kernel],
            );
            if self.batch_norm {
                init.weights.remove(&format!("{name}.bias"));
                let bn = format!("bn{}", i + 1);
                init.constant(&format!("{bn}.weight"), layer.channels, 1.0);
                init.constant(&format!("{bn}.bias"), layer.channels, 0.0);
                init.constant(&format!("{bn}.running_mean"), layer.channels, 0.0);
                init.constant(&format!("{bn}.running_var"), layer.channels, 1.0);
            }
            inputs = layer.channels;
        }
        for (name, [inputs, outputs]) in self.linear_layers().unwrap_or_default() {
            init.layer(&name, vec![outputs, inputs]);
        }
        init.weights
    }

    /// Trainable parameters (batch norm's running statistics are not).
    pub fn parameter_count(&self) -> usize {
        let mut inputs = 1;
        let mut count = 0;
        for layer in &self.conv {
            count += layer.channels * inputs * layer.kernel * layer.kernel;
            count += if self.batch_norm { 2 } else { 1 } * layer.channels;
            inputs = layer.channels;
        }
        let linear: usize = self
            .linear_layers()
            .unwrap_or_default()
            .iter()
            .map(|(_, [i, o])| i * o + o)
            .sum();
        count + linear
    }

    /// e.g. `cnn conv32k3p-conv64k3p bn fc128 dropout0.25`.
    pub fn describe(&self) -> String {
        let conv: Vec<String> = self
            .conv
            .iter()
            .map(|l| {
                format!(
                    "conv{}k{}{}",
                    l.channels,
                    l.kernel,
                    if l.pool { "p" } else { "" }
                )
            })
            .collect();
        let mut parts = vec!["cnn".to_string(), conv.join("-")];
        if self.batch_norm {
            parts.push("bn".into());
        }
        parts.extend(self.hidden.iter().map(|w| format!("fc{w}")));
        parts.push(self.activation.as_str().into());
        if self.dropout > 0.0 {
            parts.push(format!("dropout{}", self.dropout));
        }
        parts.join(" ")
    }
}

/// A convolution with what follows it.
#[derive(Module, Debug)]
struct ConvBlock {
    conv: Conv2d,
    norm: Option<BatchNorm>,
    pool: Option<MaxPool2d>,
}

/// The network itself.
#[derive(Module, Debug)]
pub struct Cnn {
    blocks: Vec<ConvBlock>,
    linears: Vec<Linear>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    normalization: Option<Normalization>,
}

impl Cnn {
    /// Builds the network from weights in PyTorch's layout, refusing any that do not fit.
    pub fn from_weights(
        config: &CnnConfig,
        mut weights: Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let dropout = layers::dropout(config.dropout)?;
        // Checks the whole geometry before any tensor is taken.
        let linear_layers = config.linear_layers()?;
        let mut ids = ParamIds::default();
        let mut blocks = Vec::new();
        let mut inputs = 1;
        for (i, layer) in config.conv.iter().enumerate() {
            let name = format!("conv{}", i + 1);
            let k = layer.kernel;
            let shape = [layer.channels, inputs, k, k];
            let weight = layers::tensor(&mut weights, &format!("{name}.weight"), shape, device)?;
            let bias = if config.batch_norm {
                None
            } else {
                let bias =
                    layers::tensor(&mut weights, &format!("{name}.bias"), [shape[0]], device)?;
                Some(ids.param(bias))
            };
            let p = layer.padding;
            let conv = Conv2d {
                weight: ids.param(weight),
                bias,
                stride: [1, 1],
                kernel_size: [k, k],
                dilation: [1, 1],
                groups: 1,
                padding: PaddingConfig2d::Explicit(p, p, p, p),
            };
            let norm = if config.batch_norm {
                Some(batch_norm(
                    &mut weights,
                    &format!("bn{}", i + 1),
                    layer.channels,
                    &mut ids,
                    device,
                )?)
            } else {
                None
            };
            let pool = layer
                .pool
                .then(|| MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init());
            blocks.push(ConvBlock { conv, norm, pool });
            inputs = layer.channels;
        }
        let linears = linear_layers
            .into_iter()
            .map(|(name, shape)| layers::linear(&mut weights, &name, shape, &mut ids, device))
            .collect::<Result<Vec<_>, _>>()?;
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            blocks,
            linears,
            dropout,
            activation: config.activation,
            normalization: config.normalization,
        })
    }

    /// `[N, 1, 28, 28]` images to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = Normalization::apply(self.normalization, images);
        for block in &self.blocks {
            x = block.conv.forward(x);
            if let Some(norm) = &block.norm {
                x = norm.forward(x);
            }
            x = self.activation.apply(x);
            if let Some(pool) = &block.pool {
                x = pool.forward(x);
            }
        }
        let [n, c, h, w] = x.dims();
        let mut x = x.reshape([n, c * h * w]);
        for (i, layer) in self.linears.iter().enumerate() {
            if i > 0 {
                x = self.activation.apply(x);
            }
            x = layer.forward(self.dropout.forward(x));
        }
        x
    }

    /// The weights (or their gradients) under the names of the module docs.
    pub(crate) fn read(&self, config: &CnnConfig, reading: Reading) -> Weights {
        let mut out = Weights::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let conv = format!("conv{}", i + 1);
            reading.insert(
                &mut out,
                &format!("{conv}.weight"),
                reading.read(&block.conv.weight),
            );
            if let Some(bias) = &block.conv.bias {
                reading.insert(&mut out, &format!("{conv}.bias"), reading.read(bias));
            }
            if let Some(norm) = &block.norm {
                let bn = format!("bn{}", i + 1);
                reading.insert(&mut out, &format!("{bn}.weight"), reading.read(&norm.gamma));
                reading.insert(&mut out, &format!("{bn}.bias"), reading.read(&norm.beta));
                if matches!(reading, Reading::Values) {
                    reading.insert(
                        &mut out,
                        &format!("{bn}.running_mean"),
                        Some(norm.running_mean.value()),
                    );
                    reading.insert(
                        &mut out,
                        &format!("{bn}.running_var"),
                        Some(norm.running_var.value()),
                    );
                }
            }
        }
        let names = config.linear_layers().unwrap_or_default();
        for ((name, _), layer) in names.iter().zip(&self.linears) {
            layers::read_linear(layer, name, reading, &mut out);
        }
        out
    }
}

/// Batch norm `name` with PyTorch's defaults, from its four tensors.
fn batch_norm(
    weights: &mut Weights,
    name: &str,
    channels: usize,
    ids: &mut ParamIds,
    device: &Device,
) -> Result<BatchNorm, WeightsError> {
    let mut take =
        |suffix: &str| layers::tensor(weights, &format!("{name}.{suffix}"), [channels], device);
    let (gamma, beta) = (take("weight")?, take("bias")?);
    let (mean, var) = (take("running_mean")?, take("running_var")?);
    let mut norm = burn::nn::BatchNormConfig::new(channels)
        .with_epsilon(BATCH_NORM_EPSILON)
        .with_momentum(BATCH_NORM_MOMENTUM)
        .init(device);
    norm.gamma = ids.param(gamma);
    norm.beta = ids.param(beta);
    norm.running_mean = RunningState::new(mean);
    norm.running_var = RunningState::new(var);
    Ok(norm)
}
