//! # digits
//!
//! Handwritten-digit recognition on [Burn](https://burn.dev): the classic beginner PyTorch
//! MNIST tutorial, step for step, as a library and a command-line tool.
//!
//! ```no_run
//! use digits::data::{Dataset, Split};
//! use digits::model::ModelConfig;
//! use digits::train::{Trainer, TrainConfig};
//!
//! let train = Dataset::lite(Split::Train);
//! let test = Dataset::lite(Split::Test);
//! let device = digits::device::DeviceChoice::Auto.select()?.device;
//! let model = ModelConfig::default();
//! let mut trainer = Trainer::new(model.clone(), model.initial_weights(0), TrainConfig::default(), &device)?;
//! trainer.train_epoch(&train, &mut digits::train::Quiet)?;
//! let evaluation = digits::eval::evaluate(&trainer.model(), &test, 32);
//! println!("Accuracy: {:.1}%", 100.0 * evaluation.accuracy());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Data flows one way: `data` (IDX files, downloads, batches) -> `augment` -> `model` ->
//! `train` -> `run` (the folder a run is saved in) -> `experiment` (a whole run, from a preset
//! and settings), and `eval`, whose results `report` draws; `show` draws samples. A person's
//! image goes through `prepare` (to the 28x28 digit MNIST models expect) and `predict`.
//! Nothing here prints: progress reaches the caller through observer traits.

pub mod augment;
pub mod bench;
pub mod choice;
pub(crate) mod cpu;
pub mod data;
pub mod device;
pub mod eval;
pub mod experiment;
pub mod files;
pub mod interop;
pub mod labelled;
pub mod model;
pub mod predict;
pub mod prepare;
pub mod report;
pub mod run;
pub mod serve;
pub mod show;
pub mod train;
