//! The training loop: the tutorial's `train()` and its ten-epoch loop, as library calls.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset};
use crate::eval::{self, Evaluation};
use crate::model::{Model, ModelConfig, Weights, WeightsError};

/// Which optimizer. The tutorial uses Adam and discusses SGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Sgd,
}

/// An optimizer name that digits does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown optimizer '{0}': expected adam or sgd")]
pub struct UnknownOptimizer(pub String);

impl std::str::FromStr for OptimizerKind {
    type Err = UnknownOptimizer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            other => Err(UnknownOptimizer(other.to_string())),
        }
    }
}

/// How to train: the tutorial's hyper-parameters by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    /// Reshuffle the training set every epoch; the tutorial keeps the dataset's order.
    pub shuffle: bool,
    /// Seeds the initial weights and the shuffling.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            lr: 0.01,
            optimizer: OptimizerKind::Adam,
            shuffle: false,
            seed: 0,
        }
    }
}

/// Every way training can fail.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "the loss became {loss} at epoch {epoch}, batch {batch}: training diverged; lower the \
         learning rate (--lr); the last good checkpoint is kept"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    #[error("the saved optimizer state cannot be read: {0}")]
    OptimizerState(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("saving the checkpoint failed")]
    Checkpoint(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where a training step is: what the CLI prints every 100 batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchProgress {
    /// Counted from 1.
    pub epoch: usize,
    /// Counted from 0 within the epoch.
    pub batch: usize,
    pub batches: usize,
    pub loss: f32,
    /// Images seen so far in this epoch.
    pub seen: usize,
    pub total: usize,
}

/// What an epoch achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Mean of the epoch's batch losses.
    pub train_loss: f64,
    pub test_loss: f64,
    /// Fraction of the test set classified correctly.
    pub test_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
    /// Every batch's loss, in order: the raw material for loss curves.
    pub batch_losses: Vec<f32>,
}

/// Hears about training as it happens. The library never prints; the CLI renders these.
pub trait TrainObserver {
    fn batch(&mut self, _progress: &BatchProgress) {}
    fn epoch(&mut self, _metrics: &EpochMetrics, _evaluation: &Evaluation) {}
}

/// Does nothing: for callers that only want the result.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// Keeps what training produces; `fit` calls it after every epoch.
pub trait Checkpoint {
    fn save(&mut self, trainer: &Trainer, metrics: &EpochMetrics) -> Result<(), TrainError>;
}

/// A model being trained, with its optimizer state.
pub struct Trainer {
    model: Model,
    model_config: ModelConfig,
    optimizer: ModuleOptimizer,
    config: TrainConfig,
    device: Device,
    loss: CrossEntropyLoss,
    /// Epochs finished, including those before a resume.
    epochs_done: usize,
}

impl Trainer {
    /// Starts from `weights` (fresh from `ModelConfig::initial_weights`, or a saved run's).
    pub fn new(
        model_config: ModelConfig,
        weights: Weights,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let device = device.clone().autodiff();
        let model = Model::from_weights(&model_config, weights, &device)?;
        let optimizer = match config.optimizer {
            // PyTorch's epsilon: Burn's default (1e-5) changes the tutorial's early steps.
            OptimizerKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
            OptimizerKind::Sgd => SgdConfig::new().init(),
        };
        Ok(Self {
            loss: CrossEntropyLoss::new(None, &device),
            model,
            model_config,
            optimizer,
            config,
            device,
            epochs_done: 0,
        })
    }

    /// Continues a run that has done `epochs_done` epochs, with its saved optimizer state
    /// (Adam's moments) when there is one; without it (imported weights) the optimizer starts
    /// fresh.
    pub fn resume(
        mut self,
        optimizer_state: Option<Vec<u8>>,
        epochs_done: usize,
    ) -> Result<Self, TrainError> {
        if let Some(state) = optimizer_state {
            self.optimizer = self
                .optimizer
                .from_bytes(Bytes::from_bytes_vec(state))
                .map_err(|err| TrainError::OptimizerState(format!("{err:?}")))?;
        }
        self.epochs_done = epochs_done;
        Ok(self)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.model_config
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The model as it is now, detached from autodiff, for evaluation and saving.
    pub fn model(&self) -> Model {
        self.model.valid()
    }

    pub fn weights(&self) -> Weights {
        self.model.weights(&self.model_config)
    }

    /// The optimizer's state, for resuming later.
    pub fn optimizer_state(&self) -> Result<Vec<u8>, TrainError> {
        self.optimizer
            .into_bytes()
            .map(|bytes| bytes.to_vec())
            .map_err(|err| TrainError::OptimizerState(format!("{err:?}")))
    }

    /// The loss and gradients of one batch, without updating anything (PyTorch's layout and
    /// names): what the reference tests compare tensor by tensor.
    pub fn gradients(&self, batch: &Batch) -> (f32, Weights) {
        let loss = self.loss_of(batch);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        (value, self.model.gradients(&self.model_config, &grads))
    }

    /// One optimizer step on one batch; returns the batch's mean loss before the step.
    pub fn step(&mut self, batch: &Batch) -> f32 {
        crate::device::flush_subnormals_to_zero();
        let loss = self.loss_of(batch);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self
            .optimizer
            .step(self.config.lr, self.model.clone(), grads);
        value
    }

    fn loss_of(&self, batch: &Batch) -> Tensor<1> {
        let (images, targets) = eval::batch_tensors(batch, &self.device);
        self.loss.forward(self.model.forward(images), targets)
    }

    /// One pass over `data`; returns each batch's loss. Stops at the first loss that is not
    /// finite, before it can spread into a checkpoint.
    pub fn train_epoch(
        &mut self,
        data: &Dataset,
        observer: &mut dyn TrainObserver,
    ) -> Result<Vec<f32>, TrainError> {
        let epoch = self.epochs_done + 1;
        let order = self
            .config
            .shuffle
            .then(|| shuffled(data.len(), self.config.seed, epoch));
        let batches = data.batches(self.config.batch_size, order.as_deref());
        let count = batches.len();
        let mut losses = Vec::with_capacity(count);
        let mut seen = 0;
        for (index, batch) in batches.enumerate() {
            let loss = self.step(&batch);
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    batch: index,
                    loss,
                });
            }
            seen += batch.len();
            losses.push(loss);
            observer.batch(&BatchProgress {
                epoch,
                batch: index,
                batches: count,
                loss,
                seen,
                total: data.len(),
            });
        }
        self.epochs_done = epoch;
        Ok(losses)
    }
}

/// The order of epoch `epoch` when shuffling: a permutation fixed by the seed and the epoch.
fn shuffled(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Trains until `trainer` has done `config().epochs` epochs in all, evaluating on `test` and
/// saving a checkpoint after each; returns the metrics of the epochs run now.
pub fn fit(
    trainer: &mut Trainer,
    train: &Dataset,
    test: &Dataset,
    observer: &mut dyn TrainObserver,
    checkpoint: &mut dyn Checkpoint,
) -> Result<Vec<EpochMetrics>, TrainError> {
    let mut history = Vec::new();
    while trainer.epochs_done() < trainer.config().epochs {
        let started = Instant::now();
        let batch_losses = trainer.train_epoch(train, observer)?;
        let seconds = started.elapsed().as_secs_f64();
        let evaluation = eval::evaluate(&trainer.model(), test, trainer.config().batch_size);
        let train_loss = batch_losses.iter().map(|&l| f64::from(l)).sum::<f64>()
            / batch_losses.len().max(1) as f64;
        let metrics = EpochMetrics {
            epoch: trainer.epochs_done(),
            train_loss,
            test_loss: evaluation.avg_loss,
            test_accuracy: evaluation.accuracy(),
            lr: trainer.config().lr,
            seconds,
            batch_losses,
        };
        checkpoint.save(trainer, &metrics)?;
        observer.epoch(&metrics, &evaluation);
        history.push(metrics);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_is_a_permutation_fixed_by_seed_and_epoch() {
        let a = shuffled(100, 7, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled(100, 7, 1));
        assert_ne!(a, shuffled(100, 7, 2));
        assert_ne!(a, shuffled(100, 8, 1));
    }
}
