//! Timing the tutorial's workload: one epoch of 60,000 images through the MLP, batch 32, Adam.
//!
//! The images come from the built-in set, cycled, so the figure never depends on what is
//! downloaded; an epoch's cost depends on how many images pass, not which.

use std::time::{Duration, Instant};

use burn::tensor::Device;

use crate::data::{Dataset, Split};
use crate::model::ModelConfig;
use crate::train::{TrainConfig, Trainer};

/// Images in one epoch of the tutorial: the MNIST training set.
pub const TUTORIAL_EPOCH_IMAGES: usize = 60_000;

/// One timing of the tutorial workload.
#[derive(Debug, Clone, Copy)]
pub struct EpochTiming {
    pub images: usize,
    pub elapsed: Duration,
}

impl EpochTiming {
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.elapsed.as_secs_f64()
    }

    /// The time a full 60,000-image epoch takes at this rate.
    pub fn epoch_seconds(&self) -> f64 {
        TUTORIAL_EPOCH_IMAGES as f64 / self.images_per_second()
    }
}

/// Trains the tutorial model on `images` images after `warmup` untimed batches.
pub fn tutorial_epoch(images: usize, warmup: usize, device: &Device) -> EpochTiming {
    let data = Dataset::lite(Split::Train);
    let config = TrainConfig::default();
    let model = ModelConfig::default();
    let weights = model.initial_weights(config.seed);
    let mut trainer = Trainer::new(model, weights, config.clone(), device)
        .expect("fresh weights fit their own architecture");
    let mut batches = std::iter::repeat_with(|| data.batches(config.batch_size, None)).flatten();
    for batch in batches.by_ref().take(warmup) {
        trainer.step(&batch);
    }
    let started = Instant::now();
    let mut done = 0;
    for batch in batches {
        if done >= images {
            break;
        }
        done += batch.len();
        trainer.step(&batch);
    }
    EpochTiming {
        images: done,
        elapsed: started.elapsed(),
    }
}
