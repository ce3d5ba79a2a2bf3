//! Models: a digit classifier built from a config that is saved beside its weights, so any
//! saved run can be rebuilt exactly.
//!
//! A config ([`MlpConfig`], [`CnnConfig`]) says what a user chose; its [`plan`] lays that out
//! as layers with PyTorch's names and shapes, and everything that builds, runs, counts or
//! exports a network walks the plan.

mod batch_norm;
pub mod cnn;
mod layers;
pub mod layers_config;
pub mod mlp;
mod network;
pub mod plan;
pub mod weights;

use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::cpu::log_softmax;
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};

pub use cnn::{CnnConfig, ConvLayer};
pub use layers::Normalization;
pub use layers_config::{LayerConfig, LayersConfig};
pub use mlp::MlpConfig;
pub use network::Model;
pub use plan::{Activation, Layer, Plan, PlanError, Pooling};
pub use weights::{NamedTensor, Weights, WeightsError};

/// Which architecture, and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum ModelConfig {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
    /// Any other network digits can run, written out layer by layer.
    Layers(LayersConfig),
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

impl Choice for ModelKind {
    const KIND: &'static str = "model";
    const ALL: &'static [Self] = &[
        Self::Mlp,
        Self::MlpLarge,
        Self::Lenet5,
        Self::Cnn,
        Self::CnnLarge,
    ];

    fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::MlpLarge => "mlp-large",
            ModelKind::Lenet5 => "lenet5",
            ModelKind::Cnn => "cnn",
            ModelKind::CnnLarge => "cnn-large",
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
    /// The layers, or why the config does not describe a network for 28x28 digits.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        match self {
            ModelConfig::Mlp(config) => config.plan(),
            ModelConfig::Cnn(config) => config.plan(),
            ModelConfig::Layers(config) => config.plan(),
        }
    }

    /// Fresh weights, reproducible from `seed`; none if the config does not describe a
    /// network (building a model from them then says why).
    pub fn initial_weights(&self, seed: u64) -> Weights {
        self.plan()
            .map(|plan| plan.initial_weights(seed))
            .unwrap_or_default()
    }

    /// Trainable parameters; 0 if the config does not describe a network.
    pub fn parameter_count(&self) -> usize {
        self.plan().map_or(0, |plan| plan.parameter_count())
    }

    /// The input standardisation built into the model, if any.
    pub fn normalization(&self) -> Option<Normalization> {
        match self {
            ModelConfig::Mlp(config) => config.normalization,
            ModelConfig::Cnn(config) => config.normalization,
            ModelConfig::Layers(config) => config.normalization,
        }
    }

    /// The input standardisation, to set it.
    pub fn normalization_mut(&mut self) -> &mut Option<Normalization> {
        match self {
            ModelConfig::Mlp(config) => &mut config.normalization,
            ModelConfig::Cnn(config) => &mut config.normalization,
            ModelConfig::Layers(config) => &mut config.normalization,
        }
    }

    /// A one-line description for logs, e.g. `mlp 784-128-400-10 relu`.
    pub fn describe(&self) -> String {
        match self.plan() {
            Ok(plan) => plan.describe(),
            Err(err) => format!("an invalid network ({err})"),
        }
    }
}

/// Several trained models that answer together by averaging their probabilities: the usual
/// way to gain the last tenths of a point. One model is an ensemble of one.
pub struct Ensemble {
    members: Vec<Model>,
    /// The members compiled for digits' CPU engine, when they live on the CPU and it computes
    /// them all: batch inference then skips Burn's per-operation costs.
    compiled: Option<Vec<crate::cpu::Network>>,
}

impl Ensemble {
    /// # Panics
    /// If `members` is empty.
    pub fn new(members: Vec<Model>) -> Self {
        assert!(!members.is_empty(), "an ensemble has at least one model");
        let compiled = members.iter().map(Model::compiled_for_cpu).collect();
        Self { members, compiled }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The device the models live on.
    pub fn device(&self) -> Device {
        self.members[0].device()
    }

    /// Whether inference runs on digits' CPU engine rather than through Burn.
    pub fn runs_on_cpu_engine(&self) -> bool {
        self.compiled.is_some()
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

    /// [`Ensemble::log_probabilities`] of `pixels` (`[N, 784]`, in [0, 1]), row by row: on
    /// digits' CPU engine where the models run on it, through Burn otherwise.
    pub fn log_probabilities_of(&self, pixels: &[f32]) -> Vec<f32> {
        let Some(networks) = &self.compiled else {
            let images = Tensor::<4>::from_data(
                TensorData::new(
                    pixels.to_vec(),
                    [pixels.len() / IMAGE_PIXELS, 1, IMAGE_SIDE, IMAGE_SIDE],
                ),
                &self.device(),
            );
            return self
                .log_probabilities(images)
                .into_data()
                .try_into_vec::<f32>()
                .expect("log-probabilities are float32");
        };
        let mut logits = crate::cpu::Network::logits_of_each(networks, pixels).into_iter();
        let first = logits.next().expect("an ensemble has at least one model");
        if networks.len() == 1 {
            return first
                .chunks_exact(NUM_CLASSES)
                .flat_map(log_softmax)
                .collect();
        }
        let mut sum: Vec<f32> = first.chunks_exact(NUM_CLASSES).flat_map(softmax).collect();
        for member in logits {
            let probabilities = member.chunks_exact(NUM_CLASSES).flat_map(softmax);
            sum.iter_mut().zip(probabilities).for_each(|(s, p)| *s += p);
        }
        let count = networks.len() as f32;
        sum.iter().map(|s| (s / count).ln()).collect()
    }
}

fn softmax(logits: &[f32]) -> [f32; NUM_CLASSES] {
    log_softmax(logits).map(f32::exp)
}
