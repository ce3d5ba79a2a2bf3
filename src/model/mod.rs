//! Models: a digit classifier built from a config that is saved beside its weights, so any
//! saved run can be rebuilt exactly.

pub mod mlp;
pub mod weights;

use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

pub use mlp::{Activation, Mlp, MlpConfig};
pub use weights::{NamedTensor, Weights, WeightsError};

/// Which architecture, and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelConfig {
    Mlp(MlpConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Mlp(MlpConfig::default())
    }
}

impl ModelConfig {
    /// Fresh weights, reproducible from `seed`.
    pub fn initial_weights(&self, seed: u64) -> Weights {
        match self {
            ModelConfig::Mlp(config) => config.initial_weights(seed),
        }
    }

    pub fn parameter_count(&self) -> usize {
        match self {
            ModelConfig::Mlp(config) => config.parameter_count(),
        }
    }

    /// A one-line description for logs, e.g. `mlp 784-128-400-10 relu`.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Mlp(config) => {
                let widths: Vec<String> = std::iter::once(crate::data::IMAGE_PIXELS)
                    .chain(config.hidden.iter().copied())
                    .chain(std::iter::once(crate::data::NUM_CLASSES))
                    .map(|w| w.to_string())
                    .collect();
                format!("mlp {} {}", widths.join("-"), config.activation.as_str())
            }
        }
    }
}

/// A digit classifier: images in, ten logits out.
#[derive(Module, Debug)]
pub enum Model {
    Mlp(Mlp),
}

impl Model {
    /// A new, untrained model.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Self {
        Self::from_weights(config, config.initial_weights(seed), device)
            .expect("freshly drawn weights fit their own architecture")
    }

    /// A model with the given weights, which must fit the architecture exactly.
    pub fn from_weights(
        config: &ModelConfig,
        weights: Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        match config {
            ModelConfig::Mlp(config) => Ok(Model::Mlp(Mlp::from_weights(config, weights, device)?)),
        }
    }

    /// `[N, 1, 28, 28]` images with pixels in [0, 1] to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Mlp(mlp) => mlp.forward(images),
        }
    }

    /// The weights, in PyTorch's layout and names.
    pub fn weights(&self, config: &ModelConfig) -> Weights {
        match (self, config) {
            (Model::Mlp(mlp), ModelConfig::Mlp(config)) => mlp.weights(config),
        }
    }

    /// The gradients of each weight after a backward pass, named as [`Model::weights`].
    pub fn gradients(&self, config: &ModelConfig, grads: &Gradients) -> Weights {
        match (self, config) {
            (Model::Mlp(mlp), ModelConfig::Mlp(config)) => mlp.gradients(config, grads),
        }
    }
}
