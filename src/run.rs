//! The run folder: the only code that knows its layout.
//!
//! ```text
//! RUN/config.json          what was trained, how (or, imported, from which file), on what,
//!                          and how far (RunConfig)
//! RUN/model.safetensors    the weights, in PyTorch's layout and the tutorial's names
//! RUN/best.safetensors     with validation images: the weights of the best epoch, which
//!                          eval, predict and serve use (model.safetensors resumes training)
//! RUN/optimizer.safetensors the optimizer's state for --resume, under PyTorch's names
//!                          whichever engine trained (OptimizerState); folders written before
//!                          that may hold Burn's record, optimizer.bpk, read in its place
//! RUN/metrics.jsonl        one line per epoch (EpochMetrics)
//! ```
//!
//! Every file is written to a temporary file in the same folder, flushed to disk and renamed
//! over the old one, so a crash mid-save leaves the previous checkpoint whole. The weights are
//! renamed into place before the config that describes them, so the config never claims more
//! epochs than the weights beside it have had.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::data::DatasetName;
use crate::files::write_atomically;
use crate::model::{Model, ModelConfig, Weights, WeightsError, weights};
use crate::train::{
    Checkpoint, ConfigError, EpochMetrics, OptimizerState, OptimizerStateError, TrainConfig,
    TrainError, Trainer,
};

const CONFIG_FILE: &str = "config.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const BEST_WEIGHTS_FILE: &str = "best.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Burn's optimizer record, which runs trained on Burn's path saved until both engines shared
/// one format.
const BURN_RECORD_FILE: &str = "optimizer.bpk";
const METRICS_FILE: &str = "metrics.jsonl";

/// Everything needed to rebuild, resume or compare a run, saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub digits_version: String,
    pub model: ModelConfig,
    /// How it was trained; `None` for imported weights not trained here, which have no
    /// settings to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainConfig>,
    /// Where imported weights came from; `None` for a run trained from scratch (and in run
    /// folders written before imports were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Provenance>,
    /// The set it was trained on (after any fallback to `mnist-lite`); for imported weights,
    /// the set `digits import --dataset` named.
    pub dataset: DatasetName,
    pub epochs_done: usize,
    /// Batches of the next epoch already trained, when training was stopped mid-epoch.
    #[serde(default)]
    pub batches_done: usize,
}

/// Where an imported run's weights came from, recorded by `digits import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The file imported, as an absolute path where it could be resolved.
    pub file: String,
    /// Its SHA-256 as lowercase hex: whether a file of that name is still the one imported.
    pub sha256: String,
    /// When it was imported, in UTC (RFC 3339).
    pub date: String,
    /// The file's names of the weights that digits saves under other names (digits' name ->
    /// the file's), for whoever needs to map them back.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub names: std::collections::BTreeMap<String, String>,
}

impl RunConfig {
    /// How the model came to be, for people: `after 10 epochs on mnist`, `imported from
    /// FILE`, or `imported from FILE, then trained 2 epochs on mnist-lite`.
    pub fn origin(&self) -> String {
        let trained = match self.epochs_done {
            1 => format!("1 epoch on {}", self.dataset),
            n => format!("{n} epochs on {}", self.dataset),
        };
        match (&self.imported, self.epochs_done) {
            (Some(source), 0) => format!("imported from {}", source.file),
            (Some(source), _) => format!("imported from {}, then trained {trained}", source.file),
            (None, _) => format!("after {trained}"),
        }
    }
}

/// Every way reading or writing a run folder can fail.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "{path} is not a run folder (no {CONFIG_FILE}); train one with `digits train --out {path}`"
    )]
    NotARun { path: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid run config")]
    Config {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}")]
    Settings {
        path: String,
        #[source]
        source: ConfigError,
    },
    #[error("{path}")]
    Weights {
        path: String,
        #[source]
        source: WeightsError,
    },
    #[error("{path}")]
    OptimizerState {
        path: String,
        #[source]
        source: OptimizerStateError,
    },
}

/// A run folder on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates the folder (and its parents) for a new run, checking it can be written to now
    /// rather than after the first epoch.
    pub fn create(path: &Path) -> Result<Self, RunError> {
        let write_error = |source| RunError::Write {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(path).map_err(write_error)?;
        tempfile::NamedTempFile::new_in(path).map_err(write_error)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// An existing run.
    pub fn open(path: &Path) -> Result<Self, RunError> {
        if !path.join(CONFIG_FILE).is_file() {
            return Err(RunError::NotARun {
                path: path.display().to_string(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Whether `path` holds a run: where a new run must not be saved.
    pub fn holds_run(path: &Path) -> bool {
        path.join(CONFIG_FILE).exists()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn weights_path(&self) -> PathBuf {
        self.path.join(WEIGHTS_FILE)
    }

    pub fn config(&self) -> Result<RunConfig, RunError> {
        let path = self.path.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).map_err(|source| RunError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: RunConfig = serde_json::from_str(&text).map_err(|source| RunError::Config {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(train) = &config.train {
            train.validate().map_err(|source| RunError::Settings {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(config)
    }

    /// The weights of the latest epoch: where training resumes from.
    pub fn weights(&self) -> Result<Weights, RunError> {
        read_weights(&self.weights_path())
    }

    /// The weights to use the model with: the best epoch's when training held images out to
    /// choose it, else the latest.
    pub fn best_weights_path(&self) -> PathBuf {
        let best = self.path.join(BEST_WEIGHTS_FILE);
        if best.is_file() {
            best
        } else {
            self.weights_path()
        }
    }

    /// The trained model (see [`RunDir::best_weights_path`]), ready for evaluation or
    /// prediction on `device`.
    pub fn load_model(&self, device: &Device) -> Result<(RunConfig, Model), RunError> {
        let config = self.config()?;
        let path = self.best_weights_path();
        let model =
            Model::from_weights(&config.model, read_weights(&path)?, device).map_err(|source| {
                RunError::Weights {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        Ok((config, model))
    }

    /// The saved optimizer state, if the run has one (imported weights do not). A run saved
    /// before both engines shared one format may hold Burn's record instead, which is
    /// converted (it names parameters by their ids in the model the run's weights build).
    pub fn optimizer_state(&self) -> Result<Option<OptimizerState>, RunError> {
        let path = self.path.join(OPTIMIZER_FILE);
        // Such a folder may hold both files, when its run went on on the other engine: the
        // newer one is the run's latest state. (The next save leaves only the one format.)
        let modified = |file: &str| {
            fs::metadata(self.path.join(file))
                .and_then(|m| m.modified())
                .ok()
        };
        let record_is_newer = modified(BURN_RECORD_FILE) > modified(OPTIMIZER_FILE);
        if !record_is_newer && let Some(bytes) = read_if_present(&path)? {
            let origin = path.display().to_string();
            return OptimizerState::from_safetensors_bytes(&bytes, &origin)
                .map(Some)
                .map_err(|source| RunError::Weights {
                    path: origin,
                    source,
                });
        }
        let path = self.path.join(BURN_RECORD_FILE);
        let Some(bytes) = read_if_present(&path)? else {
            return Ok(None);
        };
        let config = self.config()?.model;
        let model =
            Model::from_weights(&config, self.weights()?, &Device::flex()).map_err(|source| {
                RunError::Weights {
                    path: self.weights_path().display().to_string(),
                    source,
                }
            })?;
        OptimizerState::from_burn_record(Bytes::from_bytes_vec(bytes), &model)
            .map(Some)
            .map_err(|source| RunError::OptimizerState {
                path: path.display().to_string(),
                source,
            })
    }

    /// Every epoch recorded so far, oldest first.
    pub fn metrics(&self) -> Result<Vec<EpochMetrics>, RunError> {
        let path = self.path.join(METRICS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RunError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|source| RunError::Config {
                    path: path.display().to_string(),
                    source,
                })
            })
            .collect()
    }

    /// Saves a whole checkpoint: optimizer state, weights (and, if this epoch is the best so
    /// far, the best weights), metrics so far, then the config.
    pub fn save(
        &self,
        config: &RunConfig,
        weights: &Weights,
        optimizer_state: Option<&OptimizerState>,
        metrics: &[EpochMetrics],
        best: bool,
    ) -> Result<(), RunError> {
        self.remove_abandoned_temporary_files();
        if let Some(state) = optimizer_state {
            let path = self.path.join(OPTIMIZER_FILE);
            let bytes = state
                .to_safetensors_bytes()
                .map_err(|source| RunError::Weights {
                    path: path.display().to_string(),
                    source,
                })?;
            self.write(OPTIMIZER_FILE, &bytes)?;
            // Written after the state that replaces it, so a crash between leaves one of them.
            let stale = self.path.join(BURN_RECORD_FILE);
            match fs::remove_file(&stale) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RunError::Write {
                        path: stale.display().to_string(),
                        source: err,
                    });
                }
                _ => {}
            }
        }
        let bytes = weights::to_safetensors_bytes(weights).map_err(|source| RunError::Weights {
            path: self.weights_path().display().to_string(),
            source,
        })?;
        if best {
            self.write(BEST_WEIGHTS_FILE, &bytes)?;
        }
        self.write(WEIGHTS_FILE, &bytes)?;
        let mut lines = String::new();
        for epoch in metrics {
            lines.push_str(&serde_json::to_string(epoch).expect("metrics serialise"));
            lines.push('\n');
        }
        self.write(METRICS_FILE, lines.as_bytes())?;
        let json = serde_json::to_string_pretty(config).expect("run configs serialise");
        self.write(CONFIG_FILE, json.as_bytes())
    }

    /// A process killed in the middle of a write leaves its temporary file (`.tmpXXXXXX`,
    /// never read by anything); the next save clears them so they do not pile up.
    fn remove_abandoned_temporary_files(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        let path = self.path.join(name);
        write_atomically(&path, bytes).map_err(|source| RunError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The bytes of `path`, or `None` when there is no such file.
fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, RunError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn read_weights(path: &Path) -> Result<Weights, RunError> {
    weights::read_safetensors(path, "").map_err(|source| RunError::Weights {
        path: path.display().to_string(),
        source,
    })
}

/// Saves a run after every epoch of [`crate::train::fit`].
pub struct RunCheckpoint {
    pub dir: RunDir,
    pub dataset: DatasetName,
    /// Where the weights training started from were imported from, if they were.
    pub imported: Option<Provenance>,
    /// Epochs recorded before this session (from a resumed run), then each new one.
    pub history: Vec<EpochMetrics>,
}

impl Checkpoint for RunCheckpoint {
    fn save(
        &mut self,
        trainer: &Trainer,
        metrics: &EpochMetrics,
        best: bool,
    ) -> Result<(), TrainError> {
        self.history.push(metrics.clone());
        self.write(trainer, best)
    }

    fn save_interrupted(&mut self, trainer: &Trainer) -> Result<(), TrainError> {
        self.write(trainer, false)
    }
}

impl RunCheckpoint {
    fn write(&self, trainer: &Trainer, best: bool) -> Result<(), TrainError> {
        let config = RunConfig {
            digits_version: env!("CARGO_PKG_VERSION").to_string(),
            model: trainer.model_config().clone(),
            train: Some(trainer.config().clone()),
            imported: self.imported.clone(),
            dataset: self.dataset,
            epochs_done: trainer.epochs_done(),
            batches_done: trainer.batches_done(),
        };
        let state = trainer.optimizer_state()?;
        self.dir
            .save(
                &config,
                &trainer.weights(),
                Some(&state),
                &self.history,
                best,
            )
            .map_err(|err| TrainError::Checkpoint(Box::new(err)))
    }
}
