//! The tutorial's network: a multilayer perceptron, 784 -> 128 -> 400 -> 10 by default.

use burn::nn::{Dropout, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use super::layers::{self, Normalization, ParamIds, PyTorchInit, Reading};
use super::weights::{self, Weights, WeightsError};
use crate::choice::Choice;
use crate::data::{IMAGE_PIXELS, NUM_CLASSES};

/// The non-linearity between layers. The tutorial uses ReLU and discusses sigmoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
}

impl Choice for Activation {
    const KIND: &'static str = "activation";
    const ALL: &'static [Self] = &[Self::Relu, Self::Sigmoid];

    fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

impl Activation {
    pub(crate) fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Sigmoid => activation::sigmoid(x),
        }
    }
}

/// The shape of an MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Widths of the hidden layers, named `hidden1`, `hidden2`, ... as in the tutorial.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Dropout probability on the input of every layer after the first (0: none).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

impl Default for MlpConfig {
    /// The tutorial's: two hidden layers of 128 and 400 units with ReLU.
    fn default() -> Self {
        Self {
            hidden: vec![128, 400],
            activation: Activation::Relu,
            dropout: 0.0,
            normalization: None,
        }
    }
}

impl MlpConfig {
    /// The `mlp-large` model: two hidden layers of 800 with dropout, the classic MLP baseline
    /// (Simard et al. 2003 reached 98.4% with 800 hidden units).
    pub fn large() -> Self {
        Self {
            hidden: vec![800, 800],
            dropout: 0.5,
            ..Self::default()
        }
    }

    /// `(name, [inputs, outputs])` of each layer, in order.
    fn layers(&self) -> Vec<(String, [usize; 2])> {
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
                (name, [widths[i], widths[i + 1]])
            })
            .collect()
    }

    /// Fresh weights, drawn as PyTorch's `nn.Linear` draws them.
    pub fn initial_weights(&self, seed: u64) -> Weights {
        let mut init = PyTorchInit::new(seed);
        for (name, [inputs, outputs]) in self.layers() {
            init.layer(&name, vec![outputs, inputs]);
        }
        init.weights
    }

    pub fn parameter_count(&self) -> usize {
        self.layers().iter().map(|(_, [i, o])| i * o + o).sum()
    }
}

/// The MLP itself.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    normalization: Option<Normalization>,
}

impl Mlp {
    /// Builds the network from weights in PyTorch's layout, refusing any that do not fit.
    pub fn from_weights(
        config: &MlpConfig,
        mut weights: Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let dropout = layers::dropout(config.dropout)?;
        let mut ids = ParamIds::default();
        let layers = config
            .layers()
            .into_iter()
            .map(|(name, shape)| layers::linear(&mut weights, &name, shape, &mut ids, device))
            .collect::<Result<Vec<_>, _>>()?;
        weights::ensure_consumed(&weights)?;
        Ok(Self {
            layers,
            dropout,
            activation: config.activation,
            normalization: config.normalization,
        })
    }

    /// `[N, 1, 28, 28]` images to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [n, ..] = images.dims();
        let mut x = Normalization::apply(self.normalization, images).reshape([n, IMAGE_PIXELS]);
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                x = self.dropout.forward(self.activation.apply(x));
            }
            x = layer.forward(x);
        }
        x
    }

    /// The weights (or their gradients) in PyTorch's layout, under the tutorial's names.
    pub(crate) fn read(&self, config: &MlpConfig, reading: Reading) -> Weights {
        let mut out = Weights::new();
        for ((name, _), layer) in config.layers().into_iter().zip(&self.layers) {
            layers::read_linear(layer, &name, reading, &mut out);
        }
        out
    }
}
