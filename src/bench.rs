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

/// A 2000x2000 colour "photo" of a test digit: dark ink on unevenly lit paper.
pub fn photo(side: u32) -> image::DynamicImage {
    let digit = Dataset::lite(Split::Test);
    let small =
        image::GrayImage::from_raw(28, 28, digit.image(0).to_vec()).expect("test images are 28x28");
    let ink = image::imageops::resize(
        &small,
        side / 2,
        side / 2,
        image::imageops::FilterType::Triangle,
    );
    let offset = side / 4;
    image::RgbImage::from_fn(side, side, |x, y| {
        let light = 0.95 - 0.4 * (x as f32 / side as f32) * (y as f32 / side as f32);
        let inside =
            (offset..offset + side / 2).contains(&x) && (offset..offset + side / 2).contains(&y);
        let a = if inside {
            f32::from(ink.get_pixel(x - offset, y - offset)[0]) / 255.0
        } else {
            0.0
        };
        let v = ((light * (1.0 - a) + 0.1 * a) * 255.0) as u8;
        image::Rgb([v, v, v.saturating_sub(10)])
    })
    .into()
}

/// The median of `runs` timings of `work`, after one untimed run.
pub fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    work();
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
