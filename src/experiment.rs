//! A training run as `digits train` runs it, from settings to a saved run folder: a preset
//! adjusted by single settings, the training images split for validation, the inputs'
//! statistics for normalisation, and a run folder started, or resumed where it stopped.
//!
//! It takes two steps because which data to load depends on the run: a [`Plan`] checks the
//! settings and reads a resumed run before any data is loaded (the dataset defaults to the
//! resumed run's), and [`Plan::prepare`] then takes the loaded data and builds the
//! [`Experiment`] that trains.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::augment::AugmentConfig;
use crate::data::{Dataset, DatasetName};
use crate::model::{Activation, ModelConfig, ModelKind, Normalization};
use crate::run::{RunCheckpoint, RunConfig, RunDir, RunError};
use crate::train::{
    self, CancelToken, ConfigError, EngineChoice, EpochMetrics, LrSchedule, OptimizerKind, Preset,
    ResumePoint, TrainConfig, TrainError, TrainObserver, Trainer,
};

/// Changes to a preset's recipe, or, resuming, to the saved run's settings; `None` (and
/// `false`) keeps what is there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adjustments {
    /// The recipe to start from (the tutorial's by default). Fixed when resuming, as are the
    /// model, its hidden widths and activation, and normalisation.
    pub preset: Option<Preset>,
    pub model: Option<ModelKind>,
    /// An MLP's hidden widths.
    pub hidden: Option<Vec<usize>>,
    pub activation: Option<Activation>,
    /// Standardise the inputs with the training set's mean and deviation (the `best` preset
    /// always does).
    pub normalize: bool,
    /// Epochs to train; resuming, epochs to train further (by default an interrupted run
    /// finishes the epochs it was started with, and a finished one trains as many again).
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    /// Another optimizer, with that optimizer's defaults; naming the one the recipe already
    /// has keeps its settings.
    pub optimizer: Option<OptimizerKind>,
    pub weight_decay: Option<f64>,
    /// SGD's momentum; refused for the other optimizers.
    pub momentum: Option<f64>,
    pub schedule: Option<LrSchedule>,
    pub label_smoothing: Option<f64>,
    /// `Some(None)` turns the recipe's augmentation off.
    pub augment: Option<Option<AugmentConfig>>,
    pub not_digits: Option<f64>,
    /// Training images held out (the last ones) to pick the best epoch.
    pub validation: Option<usize>,
    pub patience: Option<usize>,
    pub engine: Option<EngineChoice>,
    /// Reshuffle every epoch; `false` keeps the recipe's choice.
    pub shuffle: bool,
    pub seed: Option<u64>,
    /// Train on only the first this many training images.
    pub limit: Option<usize>,
}

impl Adjustments {
    /// These adjustments, with `base`'s where these give none: a variant on top of the
    /// settings every variant shares.
    pub fn or(self, base: &Adjustments) -> Adjustments {
        let base = base.clone();
        Adjustments {
            preset: self.preset.or(base.preset),
            model: self.model.or(base.model),
            hidden: self.hidden.or(base.hidden),
            activation: self.activation.or(base.activation),
            normalize: self.normalize || base.normalize,
            epochs: self.epochs.or(base.epochs),
            batch_size: self.batch_size.or(base.batch_size),
            lr: self.lr.or(base.lr),
            optimizer: self.optimizer.or(base.optimizer),
            weight_decay: self.weight_decay.or(base.weight_decay),
            momentum: self.momentum.or(base.momentum),
            schedule: self.schedule.or(base.schedule),
            label_smoothing: self.label_smoothing.or(base.label_smoothing),
            augment: self.augment.or(base.augment),
            not_digits: self.not_digits.or(base.not_digits),
            validation: self.validation.or(base.validation),
            patience: self.patience.or(base.patience),
            engine: self.engine.or(base.engine),
            shuffle: self.shuffle || base.shuffle,
            seed: self.seed.or(base.seed),
            limit: self.limit.or(base.limit),
        }
    }

    fn touches_architecture(&self) -> bool {
        self.preset.is_some()
            || self.model.is_some()
            || self.hidden.is_some()
            || self.activation.is_some()
            || self.normalize
    }

    /// `config` with every training setting given here.
    fn apply(&self, config: &mut TrainConfig) -> Result<(), ConfigError> {
        if let Some(kind) = self.optimizer.filter(|&k| k != config.optimizer.kind()) {
            config.optimizer = kind.into();
        }
        if let Some(decay) = self.weight_decay {
            config.optimizer = config.optimizer.with_weight_decay(decay);
        }
        if let Some(momentum) = self.momentum {
            config.optimizer = config.optimizer.with_momentum(momentum)?;
        }
        config.batch_size = self.batch_size.unwrap_or(config.batch_size);
        config.lr = self.lr.unwrap_or(config.lr);
        config.schedule = self.schedule.unwrap_or(config.schedule);
        config.label_smoothing = self.label_smoothing.unwrap_or(config.label_smoothing);
        if let Some(augment) = &self.augment {
            config.augment = augment.clone();
        }
        config.not_digits = self.not_digits.unwrap_or(config.not_digits);
        config.validation = self.validation.unwrap_or(config.validation);
        config.patience = self.patience.or(config.patience);
        config.engine = self.engine.unwrap_or(config.engine);
        config.shuffle |= self.shuffle;
        config.seed = self.seed.unwrap_or(config.seed);
        config.validate()
    }
}

/// The architecture `kind` names, with an MLP's hidden widths and any model's activation
/// changed where given.
pub fn architecture(
    kind: ModelKind,
    hidden: Option<&[usize]>,
    activation: Option<Activation>,
) -> Result<ModelConfig, ExperimentError> {
    let mut model = kind.config();
    match &mut model {
        ModelConfig::Mlp(mlp) => {
            if let Some(hidden) = hidden {
                mlp.hidden = hidden.to_vec();
            }
            mlp.activation = activation.unwrap_or(mlp.activation);
        }
        ModelConfig::Cnn(cnn) => {
            if hidden.is_some() {
                return Err(ExperimentError::HiddenWithoutMlp);
            }
            cnn.activation = activation.unwrap_or(cnn.activation);
        }
        ModelConfig::Layers(_) if hidden.is_some() => {
            return Err(ExperimentError::HiddenWithoutMlp);
        }
        ModelConfig::Layers(_) if activation.is_some() => {
            return Err(ExperimentError::ActivationOfWrittenLayers);
        }
        ModelConfig::Layers(_) => {}
    }
    Ok(model)
}

/// Every way setting up a training run can fail before it trains.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("hidden widths are an MLP's; the convolutional models have fixed layers")]
    HiddenWithoutMlp,
    #[error("a network written out layer by layer names its own activations")]
    ActivationOfWrittenLayers,
    #[error(
        "the preset, model, activation, hidden widths and normalisation cannot change when \
         resuming: the architecture is the saved run's"
    )]
    ArchitectureFixed,
    #[error("{} already holds a run", .0.display())]
    RunExists(PathBuf),
    #[error(
        "the training set is empty{}",
        if *.held_out { " once the validation images are held out" } else { "" }
    )]
    NoTrainingImages { held_out: bool },
    #[error("the test set is empty")]
    NoTestImages,
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// A run about to be trained, before its data is loaded.
#[derive(Debug)]
pub struct Plan {
    adjustments: Adjustments,
    /// The run to continue, and its config.
    resumed: Option<(RunDir, RunConfig)>,
    out: PathBuf,
}

impl Plan {
    /// A new run into `out`, or into the first of `runs/tutorial`, `runs/tutorial-2`, ... that
    /// holds no run yet, so a new run never overwrites an old one.
    pub fn start(adjustments: Adjustments, out: Option<PathBuf>) -> Result<Self, ExperimentError> {
        let out = match out {
            Some(out) if RunDir::holds_run(&out) => return Err(ExperimentError::RunExists(out)),
            Some(out) => out,
            None => next_free_name(Path::new("runs"), "tutorial", RunDir::holds_run),
        };
        Self::checked(Self {
            adjustments,
            resumed: None,
            out,
        })
    }

    /// Continues the run in `run` (saving into `out`, by default the run itself).
    pub fn resume(
        run: &Path,
        adjustments: Adjustments,
        out: Option<PathBuf>,
    ) -> Result<Self, ExperimentError> {
        if adjustments.touches_architecture() {
            return Err(ExperimentError::ArchitectureFixed);
        }
        let run = RunDir::open(run)?;
        let saved = run.config()?;
        Self::checked(Self {
            adjustments,
            out: out.unwrap_or_else(|| run.path().to_path_buf()),
            resumed: Some((run, saved)),
        })
    }

    /// Refuses settings no training could use before any data is loaded. They are checked
    /// against the default dataset's recipe; [`Plan::prepare`] checks them again for the
    /// dataset loaded.
    fn checked(self) -> Result<Self, ExperimentError> {
        self.settings(self.dataset())?;
        Ok(self)
    }

    /// The dataset to train on unless another is chosen: the resumed run's, else MNIST.
    pub fn dataset(&self) -> DatasetName {
        self.resumed
            .as_ref()
            .map_or(DatasetName::Mnist, |(_, saved)| saved.dataset)
    }

    /// The run folder training saves into.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The architecture and training settings for `dataset`: the preset's, or the resumed
    /// run's, with the adjustments.
    fn settings(
        &self,
        dataset: DatasetName,
    ) -> Result<(ModelConfig, TrainConfig), ExperimentError> {
        let changes = &self.adjustments;
        let (model, mut config) = match &self.resumed {
            Some((_, saved)) => {
                // Imported weights were not trained here: they go on with the tutorial's
                // settings.
                let mut config = saved.train.clone().unwrap_or_default();
                let started_with = config.epochs;
                config.epochs = match changes.epochs {
                    Some(more) => saved.epochs_done.saturating_add(more),
                    // An interrupted run finishes the epochs it was started with.
                    None if saved.epochs_done < started_with => started_with,
                    None => saved.epochs_done.saturating_add(started_with),
                };
                (saved.model.clone(), config)
            }
            None => {
                let (kind, mut config) = changes.preset.unwrap_or_default().recipe(dataset);
                config.epochs = changes.epochs.unwrap_or(config.epochs);
                let model = architecture(
                    changes.model.unwrap_or(kind),
                    changes.hidden.as_deref(),
                    changes.activation,
                )?;
                (model, config)
            }
        };
        changes.apply(&mut config)?;
        Ok((model, config))
    }

    /// Holds the validation images out of `train` (after `limit`), works out the
    /// normalisation statistics of a new run, creates the run folder and builds the trainer:
    /// fresh, or resumed exactly where the run stopped. `dataset` is the set `train` and
    /// `test` are from.
    pub fn prepare(
        self,
        dataset: DatasetName,
        mut train: Dataset,
        test: Dataset,
        device: &Device,
    ) -> Result<Experiment, ExperimentError> {
        let (mut model, config) = self.settings(dataset)?;
        if let Some(limit) = self.adjustments.limit {
            train = train.truncated(limit);
        }
        let validation = (config.validation > 0).then(|| train.split_off(config.validation));
        if train.is_empty() {
            return Err(ExperimentError::NoTrainingImages {
                held_out: validation.is_some(),
            });
        }
        if test.is_empty() {
            return Err(ExperimentError::NoTestImages);
        }
        let created = !self.out.exists();
        let (trainer, imported, history) = match &self.resumed {
            Some((run, saved)) => {
                // A process killed between writing the metrics and the config leaves a line
                // for an epoch the config does not count; that epoch is trained again.
                let mut history = run.metrics()?;
                history.truncate(saved.epochs_done);
                let trainer = resume_trainer(run, config, device)?;
                (trainer, saved.imported.clone(), history)
            }
            None => {
                let preset = self.adjustments.preset.unwrap_or_default();
                if self.adjustments.normalize || preset.normalizes() {
                    let (mean, std) = train.pixel_statistics();
                    *model.normalization_mut() = Some(Normalization {
                        mean,
                        std: std.max(1e-6),
                    });
                }
                let weights = model.initial_weights(config.seed);
                let trainer = Trainer::new(model, weights, config, device)?;
                (trainer, None, Vec::new())
            }
        };
        let checkpoint = RunCheckpoint {
            dir: RunDir::create(&self.out)?,
            dataset,
            imported,
            history,
        };
        Ok(Experiment {
            resumed_at: self
                .resumed
                .map(|(_, saved)| (saved.epochs_done, saved.batches_done)),
            trainer,
            train,
            validation,
            test,
            checkpoint,
            created,
        })
    }
}

/// A trainer that continues the run in `run` exactly where it stopped, mid-epoch included,
/// with `config` (the saved settings, or changed ones): its weights, optimizer state and
/// progress in one call.
pub fn resume_trainer(
    run: &RunDir,
    config: TrainConfig,
    device: &Device,
) -> Result<Trainer, ExperimentError> {
    let saved = run.config()?;
    let point = ResumePoint {
        optimizer_state: run.optimizer_state()?,
        epochs_done: saved.epochs_done,
        batches_done: saved.batches_done,
    };
    Ok(Trainer::new(saved.model, run.weights()?, config, device)?.resume(point)?)
}

/// A run ready to train: its data, trainer and folder.
pub struct Experiment {
    trainer: Trainer,
    train: Dataset,
    validation: Option<Dataset>,
    test: Dataset,
    checkpoint: RunCheckpoint,
    /// Whether preparing it created the run folder, which a failure before the first save
    /// then removes again.
    created: bool,
    resumed_at: Option<(usize, usize)>,
}

impl Experiment {
    /// Stops training at the end of the batch during which `token` is cancelled; the run is
    /// then saved as it stands.
    pub fn with_cancel_token(mut self, token: CancelToken) -> Self {
        self.trainer = self.trainer.with_cancel_token(token);
        self
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// The images trained on: without the validation images.
    pub fn train_set(&self) -> &Dataset {
        &self.train
    }

    pub fn validation_set(&self) -> Option<&Dataset> {
        self.validation.as_ref()
    }

    pub fn test_set(&self) -> &Dataset {
        &self.test
    }

    /// The run folder it saves into.
    pub fn out(&self) -> &Path {
        self.checkpoint.dir.path()
    }

    /// For a resumed run: the epochs it had done, and the batches of the next one.
    pub fn resumed_at(&self) -> Option<(usize, usize)> {
        self.resumed_at
    }

    /// Trains (see [`train::fit`]), saving the run after every epoch; returns the metrics of
    /// the epochs trained now. When training fails before anything was saved, the folder it
    /// created is removed again, so no empty run folder is left behind.
    pub fn fit(
        &mut self,
        observer: &mut dyn TrainObserver,
    ) -> Result<Vec<EpochMetrics>, TrainError> {
        let result = train::fit(
            &mut self.trainer,
            &self.train,
            self.validation.as_ref(),
            &self.test,
            observer,
            &mut self.checkpoint,
        );
        if result.is_err() && self.created && !self.has_checkpoint() {
            // Only an empty folder is removed; anything else in it stays.
            let _ = std::fs::remove_dir(self.out());
        }
        result
    }

    /// Whether the run folder holds a saved run (after a failure: the last good checkpoint).
    pub fn has_checkpoint(&self) -> bool {
        RunDir::holds_run(self.out())
    }
}

/// `PARENT/STEM`, or `PARENT/STEM-2`, ... : the first that is not `taken`.
pub fn next_free_name(parent: &Path, stem: &str, taken: impl Fn(&Path) -> bool) -> PathBuf {
    (1..)
        .map(|n| match n {
            1 => parent.join(stem),
            n => parent.join(format!("{stem}-{n}")),
        })
        .find(|dir| !taken(dir))
        .expect("some name is free")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;
    use crate::train::Optimizer;

    /// The settings a new run with `adjustments` trains with.
    fn planned(adjustments: Adjustments) -> Result<TrainConfig, ExperimentError> {
        let plan = Plan::start(adjustments, Some(PathBuf::from("unused")))?;
        Ok(plan.settings(DatasetName::Mnist)?.1)
    }

    #[test]
    fn another_optimizer_comes_with_its_own_defaults_and_naming_the_presets_keeps_them() {
        let best = |optimizer, momentum| {
            planned(Adjustments {
                preset: Some(Preset::Best),
                optimizer: Some(optimizer),
                momentum,
                ..Adjustments::default()
            })
            .map(|config| config.optimizer)
        };
        assert_eq!(
            best(OptimizerKind::AdamW, None).unwrap(),
            Optimizer::AdamW { weight_decay: 0.05 }
        );
        assert_eq!(
            best(OptimizerKind::Adam, None).unwrap(),
            Optimizer::Adam { weight_decay: 0.0 }
        );
        assert_eq!(
            best(OptimizerKind::Sgd, Some(0.9)).unwrap(),
            Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0
            }
        );
        assert!(matches!(
            best(OptimizerKind::Adam, Some(0.9)),
            Err(ExperimentError::Config(ConfigError::MomentumWithout(
                OptimizerKind::Adam
            )))
        ));
    }

    #[test]
    fn resuming_finishes_an_interrupted_run_or_trains_as_many_epochs_again() {
        let dir = tempfile::tempdir().unwrap();
        let model = ModelConfig::default();
        let run = RunDir::create(dir.path()).unwrap();
        let resumed_epochs = |epochs_done: usize, more: Option<usize>| {
            let saved = RunConfig {
                digits_version: "0".into(),
                model: model.clone(),
                train: Some(TrainConfig {
                    epochs: 3,
                    ..TrainConfig::default()
                }),
                imported: None,
                dataset: DatasetName::MnistLite,
                epochs_done,
                batches_done: 0,
            };
            run.save(&saved, &model.initial_weights(0), None, &[], false)
                .unwrap();
            let more = Adjustments {
                epochs: more,
                ..Adjustments::default()
            };
            let experiment = Plan::resume(dir.path(), more, None)
                .unwrap()
                .prepare(
                    DatasetName::MnistLite,
                    Dataset::lite(Split::Train).truncated(64),
                    Dataset::lite(Split::Test).truncated(64),
                    &Device::flex(),
                )
                .unwrap();
            assert_eq!(experiment.resumed_at(), Some((epochs_done, 0)));
            experiment.trainer().config().epochs
        };
        assert_eq!(resumed_epochs(1, None), 3, "the rest of the epochs started");
        assert_eq!(resumed_epochs(3, None), 6, "as many again");
        assert_eq!(resumed_epochs(1, Some(1)), 2);
        assert_eq!(resumed_epochs(3, Some(2)), 5);
        assert!(matches!(
            Plan::resume(
                dir.path(),
                Adjustments {
                    model: Some(ModelKind::Cnn),
                    ..Adjustments::default()
                },
                None
            ),
            Err(ExperimentError::ArchitectureFixed)
        ));
    }
}
