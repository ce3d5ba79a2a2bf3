//! `digits train`: the tutorial's training, with its defaults, plus `--resume`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use digits::data::{DatasetName, Split};
use digits::device::DeviceChoice;
use digits::model::{Activation, MlpConfig, ModelConfig};
use digits::run::{RunCheckpoint, RunDir};
use digits::train::{self, OptimizerKind, TrainConfig, Trainer};

use super::{DataArgs, progress::TrainPrinter};

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

/// What to train on and how: every training flag but where the run goes.
#[derive(Debug, Clone, Args)]
pub struct TrainSettings {
    #[command(flatten)]
    data: DataArgs,
    /// Epochs to train (with --resume: further epochs) [default: 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: Option<u32>,
    /// Learning rate [default: 0.01].
    #[arg(long)]
    lr: Option<f64>,
    /// adam or sgd [default: adam].
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// relu or sigmoid [default: relu].
    #[arg(long)]
    activation: Option<Activation>,
    /// Hidden layer widths [default: 128,400].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    hidden: Option<Vec<u32>>,
    /// Reshuffle the training set every epoch (the tutorial keeps its order).
    #[arg(long)]
    shuffle: bool,
    /// Seed for the initial weights and shuffling [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// auto (the best available) or cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Train on only the first N training images (for quick experiments).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
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
            "hidden" => {
                let widths = value
                    .split('+')
                    .map(str::parse)
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|e| invalid(&e))?;
                self.hidden = Some(widths);
            }
            other => bail!(
                "--vary cannot vary '{other}': choose activation, optimizer, lr, batch-size, seed or hidden"
            ),
        }
        Ok(())
    }
}

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
    if args.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    if args.lr.is_some_and(|lr| !(lr.is_finite() && lr > 0.0)) {
        bail!("--lr must be a positive number");
    }
    let resumed = match resume {
        Some(path) => {
            let run = RunDir::open(path)?;
            Some((run.config()?, run))
        }
        None => None,
    };
    if resumed.is_some() && (args.activation.is_some() || args.hidden.is_some()) {
        bail!(
            "--activation and --hidden cannot change when resuming: the architecture is the saved run's"
        );
    }

    let selected = args.device.select();
    println!("Using {} device ({})", selected.name, selected.reason);

    let default_dataset = resumed
        .as_ref()
        .map_or(DatasetName::Mnist, |(c, _)| c.dataset);
    let resolved = args.data.resolve(default_dataset)?;
    let mut train_set = resolved.load(Split::Train)?;
    if let Some(limit) = args.limit {
        train_set = train_set.truncated(limit);
    }
    let test_set = resolved.load(Split::Test)?;
    anyhow::ensure!(!train_set.is_empty(), "the training set is empty");

    let (model_config, mut config, weights, history, out, resume_state) = match resumed {
        Some((saved, run)) => {
            let mut config = saved.train.clone();
            config.epochs = saved.epochs_done + args.epochs.unwrap_or(saved.train.epochs);
            let out = out.unwrap_or_else(|| run.path().to_path_buf());
            let resume_state = Some((run.optimizer_state()?, saved.epochs_done));
            (
                saved.model,
                config,
                run.weights()?,
                run.metrics()?,
                out,
                resume_state,
            )
        }
        None => {
            let model_config = ModelConfig::Mlp(MlpConfig {
                hidden: args
                    .hidden
                    .clone()
                    .map(|h| h.into_iter().map(|w| w as usize).collect())
                    .unwrap_or_else(|| MlpConfig::default().hidden),
                activation: args.activation.unwrap_or_default(),
            });
            let config = TrainConfig {
                epochs: args.epochs.unwrap_or(TrainConfig::default().epochs),
                ..TrainConfig::default()
            };
            let out = match out {
                Some(out) if out.join("config.json").exists() => bail!(
                    "{} already holds a run; continue it with --resume {0}, or choose another --out",
                    out.display()
                ),
                Some(out) => out,
                None => next_free_run_dir(Path::new("runs"), "tutorial"),
            };
            let weights = model_config.initial_weights(args.seed.unwrap_or(config.seed));
            (model_config, config, weights, Vec::new(), out, None)
        }
    };
    if let Some(batch_size) = args.batch_size {
        config.batch_size = batch_size as usize;
    }
    config.lr = args.lr.unwrap_or(config.lr);
    config.optimizer = args.optimizer.unwrap_or(config.optimizer);
    config.shuffle |= args.shuffle;
    config.seed = args.seed.unwrap_or(config.seed);

    let run_dir = RunDir::create(&out)?;
    let first = test_set
        .batches(config.batch_size, None)
        .next()
        .context("the test set is empty")?;
    println!(
        "Dataset: {} ({} training images, {} test images)",
        resolved.dataset,
        train_set.len(),
        test_set.len()
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

    let mut trainer = Trainer::new(model_config, weights, config, &selected.device)?;
    if let Some((optimizer_state, epochs_done)) = resume_state {
        trainer = trainer.resume(optimizer_state, epochs_done)?;
        println!("Resuming after epoch {epochs_done}");
    }
    let mut checkpoint = RunCheckpoint {
        dir: run_dir,
        dataset: resolved.dataset,
        history,
    };
    train::fit(
        &mut trainer,
        &train_set,
        &test_set,
        &mut TrainPrinter::new(),
        &mut checkpoint,
    )?;
    Ok(out)
}

/// `runs/tutorial`, or `runs/tutorial-2`, ... : the first that does not hold a run yet, so a
/// new run never overwrites an old one.
pub fn next_free_run_dir(parent: &Path, stem: &str) -> PathBuf {
    (1..)
        .map(|n| match n {
            1 => parent.join(stem),
            n => parent.join(format!("{stem}-{n}")),
        })
        .find(|dir| !dir.join("config.json").exists())
        .expect("some run folder name is free")
}
