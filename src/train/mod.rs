//! The training loop: the tutorial's `train()` and its ten-epoch loop, as library calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod engine;
pub(crate) mod fused;
mod state;

use crate::augment::{self, AugmentConfig};
use crate::choice::Choice;
use crate::data::{Batch, Dataset, DatasetName, IMAGE_PIXELS, IMAGE_SIDE};
use crate::eval::{self, Evaluation};
use crate::model::{Model, ModelConfig, ModelKind, Weights, WeightsError};
pub use engine::{Engine, WhyBurn};
use fused::FusedTrainer;
pub use state::{OptimizerState, OptimizerStateError};

/// Which optimizer, by name: what `--optimizer` chooses. The tutorial uses Adam and discusses
/// SGD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerKind {
    #[default]
    Adam,
    /// Adam with decoupled weight decay (Loshchilov and Hutter 2019).
    AdamW,
    Sgd,
}

impl Choice for OptimizerKind {
    const KIND: &'static str = "optimizer";
    const ALL: &'static [Self] = &[Self::Adam, Self::AdamW, Self::Sgd];

    fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// PyTorch's default weight decay for AdamW; its Adam and SGD have none.
pub const ADAMW_WEIGHT_DECAY: f64 = 0.01;

/// An optimizer with the settings that mean something for it. Saved flat in a run's config
/// (`"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0`), as before these settings had
/// their own type; read back through [`SavedOptimizer`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "optimizer",
    rename_all = "kebab-case",
    try_from = "SavedOptimizer"
)]
pub enum Optimizer {
    /// PyTorch's Adam; `weight_decay` is an L2 penalty added to the gradients.
    Adam { weight_decay: f64 },
    /// Adam with decoupled weight decay (Loshchilov and Hutter 2019), as PyTorch's AdamW.
    AdamW { weight_decay: f64 },
    /// Stochastic gradient descent; `momentum` 0 is the tutorial's plain SGD, and PyTorch's
    /// momentum has no dampening. `weight_decay` is an L2 penalty.
    Sgd {
        #[serde(skip_serializing_if = "is_zero")]
        momentum: f64,
        weight_decay: f64,
    },
}

/// The optimizer as run configs have always spelled it: flat, with `"weight_decay": null` for
/// the optimizer's default (in configs written before [`Optimizer`] had its own type) and a
/// momentum written for every optimizer. A momentum saved with Adam or AdamW is dropped: it
/// never had any effect, and runs that once took `--optimizer adam --momentum 0.9` must still
/// open (the command line refuses that pair now).
#[derive(Deserialize)]
struct SavedOptimizer {
    optimizer: SavedOptimizerName,
    #[serde(default)]
    weight_decay: Option<f64>,
    #[serde(default)]
    momentum: f64,
}

/// The optimizers' names in run configs (`adam-w` is AdamW's there).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SavedOptimizerName {
    Adam,
    AdamW,
    Sgd,
}

impl TryFrom<SavedOptimizer> for Optimizer {
    type Error = ConfigError;

    fn try_from(saved: SavedOptimizer) -> Result<Self, ConfigError> {
        let kind = match saved.optimizer {
            SavedOptimizerName::Adam => OptimizerKind::Adam,
            SavedOptimizerName::AdamW => OptimizerKind::AdamW,
            SavedOptimizerName::Sgd => OptimizerKind::Sgd,
        };
        let mut optimizer = Optimizer::from(kind);
        if let Some(decay) = saved.weight_decay {
            optimizer = optimizer.with_weight_decay(decay);
        }
        match optimizer {
            Optimizer::Sgd { .. } => optimizer.with_momentum(saved.momentum),
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => Ok(optimizer),
        }
    }
}

impl Default for Optimizer {
    fn default() -> Self {
        OptimizerKind::default().into()
    }
}

/// The optimizer with PyTorch's defaults: no momentum, and weight decay only for AdamW.
impl From<OptimizerKind> for Optimizer {
    fn from(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Adam => Optimizer::Adam { weight_decay: 0.0 },
            OptimizerKind::AdamW => Optimizer::AdamW {
                weight_decay: ADAMW_WEIGHT_DECAY,
            },
            OptimizerKind::Sgd => Optimizer::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
            },
        }
    }
}

impl Optimizer {
    pub fn kind(self) -> OptimizerKind {
        match self {
            Optimizer::Adam { .. } => OptimizerKind::Adam,
            Optimizer::AdamW { .. } => OptimizerKind::AdamW,
            Optimizer::Sgd { .. } => OptimizerKind::Sgd,
        }
    }

    pub fn weight_decay(self) -> f64 {
        match self {
            Optimizer::Adam { weight_decay }
            | Optimizer::AdamW { weight_decay }
            | Optimizer::Sgd { weight_decay, .. } => weight_decay,
        }
    }

    /// The same optimizer with `weight_decay` instead.
    pub fn with_weight_decay(mut self, decay: f64) -> Self {
        match &mut self {
            Optimizer::Adam { weight_decay }
            | Optimizer::AdamW { weight_decay }
            | Optimizer::Sgd { weight_decay, .. } => *weight_decay = decay,
        }
        self
    }

    /// The same optimizer with `momentum` instead; only SGD has one.
    pub fn with_momentum(self, momentum: f64) -> Result<Self, ConfigError> {
        match self {
            Optimizer::Sgd { weight_decay, .. } => Ok(Optimizer::Sgd {
                momentum,
                weight_decay,
            }),
            other => Err(ConfigError::MomentumWithout(other.kind())),
        }
    }
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// How the learning rate moves over a run; `lr` is its peak.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// The tutorial's: `lr` throughout.
    #[default]
    Constant,
    /// Smith's one-cycle: up from lr/25 over the first 30% of steps, then down to lr/250000,
    /// both along a cosine, as PyTorch's `OneCycleLR`.
    OneCycle,
    /// From lr down to 0 along a cosine.
    Cosine,
    /// lr times `factor` after every `every` epochs.
    Step { every: usize, factor: f64 },
}

/// A schedule that digits does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown schedule '{0}': expected constant, one-cycle, cosine or step[:EPOCHS[:FACTOR]]")]
pub struct UnknownSchedule(pub String);

impl std::str::FromStr for LrSchedule {
    type Err = UnknownSchedule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownSchedule(s.to_string());
        let mut parts = s.split(':');
        let schedule = match parts.next().unwrap_or_default() {
            "constant" => LrSchedule::Constant,
            "one-cycle" => LrSchedule::OneCycle,
            "cosine" => LrSchedule::Cosine,
            "step" => {
                let every = parts
                    .next()
                    .map_or(Ok(5), str::parse)
                    .map_err(|_| unknown())?;
                let factor = parts
                    .next()
                    .map_or(Ok(0.1), str::parse)
                    .map_err(|_| unknown())?;
                if every == 0 || !(factor > 0.0 && factor <= 1.0) {
                    return Err(unknown());
                }
                LrSchedule::Step { every, factor }
            }
            _ => return Err(unknown()),
        };
        match parts.next() {
            Some(_) => Err(unknown()),
            None => Ok(schedule),
        }
    }
}

impl LrSchedule {
    /// The learning rate at `progress` (in [0, 1], the fraction of the run's steps done),
    /// during epoch `epoch` (counted from 0).
    pub fn lr(&self, peak: f64, progress: f64, epoch: usize) -> f64 {
        use std::f64::consts::PI;
        let cosine = |from: f64, to: f64, t: f64| to + (from - to) * (1.0 + (PI * t).cos()) / 2.0;
        match *self {
            LrSchedule::Constant => peak,
            LrSchedule::OneCycle => {
                const WARM_UP: f64 = 0.3;
                let start = peak / 25.0;
                if progress < WARM_UP {
                    cosine(start, peak, progress / WARM_UP)
                } else {
                    cosine(peak, start / 1e4, (progress - WARM_UP) / (1.0 - WARM_UP))
                }
            }
            LrSchedule::Cosine => cosine(peak, 0.0, progress),
            LrSchedule::Step { every, factor } => peak * factor.powi((epoch / every.max(1)) as i32),
        }
    }
}

/// How much the loss on marks that are no digit weighs against the digits' own: Hendrycks et
/// al.'s 0.5, which kept their models' accuracy on the digits themselves.
const NOT_DIGIT_WEIGHT: f32 = 0.5;

/// A batch's mean loss above which training has diverged: the right class's probability is
/// below e^-1000, so the weights have blown up. Losses are computed from log-softmax, which
/// keeps them finite long after that; stopping here keeps a blown-up model out of a checkpoint.
const DIVERGED_LOSS: f32 = 1000.0;

/// Held while a training step seeds and draws from the backend's random generator.
static BACKEND_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The label the marks that are no digit carry through augmentation, which no digit has.
const NO_DIGIT: i64 = -1;

/// How to train: the tutorial's hyper-parameters by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(flatten)]
    pub optimizer: Optimizer,
    /// Reshuffle the training set every epoch; the tutorial keeps the dataset's order.
    pub shuffle: bool,
    /// Seeds the initial weights, the shuffling and the augmentation.
    pub seed: u64,
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Label smoothing of the cross-entropy target (0: none).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Training images held out (the last ones) to pick the best epoch and stop early.
    #[serde(default)]
    pub validation: usize,
    /// Stop after this many epochs without a better validation accuracy.
    #[serde(default)]
    pub patience: Option<usize>,
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
    /// Marks that are no digit (crosses, stars, scribbles; [`augment::not_digits`]) added to
    /// every batch, this many per digit, and trained towards equal probabilities over the ten
    /// digits: outlier exposure (Hendrycks, Mazeika and Dietterich 2019). A model trained on
    /// digits alone reads a scribble as some digit with full confidence; one trained with
    /// these says it is unsure, which is what lets `predict` answer "not a digit".
    #[serde(default)]
    pub not_digits: f64,
    #[serde(default)]
    pub engine: EngineChoice,
}

/// Which code does the arithmetic of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineChoice {
    /// digits' own CPU engine where it applies, Burn's autodiff elsewhere.
    #[default]
    Auto,
    /// Burn's autodiff and optimizers always.
    Burn,
}

impl Choice for EngineChoice {
    const KIND: &'static str = "engine";
    const ALL: &'static [Self] = &[Self::Auto, Self::Burn];

    fn name(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Burn => "burn",
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            lr: 0.01,
            optimizer: Optimizer::default(),
            shuffle: false,
            seed: 0,
            schedule: LrSchedule::Constant,
            label_smoothing: 0.0,
            validation: 0,
            patience: None,
            augment: None,
            not_digits: 0.0,
            engine: EngineChoice::Auto,
        }
    }
}

impl TrainConfig {
    fn optimizer(&self) -> ModuleOptimizer {
        let decay = |penalty: f64| (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32));
        match self.optimizer {
            // PyTorch's epsilon: Burn's default (1e-5) changes the tutorial's early steps.
            Optimizer::Adam { weight_decay } => AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(decay(weight_decay))
                .init(),
            Optimizer::AdamW { weight_decay } => AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(weight_decay as f32)
                .init(),
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => SgdConfig::new()
                .with_weight_decay(decay(weight_decay))
                .with_momentum((momentum > 0.0).then(|| {
                    // PyTorch's momentum has no dampening; Burn's default has 0.1.
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                }))
                .init(),
        }
    }
}

/// A training setting that no training could use: out of its range, or meaningless beside
/// the others.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `setting` is the config's name for it (`weight_decay`).
    #[error("{setting} must be {requirement}")]
    OutOfRange {
        setting: &'static str,
        requirement: &'static str,
    },
    #[error("momentum is a setting of SGD; {0} has none")]
    MomentumWithout(OptimizerKind),
    #[error("patience needs validation images to judge each epoch on")]
    PatienceWithoutValidation,
    #[error(transparent)]
    Augment(#[from] crate::augment::AugmentError),
}

impl TrainConfig {
    /// Checks every setting's range; [`Trainer::new`] and reading a run's config call it, so
    /// neither a library caller nor a hand-edited `config.json` skips it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "a positive number";
        let fraction = "in [0, 1)";
        let checks: [(&'static str, &'static str, bool); 8] = [
            ("epochs", "at least 1", self.epochs >= 1),
            (
                "batch_size",
                "from 1 to 65536",
                (1..=65536).contains(&self.batch_size),
            ),
            ("lr", positive, self.lr.is_finite() && self.lr > 0.0),
            (
                "weight_decay",
                "zero or a positive number",
                self.optimizer.weight_decay().is_finite() && self.optimizer.weight_decay() >= 0.0,
            ),
            (
                "momentum",
                fraction,
                match self.optimizer {
                    Optimizer::Sgd { momentum, .. } => (0.0..1.0).contains(&momentum),
                    _ => true,
                },
            ),
            (
                "label_smoothing",
                fraction,
                (0.0..1.0).contains(&self.label_smoothing),
            ),
            (
                "not_digits",
                "in [0, 1]",
                (0.0..=1.0).contains(&self.not_digits),
            ),
            (
                "schedule",
                "a step of at least 1 epoch with a factor in (0, 1]",
                match self.schedule {
                    LrSchedule::Step { every, factor } => {
                        every >= 1 && factor > 0.0 && factor <= 1.0
                    }
                    _ => true,
                },
            ),
        ];
        if let Some((setting, requirement, _)) = checks.into_iter().find(|(_, _, ok)| !ok) {
            return Err(ConfigError::OutOfRange {
                setting,
                requirement,
            });
        }
        if self.patience.is_some() && self.validation == 0 {
            return Err(ConfigError::PatienceWithoutValidation);
        }
        if let Some(augment) = &self.augment {
            augment.check()?;
        }
        Ok(())
    }
}

/// A whole recipe: architecture and training settings, which single flags then adjust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// The tutorial's MLP and hyper-parameters, unchanged.
    #[default]
    Tutorial,
    /// The strongest recipe that trains on a 2-core laptop CPU in a few minutes: the `cnn`
    /// model, AdamW with a one-cycle schedule, label smoothing, normalised inputs and
    /// augmentation suited to the dataset.
    Best,
}

impl Choice for Preset {
    const KIND: &'static str = "preset";
    const ALL: &'static [Self] = &[Self::Tutorial, Self::Best];

    fn name(self) -> &'static str {
        match self {
            Preset::Tutorial => "tutorial",
            Preset::Best => "best",
        }
    }
}

impl Preset {
    /// The architecture and the training settings for `dataset`.
    pub fn recipe(self, dataset: DatasetName) -> (ModelKind, TrainConfig) {
        match self {
            Preset::Tutorial => (ModelKind::Mlp, TrainConfig::default()),
            Preset::Best => {
                let augment = match dataset {
                    DatasetName::FashionMnist => AugmentConfig::clothes(),
                    DatasetName::Mnist | DatasetName::MnistLite => AugmentConfig::digits(),
                };
                let config = TrainConfig {
                    epochs: 15,
                    batch_size: 64,
                    lr: 0.003,
                    optimizer: Optimizer::AdamW { weight_decay: 0.05 },
                    shuffle: true,
                    schedule: LrSchedule::OneCycle,
                    label_smoothing: 0.1,
                    augment: Some(augment),
                    ..TrainConfig::default()
                };
                (ModelKind::Cnn, config)
            }
        }
    }

    /// Whether the model standardises its input with the training set's mean and deviation.
    pub fn normalizes(self) -> bool {
        self == Preset::Best
    }
}

/// Every way training can fail.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "the loss became {loss} at epoch {epoch}, batch {batch}: training diverged; lower the \
         learning rate (--lr)"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    #[error("interrupted during epoch {epoch}, after {batches_done} batches")]
    Interrupted { epoch: usize, batches_done: usize },
    #[error("the saved optimizer state cannot be used")]
    OptimizerState(#[from] OptimizerStateError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// On the images held out of training, when there are any.
    #[serde(default)]
    pub validation_loss: Option<f64>,
    #[serde(default)]
    pub validation_accuracy: Option<f64>,
    /// The learning rate at the epoch's last step.
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

/// Asks a training to stop at the end of its current batch ([`Trainer::with_cancel_token`]);
/// [`fit`] then saves a checkpoint that resumes at the next batch. Clones share one flag, so
/// the caller keeps one and cancels from anywhere: another thread, or a signal handler, since
/// cancelling only stores to an atomic.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Does nothing: for callers that only want the result.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// Keeps what training produces; `fit` calls it after every epoch, saying whether this
/// epoch is the best so far on the validation images (always false without them).
pub trait Checkpoint {
    fn save(
        &mut self,
        trainer: &Trainer,
        metrics: &EpochMetrics,
        best: bool,
    ) -> Result<(), TrainError>;

    /// Saves the trainer as it is in the middle of an epoch ([`Trainer::batches_done`]
    /// batches in), when training is stopped there.
    fn save_interrupted(&mut self, trainer: &Trainer) -> Result<(), TrainError>;
}

/// Where a saved run stopped, with the optimizer state to go on from: what a trainer needs,
/// beside the weights and settings, to continue the run exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    /// `None` for imported weights, which have none: the optimizer then starts fresh.
    pub optimizer_state: Option<OptimizerState>,
    pub epochs_done: usize,
    /// Batches of the next epoch already trained, when training was stopped mid-epoch.
    pub batches_done: usize,
}

/// What does the arithmetic, as [`Engine`] says: Burn's autodiff and optimizers, or digits'
/// own CPU engine.
// A trainer holds one engine for its whole life, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Arithmetic {
    Burn {
        model: Model,
        optimizer: ModuleOptimizer,
        loss: CrossEntropyLoss,
        why: WhyBurn,
    },
    Fused(FusedTrainer),
}

/// A model being trained, with its optimizer state.
pub struct Trainer {
    arithmetic: Arithmetic,
    model_config: ModelConfig,
    config: TrainConfig,
    /// Where the model lives (with autodiff on the Burn path).
    device: Device,
    /// Epochs finished, including those before a resume.
    epochs_done: usize,
    /// Where the current epoch is, for the learning-rate schedule.
    step_in_epoch: usize,
    steps_per_epoch: usize,
    /// The learning rate of the latest step.
    last_lr: f64,
    /// Batches of the next epoch already trained before a resume.
    resume_batches: usize,
    /// Checked after every batch; nobody else holds the one a trainer starts with.
    cancel: CancelToken,
}

impl Trainer {
    /// Starts from `weights` (fresh from `ModelConfig::initial_weights`, or a saved run's),
    /// on the fused path when it applies (see [`Trainer::engine`]), once `config` is
    /// [validated](TrainConfig::validate).
    pub fn new(
        model_config: ModelConfig,
        weights: Weights,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let arithmetic = match engine::fused_path(&model_config, &config, device) {
            Ok(plan) => Arithmetic::Fused(FusedTrainer::new(
                &plan,
                weights,
                config.optimizer,
                config.label_smoothing,
            )?),
            Err(why) => {
                let device = device.clone().autodiff();
                let smoothing =
                    (config.label_smoothing > 0.0).then_some(config.label_smoothing as f32);
                Arithmetic::Burn {
                    model: Model::from_weights(&model_config, weights, &device)?,
                    optimizer: config.optimizer(),
                    loss: CrossEntropyLossConfig::new()
                        .with_smoothing(smoothing)
                        .init(&device),
                    why,
                }
            }
        };
        Ok(Self {
            arithmetic,
            last_lr: config.lr,
            model_config,
            config,
            device: device.clone(),
            epochs_done: 0,
            step_in_epoch: 0,
            steps_per_epoch: 0,
            resume_batches: 0,
            cancel: CancelToken::new(),
        })
    }

    /// The engine this trainer runs on, decided when it was made.
    pub fn engine(&self) -> Engine {
        match &self.arithmetic {
            Arithmetic::Burn { why, .. } => Engine::Burn(*why),
            Arithmetic::Fused(_) => Engine::Fused,
        }
    }

    /// Whether training takes the fused path (digits' CPU engine) rather than Burn's autodiff.
    pub fn is_fused(&self) -> bool {
        self.engine() == Engine::Fused
    }

    /// Continues a saved run exactly where it stopped: after `point.epochs_done` epochs and
    /// `point.batches_done` batches of the next (batch order and augmentation depend only on
    /// the seed, the epoch and the batch's index, so the result is the same as if training
    /// had not stopped), with its saved optimizer state (Adam's moments, say) when there is
    /// one; without it (imported weights) the optimizer starts fresh. The state is the same
    /// whichever engine kept it, so a run may continue on the other.
    pub fn resume(mut self, point: ResumePoint) -> Result<Self, TrainError> {
        if let Some(state) = point.optimizer_state {
            let weights = self.weights();
            match &mut self.arithmetic {
                Arithmetic::Fused(fused) => fused
                    .restore(&state)
                    .map_err(|err| TrainError::OptimizerState(err.into()))?,
                Arithmetic::Burn { optimizer, .. } => {
                    let record = state.to_burn_record(&self.model_config, &weights)?;
                    *optimizer = self
                        .config
                        .optimizer()
                        .from_bytes(record)
                        .map_err(OptimizerStateError::from)?;
                }
            }
        }
        self.epochs_done = point.epochs_done;
        self.resume_batches = point.batches_done;
        Ok(self)
    }

    /// Stops training at the end of the batch during which `token` is cancelled (or at once,
    /// if it already is).
    pub fn with_cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = token;
        self
    }

    /// Batches done in the current epoch: nonzero only when training was stopped mid-epoch.
    pub fn batches_done(&self) -> usize {
        self.step_in_epoch
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

    /// The model as it is now, without autodiff, for evaluation and saving.
    pub fn model(&self) -> Model {
        match &self.arithmetic {
            Arithmetic::Burn { model, .. } => model.valid(),
            Arithmetic::Fused(fused) => {
                Model::from_weights(&self.model_config, fused.tensors(false), &self.device)
                    .expect("the fused path keeps the architecture's tensors")
            }
        }
    }

    /// The weights as [`Trainer::model`] has them. On Burn's path they are read from the
    /// inference copy, because batch norm's running statistics on the training model lag one
    /// update behind (Burn merges each thread's latest update only when the model is copied).
    pub fn weights(&self) -> Weights {
        match &self.arithmetic {
            Arithmetic::Burn { .. } => self.model().weights(),
            Arithmetic::Fused(fused) => fused.tensors(false),
        }
    }

    /// The optimizer's state, for resuming later.
    pub fn optimizer_state(&self) -> Result<OptimizerState, TrainError> {
        match &self.arithmetic {
            Arithmetic::Burn {
                model, optimizer, ..
            } => {
                let record = optimizer.into_bytes().map_err(OptimizerStateError::from)?;
                Ok(OptimizerState::from_burn_record(record, model)?)
            }
            Arithmetic::Fused(fused) => Ok(fused.state()),
        }
    }

    /// The loss and gradients of one batch, without updating anything (PyTorch's layout and
    /// names): what the reference tests compare tensor by tensor.
    pub fn gradients(&mut self, batch: &Batch) -> (f32, Weights) {
        match &mut self.arithmetic {
            Arithmetic::Burn { model, loss, .. } => {
                // On a copy whose running statistics are its own: a forward pass in training
                // mode moves batch norm's, and the step that follows would move them again.
                let model = model.valid().train();
                let loss = Self::burn_loss(&model, loss, batch, &[], &self.device);
                let value = loss.clone().into_scalar::<f32>();
                let grads = loss.backward();
                (value, model.gradients(&grads))
            }
            Arithmetic::Fused(fused) => {
                let value = fused.backward(batch, &[], None, false);
                (value, fused.tensors(true))
            }
        }
    }

    /// The learning rate the next step takes.
    pub fn current_lr(&self) -> f64 {
        let total = self.config.epochs * self.steps_per_epoch;
        let done = self.epochs_done * self.steps_per_epoch + self.step_in_epoch;
        let progress = if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).min(1.0)
        };
        self.config
            .schedule
            .lr(self.config.lr, progress, self.epochs_done)
    }

    /// One optimizer step on one batch; returns the batch's mean loss before the step.
    pub fn step(&mut self, batch: &Batch) -> f32 {
        self.step_with(batch, &[], None)
    }

    /// One optimiser step on `batch` and on `not_digits` (28x28 images, one after the other),
    /// which the loss pushes towards equal probabilities.
    ///
    /// With `seed`, dropout's masks follow from it. On Burn's path the backend's random
    /// generator is seeded first and held through the step: Burn's CPU backend has one
    /// generator for the whole process, so a training in another thread could otherwise draw
    /// from it in between; seeded Burn steps of trainings in one process therefore take turns.
    /// The CPU engine seeds generators of its own. Unseeded steps (`step`, `gradients`) neither
    /// wait nor promise the same masks twice.
    fn step_with(&mut self, batch: &Batch, not_digits: &[f32], seed: Option<u64>) -> f32 {
        let burn_seed = seed.filter(|_| !self.is_fused());
        let _generator = burn_seed.map(|seed| {
            let held = BACKEND_GENERATOR
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.device.seed(seed);
            held
        });
        self.last_lr = self.current_lr();
        let value = match &mut self.arithmetic {
            Arithmetic::Burn {
                model,
                optimizer,
                loss,
                ..
            } => {
                let loss = Self::burn_loss(model, loss, batch, not_digits, &self.device);
                let value = loss.clone().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(loss.backward(), model);
                *model = optimizer.step(self.last_lr, model.clone(), grads);
                value
            }
            Arithmetic::Fused(fused) => fused.step(batch, not_digits, self.last_lr, seed),
        };
        self.step_in_epoch += 1;
        value
    }

    fn burn_loss(
        model: &Model,
        loss: &CrossEntropyLoss,
        batch: &Batch,
        not_digits: &[f32],
        device: &Device,
    ) -> Tensor<1> {
        let device = device.clone().autodiff();
        let (images, targets) = eval::batch_tensors(batch, &device);
        if not_digits.is_empty() {
            return loss.forward(model.forward(images), targets);
        }
        let marks = not_digits.len() / IMAGE_PIXELS;
        let marks = Tensor::<4>::from_data(
            TensorData::new(not_digits.to_vec(), [marks, 1, IMAGE_SIDE, IMAGE_SIDE]),
            &device,
        );
        let logits = model.forward(Tensor::cat(vec![images, marks.clone()], 0));
        let digits = batch.len();
        let digit_loss = loss.forward(logits.clone().narrow(0, 0, digits), targets);
        // Cross-entropy against equal probabilities: the mean of -log p over the ten digits.
        let spread = log_softmax(logits.narrow(0, digits, marks.dims()[0]), 1)
            .mean()
            .neg();
        digit_loss + spread.mul_scalar(NOT_DIGIT_WEIGHT)
    }

    /// One pass over `data`; returns each batch's loss. Stops at the first loss that says
    /// training diverged (not finite, or above [`DIVERGED_LOSS`]), before it can spread into a
    /// checkpoint.
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
        let skip = std::mem::take(&mut self.resume_batches).min(count);
        self.steps_per_epoch = count;
        self.step_in_epoch = skip;
        let mut losses = Vec::with_capacity(count - skip);
        let mut seen = (skip * self.config.batch_size).min(data.len());
        for (index, mut batch) in batches.enumerate().skip(skip) {
            let seed = self.config.seed ^ ((epoch as u64) << 32 | index as u64);
            if let Some(config) = &self.config.augment {
                augment::augment(&mut batch, config, seed);
            }
            // Marks that are no digit, distorted like the digits so that only their shapes tell
            // them apart (left clean, their crisp strokes alone would).
            let marks = (batch.len() as f64 * self.config.not_digits).round() as usize;
            let mut not_digits = Batch {
                pixels: augment::not_digits(marks, !seed),
                labels: vec![NO_DIGIT; marks],
            };
            if let Some(config) = &self.config.augment {
                augment::augment(&mut not_digits, config, !seed);
            }
            // Dropout's generator is seeded afresh for every batch: a run is the same every
            // time, and a run resumed mid-epoch draws what the uninterrupted one would have.
            let loss = self.step_with(&batch, &not_digits.pixels, Some(seed));
            if loss.is_nan() || loss >= DIVERGED_LOSS {
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
            if self.cancel.is_cancelled() && index + 1 < count {
                return Err(TrainError::Interrupted {
                    epoch,
                    batches_done: index + 1,
                });
            }
        }
        self.epochs_done = epoch;
        self.step_in_epoch = 0;
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

/// Trains until `trainer` has done `config().epochs` epochs in all (or, with `validation`
/// images and a patience, until the validation accuracy stops improving), evaluating on
/// `test` and saving a checkpoint after each epoch; returns the metrics of the epochs run now.
pub fn fit(
    trainer: &mut Trainer,
    train: &Dataset,
    validation: Option<&Dataset>,
    test: &Dataset,
    observer: &mut dyn TrainObserver,
    checkpoint: &mut dyn Checkpoint,
) -> Result<Vec<EpochMetrics>, TrainError> {
    let mut history = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    while trainer.epochs_done() < trainer.config().epochs {
        if trainer.cancel.is_cancelled() {
            // The last epoch's checkpoint is already saved.
            return Err(TrainError::Interrupted {
                epoch: trainer.epochs_done() + 1,
                batches_done: 0,
            });
        }
        let started = Instant::now();
        let batch_losses = match trainer.train_epoch(train, observer) {
            Err(interrupted @ TrainError::Interrupted { .. }) => {
                checkpoint.save_interrupted(trainer)?;
                return Err(interrupted);
            }
            other => other?,
        };
        let seconds = started.elapsed().as_secs_f64();
        let model = trainer.model();
        let batch_size = trainer.config().batch_size;
        let evaluation = eval::evaluate(&model, test, batch_size);
        let held_out = validation.map(|data| eval::evaluate(&model, data, batch_size));
        let train_loss = batch_losses.iter().map(|&l| f64::from(l)).sum::<f64>()
            / batch_losses.len().max(1) as f64;
        let metrics = EpochMetrics {
            epoch: trainer.epochs_done(),
            train_loss,
            test_loss: evaluation.avg_loss,
            test_accuracy: evaluation.accuracy(),
            validation_loss: held_out.as_ref().map(|e| e.avg_loss),
            validation_accuracy: held_out.as_ref().map(Evaluation::accuracy),
            lr: trainer.last_lr,
            seconds,
            batch_losses,
        };
        let improved = match (metrics.validation_accuracy, best) {
            (Some(accuracy), Some((_, best_accuracy))) => accuracy > best_accuracy,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            best = metrics.validation_accuracy.map(|a| (metrics.epoch, a));
        }
        checkpoint.save(trainer, &metrics, improved)?;
        observer.epoch(&metrics, &evaluation);
        history.push(metrics);
        let patience = trainer.config().patience;
        if let (Some(patience), Some((best_epoch, _))) = (patience, best)
            && trainer.epochs_done() - best_epoch >= patience
        {
            break;
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_saved_before_the_optimizer_had_its_own_type_still_load() {
        // As digits wrote them: the optimizer's name, `null` for its default weight decay,
        // and a momentum of 0 even for Adam, which ignored it.
        let old = |optimizer: &str, weight_decay: &str, momentum: &str| {
            let json = format!(
                r#"{{"epochs": 3, "batch_size": 32, "lr": 0.01, "optimizer": "{optimizer}",
                    "shuffle": false, "seed": 0, "weight_decay": {weight_decay},
                    "momentum": {momentum}, "schedule": {{"kind": "constant"}}}}"#
            );
            serde_json::from_str::<TrainConfig>(&json)
                .unwrap()
                .optimizer
        };
        assert_eq!(
            old("adam", "null", "0.0"),
            Optimizer::Adam { weight_decay: 0.0 }
        );
        assert_eq!(
            old("adam-w", "null", "0.0"),
            Optimizer::AdamW { weight_decay: 0.01 }
        );
        assert_eq!(
            old("adam-w", "0.05", "0.0"),
            Optimizer::AdamW { weight_decay: 0.05 }
        );
        assert_eq!(
            old("sgd", "null", "0.9"),
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0
            }
        );
        assert_eq!(
            old("adam", "0.001", "0.0"),
            Optimizer::Adam {
                weight_decay: 0.001
            }
        );
        // Older still: no weight decay or momentum at all.
        let oldest = r#"{"epochs": 3, "batch_size": 32, "lr": 0.01, "optimizer": "adam-w",
                         "shuffle": false, "seed": 0}"#;
        let config: TrainConfig = serde_json::from_str(oldest).unwrap();
        assert_eq!(config.optimizer, Optimizer::AdamW { weight_decay: 0.01 });
    }

    #[test]
    fn a_saved_momentum_for_an_optimizer_without_one_is_dropped_as_it_never_acted() {
        let edited = r#"{"epochs": 3, "batch_size": 32, "lr": 0.01, "optimizer": "adam",
                         "shuffle": false, "seed": 0, "weight_decay": 0.0, "momentum": 0.9}"#;
        let config = serde_json::from_str::<TrainConfig>(edited).unwrap();
        assert_eq!(config.optimizer, Optimizer::Adam { weight_decay: 0.0 });
    }

    #[test]
    fn the_optimizer_is_saved_flat_with_only_its_own_settings() {
        let saved = |optimizer: Optimizer| {
            let config = TrainConfig {
                optimizer,
                ..TrainConfig::default()
            };
            let json = serde_json::to_value(&config).unwrap();
            let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, config);
            json
        };
        let adam = saved(Optimizer::Adam { weight_decay: 0.0 });
        assert_eq!(adam["optimizer"], "adam");
        assert_eq!(adam["weight_decay"], 0.0);
        assert!(adam.get("momentum").is_none());
        let plain_sgd = saved(OptimizerKind::Sgd.into());
        assert!(
            plain_sgd.get("momentum").is_none(),
            "as Adam: nothing to compare"
        );
        let sgd = saved(Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        });
        assert_eq!(sgd["momentum"], 0.9);
        assert_eq!(saved(OptimizerKind::AdamW.into())["optimizer"], "adam-w");
    }

    #[test]
    fn momentum_belongs_to_sgd_alone() {
        let sgd = Optimizer::from(OptimizerKind::Sgd).with_momentum(0.9);
        assert_eq!(
            sgd,
            Ok(Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0
            })
        );
        let adam = Optimizer::from(OptimizerKind::Adam).with_momentum(0.9);
        assert_eq!(adam, Err(ConfigError::MomentumWithout(OptimizerKind::Adam)));
        assert_eq!(
            adam.unwrap_err().to_string(),
            "momentum is a setting of SGD; adam has none"
        );
    }

    #[test]
    fn validation_refuses_settings_no_training_could_use() {
        let refused = |config: TrainConfig| config.validate().unwrap_err().to_string();
        assert_eq!(TrainConfig::default().validate(), Ok(()));
        assert_eq!(
            refused(TrainConfig {
                lr: f64::NAN,
                ..TrainConfig::default()
            }),
            "lr must be a positive number"
        );
        assert_eq!(
            refused(TrainConfig {
                batch_size: 0,
                ..TrainConfig::default()
            }),
            "batch_size must be from 1 to 65536"
        );
        assert_eq!(
            refused(TrainConfig {
                optimizer: Optimizer::Sgd {
                    momentum: 1.0,
                    weight_decay: 0.0
                },
                ..TrainConfig::default()
            }),
            "momentum must be in [0, 1)"
        );
        assert_eq!(
            refused(TrainConfig {
                optimizer: Optimizer::AdamW { weight_decay: -0.1 },
                ..TrainConfig::default()
            }),
            "weight_decay must be zero or a positive number"
        );
        assert_eq!(
            refused(TrainConfig {
                patience: Some(2),
                ..TrainConfig::default()
            }),
            "patience needs validation images to judge each epoch on"
        );
    }

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

    #[test]
    fn both_engines_take_the_same_step_on_digits_and_marks_that_are_no_digit() {
        let ModelConfig::Cnn(cnn) = crate::model::ModelKind::Cnn.config() else {
            unreachable!("cnn is convolutional")
        };
        // Without dropout, whose masks the engines draw differently.
        let model = ModelConfig::Cnn(crate::model::CnnConfig {
            dropout: 0.0,
            ..cnn
        });
        let data = Dataset::lite(crate::data::Split::Train).truncated(16);
        let batch = data.batches(16, None).next().unwrap();
        let marks = augment::not_digits(4, 7);
        let mut results = Vec::new();
        for engine in [EngineChoice::Auto, EngineChoice::Burn] {
            let config = TrainConfig {
                optimizer: Optimizer::AdamW { weight_decay: 0.05 },
                label_smoothing: 0.1,
                engine,
                ..TrainConfig::default()
            };
            let weights = model.initial_weights(0);
            let mut trainer =
                Trainer::new(model.clone(), weights, config, &Device::flex()).unwrap();
            assert_eq!(trainer.is_fused(), engine == EngineChoice::Auto);
            let losses: Vec<f32> = (0..2)
                .map(|_| trainer.step_with(&batch, &marks, Some(1)))
                .collect();
            results.push((losses, trainer.weights()));
        }
        let [(fused_losses, fused), (burn_losses, burn)] = &results[..] else {
            unreachable!("two engines")
        };
        for (a, b) in fused_losses.iter().zip(burn_losses) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs(),
                "losses {fused_losses:?} against {burn_losses:?}"
            );
        }
        for (name, tensor) in fused {
            // Relative to the tensor's size, as the PyTorch reference tests measure.
            let squares = |values: &mut dyn Iterator<Item = f32>| {
                values
                    .map(|v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt()
            };
            let reference = &burn[name].values;
            let difference = squares(&mut tensor.values.iter().zip(reference).map(|(a, b)| a - b))
                / squares(&mut reference.iter().copied()).max(1e-12);
            assert!(difference < 1e-4, "{name} differs by {difference}");
        }
    }
}
