//! Models: a digit classifier built from a config that is saved beside its weights, so any
//! saved run can be rebuilt exactly.

pub mod cnn;
mod layers;
pub mod mlp;
pub mod weights;

use std::collections::HashMap;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::{Gradients, activation};
use serde::{Deserialize, Serialize};

pub use cnn::{Cnn, CnnConfig, ConvLayer};
pub use layers::Normalization;
pub use mlp::{Activation, Mlp, MlpConfig};
pub use weights::{ArchitectureError, NamedTensor, Weights, WeightsError};

use layers::Reading;

/// Which architecture, and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelConfig {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Mlp(MlpConfig::default())
    }
}

/// The architectures `digits train --model` offers by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// The tutorial's MLP, 784-128-400-10.
    #[default]
    Mlp,
    /// 784-800-800-10 with dropout 0.5.
    MlpLarge,
    /// LeNet-5 with ReLU and max pooling.
    Lenet5,
    /// Two 3x3 convolution blocks with batch norm and pooling, 128 hidden units, dropout.
    Cnn,
    /// Two blocks of two 3x3 convolutions with batch norm, 256 hidden units, dropout.
    CnnLarge,
}

/// A model name that digits does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown model '{0}': expected mlp, mlp-large, lenet5, cnn or cnn-large")]
pub struct UnknownModel(pub String);

impl std::str::FromStr for ModelKind {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mlp" => Ok(ModelKind::Mlp),
            "mlp-large" => Ok(ModelKind::MlpLarge),
            "lenet5" => Ok(ModelKind::Lenet5),
            "cnn" => Ok(ModelKind::Cnn),
            "cnn-large" => Ok(ModelKind::CnnLarge),
            other => Err(UnknownModel(other.to_string())),
        }
    }
}

impl ModelKind {
    pub fn config(self) -> ModelConfig {
        match self {
            ModelKind::Mlp => ModelConfig::Mlp(MlpConfig::default()),
            ModelKind::MlpLarge => ModelConfig::Mlp(MlpConfig::large()),
            ModelKind::Lenet5 => ModelConfig::Cnn(CnnConfig::lenet5()),
            ModelKind::Cnn => ModelConfig::Cnn(CnnConfig::small()),
            ModelKind::CnnLarge => ModelConfig::Cnn(CnnConfig::large()),
        }
    }
}

impl ModelConfig {
    /// Fresh weights, reproducible from `seed`.
    pub fn initial_weights(&self, seed: u64) -> Weights {
        match self {
            ModelConfig::Mlp(config) => config.initial_weights(seed),
            ModelConfig::Cnn(config) => config.initial_weights(seed),
        }
    }

    /// Trainable parameters.
    pub fn parameter_count(&self) -> usize {
        match self {
            ModelConfig::Mlp(config) => config.parameter_count(),
            ModelConfig::Cnn(config) => config.parameter_count(),
        }
    }

    /// The input standardisation built into the model, if any.
    pub fn normalization(&self) -> Option<Normalization> {
        match self {
            ModelConfig::Mlp(config) => config.normalization,
            ModelConfig::Cnn(config) => config.normalization,
        }
    }

    /// The input standardisation, to set it.
    pub fn normalization_mut(&mut self) -> &mut Option<Normalization> {
        match self {
            ModelConfig::Mlp(config) => &mut config.normalization,
            ModelConfig::Cnn(config) => &mut config.normalization,
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
                let mut text = format!("mlp {} {}", widths.join("-"), config.activation.as_str());
                if config.dropout > 0.0 {
                    text.push_str(&format!(" dropout{}", config.dropout));
                }
                text
            }
            ModelConfig::Cnn(config) => config.describe(),
        }
    }
}

/// A digit classifier: images in, ten logits out.
#[derive(Module, Debug)]
pub enum Model {
    Mlp(Mlp),
    Cnn(Cnn),
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
            ModelConfig::Cnn(config) => Ok(Model::Cnn(Cnn::from_weights(config, weights, device)?)),
        }
    }

    /// `[N, 1, 28, 28]` images with pixels in [0, 1] to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Mlp(mlp) => mlp.forward(images),
            Model::Cnn(cnn) => cnn.forward(images),
        }
    }

    /// The weights, in PyTorch's layout and names.
    pub fn weights(&self, config: &ModelConfig) -> Weights {
        self.read(config, Reading::Values)
    }

    /// The gradients of each weight after a backward pass, named as [`Model::weights`].
    pub fn gradients(&self, config: &ModelConfig, grads: &Gradients) -> Weights {
        self.read(config, Reading::Gradients(grads))
    }

    /// Tensors kept per parameter (an optimizer's moments, by parameter id in Burn's layout)
    /// under the parameters' names, in PyTorch's layout; ids of no parameter are left out.
    pub(crate) fn per_parameter(
        &self,
        config: &ModelConfig,
        tensors: &HashMap<ParamId, TensorData>,
    ) -> Weights {
        self.read(config, Reading::PerParameter(tensors))
    }

    fn read(&self, config: &ModelConfig, reading: Reading) -> Weights {
        match (self, config) {
            (Model::Mlp(mlp), ModelConfig::Mlp(config)) => mlp.read(config, reading),
            (Model::Cnn(cnn), ModelConfig::Cnn(config)) => cnn.read(config, reading),
            _ => panic!("a model is read with the config it was built from"),
        }
    }
}

/// Several trained models that answer together by averaging their probabilities: the usual
/// way to gain the last tenths of a point. One model is an ensemble of one.
pub struct Ensemble {
    members: Vec<Model>,
}

impl Ensemble {
    /// # Panics
    /// If `members` is empty.
    pub fn new(members: Vec<Model>) -> Self {
        assert!(!members.is_empty(), "an ensemble has at least one model");
        Self { members }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The device the models live on.
    pub fn device(&self) -> Device {
        use burn::module::Module;
        self.members[0]
            .devices()
            .into_iter()
            .next()
            .expect("a model has at least one parameter")
    }

    /// `[N, 10]` log-probabilities: log-softmax of the logits for one model (exactly the
    /// tutorial's cross-entropy), the log of the mean probability for several.
    pub fn log_probabilities(&self, images: Tensor<4>) -> Tensor<2> {
        if let [model] = self.members.as_slice() {
            return activation::log_softmax(model.forward(images), 1);
        }
        let count = self.members.len() as f32;
        let sum = self
            .members
            .iter()
            .map(|model| activation::softmax(model.forward(images.clone()), 1))
            .reduce(|a, b| a + b)
            .expect("an ensemble has at least one model");
        sum.div_scalar(count).log()
    }
}
