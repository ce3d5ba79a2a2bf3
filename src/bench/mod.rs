//! The workloads `digits bench` times: training the tutorial MLP (digits, the naive plain-loop
//! baseline in [`reference`], and PyTorch through `bench/pytorch_baseline.py` when it is installed),
//! training the `cnn` model, batch inference, one image, and a photo.
//!
//! The images come from the built-in set, cycled, so the figures never depend on what is
//! downloaded; an epoch's cost depends on how many images pass, not which.

pub mod contest;
pub mod pytorch;
pub mod reference;

use std::time::{Duration, Instant};

use burn::tensor::Device;

use crate::data::{Batch, Dataset, Split};
use crate::model::{Model, ModelConfig};
use crate::train::{EngineChoice, TrainConfig, Trainer};

/// Images in one epoch of the tutorial: the MNIST training set.
pub const TUTORIAL_EPOCH_IMAGES: usize = 60_000;

/// One timing of a training or inference workload.
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

/// Times `step` over `images` images in batches of `batch_size`, after `warmup` untimed
/// batches.
fn time_batches(
    images: usize,
    batch_size: usize,
    warmup: usize,
    mut step: impl FnMut(&Batch),
) -> EpochTiming {
    let data = Dataset::lite(Split::Train);
    let mut batches = std::iter::repeat_with(|| data.batches(batch_size, None)).flatten();
    for batch in batches.by_ref().take(warmup) {
        step(&batch);
    }
    let started = Instant::now();
    let mut done = 0;
    for batch in batches {
        if done >= images {
            break;
        }
        done += batch.len();
        step(&batch);
    }
    EpochTiming {
        images: done,
        elapsed: started.elapsed(),
    }
}

/// Trains `model` with `config` on `images` images after `warmup` untimed batches.
pub fn training(
    model: &ModelConfig,
    config: &TrainConfig,
    images: usize,
    warmup: usize,
    device: &Device,
) -> EpochTiming {
    let weights = model.initial_weights(config.seed);
    let mut trainer = Trainer::new(model.clone(), weights, config.clone(), device)
        .expect("fresh weights fit their own architecture");
    time_batches(images, config.batch_size, warmup, |batch| {
        trainer.step(batch);
    })
}

/// The tutorial workload: its MLP, batch 32, Adam lr 0.01, on `engine` (the fused path,
/// which `auto` takes here, or Burn's autodiff).
pub fn tutorial_epoch(
    images: usize,
    warmup: usize,
    engine: EngineChoice,
    device: &Device,
) -> EpochTiming {
    let config = TrainConfig {
        engine,
        ..TrainConfig::default()
    };
    training(&ModelConfig::default(), &config, images, warmup, device)
}

/// The tutorial workload through the plain-loop [`reference::ReferenceMlp`].
pub fn reference_epoch(images: usize, warmup: usize) -> EpochTiming {
    let config = TrainConfig::default();
    let weights = ModelConfig::default().initial_weights(config.seed);
    let mut mlp = reference::ReferenceMlp::new(weights, config.lr as f32)
        .expect("fresh weights fit the tutorial network");
    time_batches(images, config.batch_size, warmup, |batch| {
        mlp.step(batch);
    })
}

/// Batch inference ready to be timed: `model` and one batch of the first `batch_size`
/// images, made and passed through once before any clock starts. PyTorch's worker
/// (`bench/pytorch_baseline.py`) does the same: one batch already in memory, an untimed pass
/// the first time a workload is asked for, then the median of its timed passes per run.
pub struct Inference {
    models: crate::model::Ensemble,
    batch: Batch,
}

impl Inference {
    pub fn new(model: &Model, batch_size: usize) -> Self {
        let models = crate::model::Ensemble::new(vec![model.clone()]);
        let data = Dataset::lite(Split::Train).truncated(batch_size);
        let batch = data
            .batches(batch_size, None)
            .next()
            .expect("the built-in mnist-lite has images");
        models.log_probabilities_of(&batch.pixels);
        Self { models, batch }
    }

    /// One run: the median of `passes` timed passes over the batch. (Timing ten batches as
    /// one run, as before, let any pause on a shared machine count against digits alone.)
    pub fn time(&self, passes: usize) -> EpochTiming {
        EpochTiming {
            images: self.batch.len(),
            elapsed: timed_median(passes, || {
                self.models.log_probabilities_of(&self.batch.pixels);
            }),
        }
    }
}

/// The processor, as Linux names it, and the vector instructions that decide its arithmetic
/// rate: ratios against PyTorch differ between machines (a 2.0 GHz first-generation Zen,
/// whose AVX2 runs on 128-bit units, showed half the ratio of another CPU), so every report
/// says which one it was measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cpu {
    pub model: Option<String>,
    /// Those of `sse4_2`, `avx`, `avx2`, `fma`, `avx512f` the processor has.
    pub flags: Vec<&'static str>,
}

pub fn cpu() -> Cpu {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|line| line.split(':').next().is_some_and(|key| key.trim() == name))
            .and_then(|line| line.split_once(':'))
            .map(|(_, value)| value.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let present: Vec<&str> = flags.split_whitespace().collect();
    Cpu {
        model: field("model name"),
        flags: ["sse4_2", "avx", "avx2", "fma", "avx512f"]
            .into_iter()
            .filter(|flag| present.contains(flag))
            .collect(),
    }
}

/// One core's measured SGEMM rate, in GFLOP/s: a 512x512x512 product through the GEMM crate
/// the fused path uses (median of 5), the ceiling its arithmetic can approach.
pub fn sgemm_peak_gflops() -> f64 {
    const N: usize = 512;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0; N * N];
    let time = median_time(5, || {
        crate::cpu::gemm([N, N, N], (&a, N, 1), (&b, N, 1), &mut c);
    });
    2.0 * (N * N * N) as f64 / time.as_secs_f64() / 1e9
}

/// The most memory this process has held at once (Linux's VmHWM), in megabytes.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
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

/// The median of `repeat` runs of `work`.
pub fn median(repeat: u32, mut work: impl FnMut() -> EpochTiming) -> EpochTiming {
    median_timing((0..repeat.max(1)).map(|_| work()).collect())
}

/// The median run of workloads of the same size (its time the mean of the middle two, for an
/// even count).
fn median_timing(timings: Vec<EpochTiming>) -> EpochTiming {
    EpochTiming {
        images: timings[0].images,
        elapsed: Duration::from_secs_f64(median_of(
            timings.iter().map(|t| t.elapsed.as_secs_f64()).collect(),
        )),
    }
}

/// The median of `values`, the mean of the middle two for an even count: with two runs the
/// upper one would flatter whichever side it came from.
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[half - 1] + values[half]) / 2.0
    } else {
        values[half]
    }
}

/// The median of `runs` timings of `work`, after one untimed run.
pub fn median_time(runs: usize, mut work: impl FnMut()) -> Duration {
    work();
    timed_median(runs, work)
}

/// The median of `runs` (at least one) timings of `work`.
fn timed_median(runs: usize, mut work: impl FnMut()) -> Duration {
    let seconds = (0..runs.max(1))
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .collect();
    Duration::from_secs_f64(median_of(seconds))
}
