//! `digits train`: the tutorial's training, with its defaults, plus `--resume`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use digits::augment::AugmentConfig;
use digits::data::{DatasetName, Split};
use digits::device::DeviceChoice;
use digits::model::{Activation, ModelConfig, ModelKind, Normalization};
use digits::run::{RunCheckpoint, RunDir};
use digits::train::{self, EngineChoice, LrSchedule, OptimizerKind, Preset, TrainError, Trainer};

use super::{DataArgs, at_least, progress::TrainPrinter};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub settings: TrainSettings,
    /// Run folder to save into [default: runs/tutorial, or the next free runs/tutorial-N;
    /// with --resume: the resumed run].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep training a saved run from where it stopped.
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
}

/// What to train on and how: every training flag but where the run goes. A flag given
/// overrides the preset's value.
#[derive(Debug, Clone, Args)]
pub struct TrainSettings {
    #[command(flatten)]
    data: DataArgs,
    /// tutorial (the tutorial's MLP and settings) or best (the strongest recipe for a laptop
    /// CPU: cnn, AdamW, one-cycle, augmentation) [default: tutorial].
    #[arg(long)]
    preset: Option<Preset>,
    /// mlp (the tutorial's), mlp-large, lenet5, cnn or cnn-large [default: the preset's].
    #[arg(long)]
    model: Option<ModelKind>,
    /// Epochs to train (with --resume: further epochs) [default: 10].
    #[arg(long, allow_negative_numbers = true, value_parser = at_least::<1>)]
    epochs: Option<usize>,
    /// Images per batch [default: 32].
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = clap::builder::RangedI64ValueParser::<u32>::new().range(1..=65536)
    )]
    batch_size: Option<u32>,
    /// Learning rate (the peak, with a schedule) [default: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// adam, adamw or sgd [default: adam].
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Weight decay [default: 0; AdamW: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// SGD momentum, e.g. 0.9 [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// constant, one-cycle, cosine or step[:EPOCHS[:FACTOR]] [default: constant].
    #[arg(long)]
    schedule: Option<LrSchedule>,
    /// Label smoothing, e.g. 0.1 [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    label_smoothing: Option<f64>,
    /// Random distortions of the training images: none, digits (affine and elastic),
    /// affine, clothes (flips and shifts) or handwriting (for people's own digits)
    /// [default: none].
    #[arg(long)]
    augment: Option<AugmentChoice>,
    /// Marks that are no digit (crosses, stars, scribbles) added per training digit, taught
    /// to get no confident answer, e.g. 0.1 [default: 0].
    #[arg(long, value_name = "FRACTION")]
    not_digits: Option<f64>,
    /// Standardise inputs with the training set's mean and standard deviation.
    #[arg(long)]
    normalize: bool,
    /// Hold out the last N training images to pick the best epoch (saved as
    /// best.safetensors, which eval, predict and serve then use).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    validation: Option<usize>,
    /// With --validation: stop after N epochs without a better validation accuracy.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    patience: Option<usize>,
    /// relu or sigmoid [default: relu].
    #[arg(long)]
    activation: Option<Activation>,
    /// MLP hidden layer widths [default: 128,400].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    hidden: Option<Vec<u32>>,
    /// Reshuffle the training set every epoch (the tutorial keeps its order).
    #[arg(long)]
    shuffle: bool,
    /// Seed for the initial weights, shuffling and augmentation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// auto (CUDA, else a hardware wgpu adapter, else the CPU), cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// auto (the fused CPU path for plain MLPs, Burn's autodiff otherwise) or burn (always
    /// Burn's) [default: auto].
    #[arg(long)]
    engine: Option<EngineChoice>,
    /// Train on only the first N training images (for quick experiments).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    limit: Option<usize>,
}

/// The augmentations `--augment` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AugmentChoice {
    None,
    Digits,
    Affine,
    Clothes,
    /// For people's own digits: every pen, blur, tight crops, continental 1s and 7s, framed
    /// as `prepare` frames them.
    Handwriting,
}

impl AugmentChoice {
    fn config(self) -> Option<AugmentConfig> {
        match self {
            AugmentChoice::None => None,
            AugmentChoice::Digits => Some(AugmentConfig::digits()),
            AugmentChoice::Affine => Some(AugmentConfig {
                elastic: None,
                ..AugmentConfig::digits()
            }),
            AugmentChoice::Clothes => Some(AugmentConfig::clothes()),
            AugmentChoice::Handwriting => Some(AugmentConfig::handwriting()),
        }
    }
}

impl TrainSettings {
    /// Sets one setting by its flag's name, as `digits compare --vary` names them.
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let invalid = |err: &dyn std::fmt::Display| anyhow::anyhow!("--vary {key}={value}: {err}");
        match key {
            "activation" => self.activation = Some(value.parse().map_err(|e| invalid(&e))?),
            "optimizer" => self.optimizer = Some(value.parse().map_err(|e| invalid(&e))?),
            "lr" => self.lr = Some(value.parse().map_err(|e| invalid(&e))?),
            "batch-size" => self.batch_size = Some(value.parse().map_err(|e| invalid(&e))?),
            "seed" => self.seed = Some(value.parse().map_err(|e| invalid(&e))?),
            "model" => self.model = Some(value.parse().map_err(|e| invalid(&e))?),
            "preset" => self.preset = Some(value.parse().map_err(|e| invalid(&e))?),
            "schedule" => self.schedule = Some(value.parse().map_err(|e| invalid(&e))?),
            "weight-decay" => self.weight_decay = Some(value.parse().map_err(|e| invalid(&e))?),
            "momentum" => self.momentum = Some(value.parse().map_err(|e| invalid(&e))?),
            "engine" => self.engine = Some(value.parse().map_err(|e| invalid(&e))?),
            "label-smoothing" => {
                self.label_smoothing = Some(value.parse().map_err(|e| invalid(&e))?)
            }
            "augment" => {
                self.augment = Some(
                    <AugmentChoice as clap::ValueEnum>::from_str(value, false)
                        .map_err(|e| invalid(&e))?,
                )
            }
            "hidden" => {
                let widths = value
                    .split('+')
                    .map(str::parse)
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|e| invalid(&e))?;
                self.hidden = Some(widths);
            }
            other => bail!(
                "--vary cannot vary '{other}': choose activation, optimizer, lr, batch-size, seed, \
                 hidden, model, preset, schedule, weight-decay, momentum, label-smoothing, augment or engine"
            ),
        }
        Ok(())
    }

    /// Refuses values no training could use, before any data is loaded.
    fn check(&self) -> anyhow::Result<()> {
        if self.lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) {
            bail!("--lr must be a positive number");
        }
        if self
            .weight_decay
            .is_some_and(|w| !(w.is_finite() && w >= 0.0))
        {
            bail!("--weight-decay must be zero or a positive number");
        }
        if self.momentum.is_some_and(|m| !(0.0..1.0).contains(&m)) {
            bail!("--momentum must be in [0, 1)");
        }
        if self
            .label_smoothing
            .is_some_and(|s| !(0.0..1.0).contains(&s))
        {
            bail!("--label-smoothing must be in [0, 1)");
        }
        if self.not_digits.is_some_and(|n| !(0.0..=1.0).contains(&n)) {
            bail!("--not-digits must be in [0, 1]");
        }
        if self.patience.is_some() && self.validation.unwrap_or(0) == 0 {
            bail!("--patience needs --validation N: the images to judge each epoch on");
        }
        if self.hidden.is_some()
            && !matches!(
                self.model,
                None | Some(ModelKind::Mlp | ModelKind::MlpLarge)
            )
        {
            bail!("--hidden sets the widths of an MLP; the convolutional models have fixed layers");
        }
        Ok(())
    }
}

/// Training was stopped by Ctrl-C or SIGTERM and saved: `main` exits with 130, as shells
/// expect of an interrupted command.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let out = train(&args.settings, args.resume.as_deref(), args.out)?;
    println!("Done! Saved to {}", out.display());
    Ok(())
}

/// Trains as the settings say, into `out` (or the resumed run, or the next free
/// `runs/tutorial-N`); returns the run folder.
pub fn train(
    args: &TrainSettings,
    resume: Option<&Path>,
    out: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    args.check()?;
    let resumed = match resume {
        Some(path) => {
            let run = RunDir::open(path)?;
            Some((run.config()?, run))
        }
        None => None,
    };
    if resumed.is_some()
        && (args.activation.is_some()
            || args.hidden.is_some()
            || args.model.is_some()
            || args.preset.is_some()
            || args.normalize)
    {
        bail!(
            "--preset, --model, --activation, --hidden and --normalize cannot change when \
             resuming: the architecture is the saved run's"
        );
    }

    let selected = args.device.select()?;
    println!("Using {} device ({})", selected.name, selected.reason);

    let default_dataset = resumed
        .as_ref()
        .map_or(DatasetName::Mnist, |(c, _)| c.dataset);
    let resolved = args
        .data
        .resolve(default_dataset, &[Split::Train, Split::Test])?;
    let mut train_set = resolved.load(Split::Train)?;
    if let Some(limit) = args.limit {
        train_set = train_set.truncated(limit);
    }
    let test_set = resolved.load(Split::Test)?;

    let preset = args.preset.unwrap_or_default();
    let imported = resumed
        .as_ref()
        .and_then(|(saved, _)| saved.imported.clone());
    let (mut model_config, mut config, weights, history, out, resume_state) = match resumed {
        Some((saved, run)) => {
            // Imported weights were not trained here: they go on with the tutorial's settings.
            let mut config = saved.train.clone().unwrap_or_default();
            let started_with = config.epochs;
            config.epochs = match args.epochs {
                Some(more) => saved.epochs_done.saturating_add(more),
                // An interrupted run finishes the epochs it was started with.
                None if saved.epochs_done < started_with => started_with,
                None => saved.epochs_done + started_with,
            };
            let out = out.unwrap_or_else(|| run.path().to_path_buf());
            let resume_state = Some((
                run.optimizer_state()?,
                saved.epochs_done,
                saved.batches_done,
            ));
            // A process killed between writing the metrics and the config leaves a line for
            // an epoch the config does not count; that epoch is trained again.
            let mut history = run.metrics()?;
            history.truncate(saved.epochs_done);
            (
                saved.model,
                config,
                Some(run.weights()?),
                history,
                out,
                resume_state,
            )
        }
        None => {
            let (kind, mut config) = preset.recipe(resolved.dataset);
            let mut model_config = args.model.unwrap_or(kind).config();
            if let ModelConfig::Mlp(mlp) = &mut model_config {
                if let Some(hidden) = &args.hidden {
                    mlp.hidden = hidden.iter().map(|&w| w as usize).collect();
                }
                mlp.activation = args.activation.unwrap_or(mlp.activation);
            } else if let (ModelConfig::Cnn(cnn), Some(activation)) =
                (&mut model_config, args.activation)
            {
                cnn.activation = activation;
            }
            config.epochs = args.epochs.unwrap_or(config.epochs);
            let out = match out {
                Some(out) if out.join("config.json").exists() => bail!(
                    "{} already holds a run; continue it with --resume {0}, or choose another --out",
                    out.display()
                ),
                Some(out) => out,
                None => next_free_run_dir(Path::new("runs"), "tutorial"),
            };
            (model_config, config, None, Vec::new(), out, None)
        }
    };
    if let Some(batch_size) = args.batch_size {
        config.batch_size = batch_size as usize;
    }
    config.lr = args.lr.unwrap_or(config.lr);
    config.optimizer = args.optimizer.unwrap_or(config.optimizer);
    config.weight_decay = args.weight_decay.or(config.weight_decay);
    config.momentum = args.momentum.unwrap_or(config.momentum);
    config.schedule = args.schedule.unwrap_or(config.schedule);
    config.label_smoothing = args.label_smoothing.unwrap_or(config.label_smoothing);
    if let Some(choice) = args.augment {
        config.augment = choice.config();
    }
    config.not_digits = args.not_digits.unwrap_or(config.not_digits);
    config.validation = args.validation.unwrap_or(config.validation);
    config.patience = args.patience.or(config.patience);
    config.engine = args.engine.unwrap_or(config.engine);
    config.shuffle |= args.shuffle;
    config.seed = args.seed.unwrap_or(config.seed);

    let validation_set = (config.validation > 0).then(|| train_set.split_off(config.validation));
    anyhow::ensure!(
        !train_set.is_empty(),
        "the training set is empty{}",
        if config.validation > 0 {
            " once the validation images are held out"
        } else {
            ""
        }
    );
    if weights.is_none() && (args.normalize || preset.normalizes()) {
        let (mean, std) = train_set.pixel_statistics();
        *model_config.normalization_mut() = Some(Normalization {
            mean,
            std: std.max(1e-6),
        });
    }
    let weights = weights.unwrap_or_else(|| model_config.initial_weights(config.seed));

    let created = !out.exists();
    let run_dir = RunDir::create(&out)?;
    let first = test_set
        .batches(config.batch_size, None)
        .next()
        .context("the test set is empty")?;
    println!(
        "Dataset: {} ({} training images, {} test images{})",
        resolved.dataset,
        train_set.len(),
        test_set.len(),
        validation_set
            .as_ref()
            .map(|v| format!(", {} held out for validation", v.len()))
            .unwrap_or_default()
    );
    println!("Shape of X [N, C, H, W]: {:?}", first.shape());
    println!("Shape of y: [{}] int64", first.len());
    println!(
        "Model: {} ({} parameters); {:?} lr {}, batch {}",
        model_config.describe(),
        model_config.parameter_count(),
        config.optimizer,
        config.lr,
        config.batch_size
    );

    let mut trainer = Trainer::new(model_config, weights, config, &selected.device)?
        .with_cancel_token(super::interrupt::cancel_on_signal());
    if let Some((optimizer_state, epochs_done, batches_done)) = resume_state {
        trainer = trainer
            .resume(optimizer_state, epochs_done)?
            .skip_batches(batches_done);
        match batches_done {
            0 => println!("Resuming after epoch {epochs_done}"),
            n => println!(
                "Resuming epoch {} after its first {n} batches",
                epochs_done + 1
            ),
        }
    }
    let mut checkpoint = RunCheckpoint {
        dir: run_dir,
        dataset: resolved.dataset,
        imported,
        history,
    };
    let history = match train::fit(
        &mut trainer,
        &train_set,
        validation_set.as_ref(),
        &test_set,
        &mut TrainPrinter::new(),
        &mut checkpoint,
    ) {
        Err(TrainError::Interrupted {
            epoch,
            batches_done,
        }) => {
            println!(
                "Interrupted during epoch {epoch} after {batches_done} batches; saved to {}. \
                 Continue with: digits train --resume {0}",
                out.display()
            );
            return Err(Interrupted.into());
        }
        Err(err) => {
            let kept = keep_or_discard(&out, created);
            return Err(match err {
                TrainError::Diverged { .. } => anyhow::anyhow!("{err}; {kept}"),
                other => other.into(),
            });
        }
        Ok(history) => history,
    };
    let best = history
        .iter()
        .filter_map(|m| m.validation_accuracy.map(|a| (a, m)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((validation_accuracy, metrics)) = best {
        println!(
            "Best epoch by validation: {} (validation {:.2}%, test {:.2}%), saved as best.safetensors",
            metrics.epoch,
            100.0 * validation_accuracy,
            100.0 * metrics.test_accuracy
        );
    }
    Ok(out)
}

/// After training failed: what `out` still holds, for the message. A folder this training
/// created and never saved a checkpoint into is removed, so no empty run folder is left behind.
fn keep_or_discard(out: &Path, created: bool) -> String {
    if RunDir::open(out).is_ok() {
        return format!("{} keeps the last good checkpoint", out.display());
    }
    if created {
        // Only an empty folder is removed; anything else in it stays.
        let _ = std::fs::remove_dir(out);
    }
    "nothing was saved".to_string()
}

/// `runs/tutorial`, or `runs/tutorial-2`, ... : the first that does not hold a run yet, so a
/// new run never overwrites an old one.
fn next_free_run_dir(parent: &Path, stem: &str) -> PathBuf {
    next_free_name(parent, stem, |dir| dir.join("config.json").exists())
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
