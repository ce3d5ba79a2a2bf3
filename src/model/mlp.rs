//! The tutorial's network: a multilayer perceptron, 784 -> 128 -> 400 -> 10 by default.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{Gradients, activation};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::weights::{self, NamedTensor, Weights, WeightsError};
use crate::data::{IMAGE_PIXELS, NUM_CLASSES};

/// The non-linearity between layers. The tutorial uses ReLU and discusses sigmoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
}

/// An activation name that digits does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown activation '{0}': expected relu or sigmoid")]
pub struct UnknownActivation(pub String);

impl std::str::FromStr for Activation {
    type Err = UnknownActivation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            other => Err(UnknownActivation(other.to_string())),
        }
    }
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
        }
    }

    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Sigmoid => activation::sigmoid(x),
        }
    }
}

/// The shape of an MLP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Widths of the hidden layers, named `hidden1`, `hidden2`, ... as in the tutorial.
    pub hidden: Vec<usize>,
    pub activation: Activation,
}

impl Default for MlpConfig {
    /// The tutorial's: two hidden layers of 128 and 400 units with ReLU.
    fn default() -> Self {
        Self {
            hidden: vec![128, 400],
            activation: Activation::Relu,
        }
    }
}

impl MlpConfig {
    /// `(name, inputs, outputs)` of each layer, in order.
    fn layers(&self) -> Vec<(String, usize, usize)> {
        let widths: Vec<usize> = std::iter::once(IMAGE_PIXELS)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(NUM_CLASSES))
            .collect();
        let count = widths.len() - 1;
        (0..count)
            .map(|i| {
                let name = if i + 1 == count {
                    "output".to_string()
                } else {
                    format!("hidden{}", i + 1)
                };
                (name, widths[i], widths[i + 1])
            })
            .collect()
    }

    /// Fresh weights drawn as PyTorch's `nn.Linear` draws them: weight and bias uniform in
    /// `±1/sqrt(inputs)`. Drawn on the host from `seed`, so every backend starts identically.
    pub fn initial_weights(&self, seed: u64) -> Weights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = Weights::new();
        for (name, inputs, outputs) in self.layers() {
            let bound = 1.0 / (inputs as f32).sqrt();
            let mut draw = |shape: Vec<usize>| {
                let len = shape.iter().product();
                let values = (0..len).map(|_| rng.random_range(-bound..bound)).collect();
                NamedTensor { shape, values }
            };
            weights.insert(format!("{name}.weight"), draw(vec![outputs, inputs]));
            weights.insert(format!("{name}.bias"), draw(vec![outputs]));
        }
        weights
    }

    pub fn parameter_count(&self) -> usize {
        self.layers().iter().map(|(_, i, o)| i * o + o).sum()
    }
}

/// The MLP itself.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    /// Builds the network from weights in PyTorch's layout, refusing any that do not fit.
    ///
    /// Parameter ids are the layer's position (weight `2i`, bias `2i + 1`) rather than random,
    /// so that a saved optimizer state finds its parameters again when a run is resumed.
    pub fn from_weights(
        config: &MlpConfig,
        mut weights: Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let mut layers = Vec::new();
        for (index, (name, inputs, outputs)) in config.layers().into_iter().enumerate() {
            let weight =
                weights::take(&mut weights, &format!("{name}.weight"), &[outputs, inputs])?;
            let bias = weights::take(&mut weights, &format!("{name}.bias"), &[outputs])?;
            // PyTorch keeps `[out, in]`; Burn's `Linear` multiplies by `[in, out]`.
            let weight = Tensor::<2>::from_data(TensorData::new(weight, [outputs, inputs]), device)
                .transpose();
            let bias = Tensor::<1>::from_data(TensorData::new(bias, [outputs]), device);
            layers.push(Linear {
                weight: parameter(weight, 2 * index),
                bias: Some(parameter(bias, 2 * index + 1)),
            });
        }
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            layers,
            activation: config.activation,
        })
    }

    /// `[N, 1, 28, 28]` images to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [n, ..] = images.dims();
        let mut x = images.reshape([n, IMAGE_PIXELS]);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.activation.apply(x);
            }
        }
        x
    }

    /// The weights in PyTorch's layout, under the tutorial's names.
    pub fn weights(&self, config: &MlpConfig) -> Weights {
        self.named(config, Some, Some)
    }

    /// The gradients of each weight, named and laid out as [`Mlp::weights`].
    pub fn gradients(&self, config: &MlpConfig, grads: &Gradients) -> Weights {
        self.named(config, |t| t.grad(grads), |t| t.grad(grads))
    }

    /// Maps each parameter (weights, then biases) to a host tensor in PyTorch's layout.
    fn named(
        &self,
        config: &MlpConfig,
        matrix: impl Fn(Tensor<2>) -> Option<Tensor<2>>,
        vector: impl Fn(Tensor<1>) -> Option<Tensor<1>>,
    ) -> Weights {
        let mut weights = Weights::new();
        for ((name, inputs, outputs), layer) in config.layers().into_iter().zip(&self.layers) {
            if let Some(weight) = matrix(layer.weight.val()) {
                weights.insert(
                    format!("{name}.weight"),
                    host(weight.transpose(), vec![outputs, inputs]),
                );
            }
            if let Some(bias) = layer.bias.as_ref().and_then(|b| vector(b.val())) {
                weights.insert(format!("{name}.bias"), host(bias, vec![outputs]));
            }
        }
        weights
    }
}

fn parameter<const D: usize>(tensor: Tensor<D>, id: usize) -> Param<Tensor<D>> {
    let mut param = Param::from_tensor(tensor);
    param.id = ParamId::from(id as u64);
    param
}

fn host<const D: usize>(tensor: Tensor<D>, shape: Vec<usize>) -> NamedTensor {
    let values = tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("model parameters are float32");
    NamedTensor { shape, values }
}
