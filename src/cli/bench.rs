//! `digits bench`: how fast each workload runs, beside a naive plain-loop baseline and PyTorch.

use clap::Args;
use digits::bench::contest::{Bout, Contest};
use digits::bench::pytorch::{self, Baseline, Workload};
use digits::bench::{self, TUTORIAL_EPOCH_IMAGES, median};
use digits::data::{Dataset, Split};
use digits::files::encode_png;
use digits::model::{Model, ModelConfig, ModelKind};
use digits::predict::Predictor;
use digits::prepare::{self, Prepared};
use digits::train::{EngineChoice, Preset, TrainConfig};
use serde::Serialize;
use std::time::Duration;

use super::{Announce, DeviceArgs};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed runs of each workload, each beside one of PyTorch's when it runs; the median is
    /// reported. Batch inference, whose runs take milliseconds, gets five times as many.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Images per timed tutorial-epoch run (an epoch of MNIST is 60,000).
    #[arg(long, default_value_t = TUTORIAL_EPOCH_IMAGES)]
    images: usize,
    /// Images per timed CNN training run.
    #[arg(long, default_value_t = 2048)]
    cnn_images: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// The Python that runs bench/pytorch_baseline.py, if it can import torch.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the PyTorch baseline even when torch is installed.
    #[arg(long)]
    no_pytorch: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Every figure, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    device: String,
    cpu: bench::Cpu,
    /// One core's SGEMM rate through the CPU engine's GEMM crate: the ceiling for `gflops`.
    sgemm_peak_gflops_one_core: f64,
    /// Each workload's arithmetic rate in GFLOP/s, from the plan's count of a forward pass
    /// (training: three times that); the machine has `sgemm_peak_gflops_one_core` per core,
    /// times its cores. The count is the dense one, blank pixels included, which inference
    /// skips in fully connected layers: an effective rate there, PyTorch's arithmetic.
    gflops: PerWorkload<f64>,
    images_per_run: usize,
    /// Set when `--images` is not a whole MNIST epoch: every `*_epoch_s` figure is then this
    /// many images' time, scaled up to 60,000 images.
    epoch_s_scaled_from_images: Option<usize>,
    repeat: u32,
    tutorial_epoch_s: f64,
    tutorial_images_per_s: f64,
    /// The tutorial epoch on Burn's autodiff rather than digits' CPU engine.
    burn_epoch_s: f64,
    reference_epoch_s: f64,
    /// digits' tutorial epoch over the plain-loop baseline's (`bench::reference`).
    tutorial_over_reference: f64,
    /// PyTorch's tutorial epoch (its default number of threads), when it ran every pair.
    pytorch_epoch_s: Option<f64>,
    pytorch_epoch_s_1_thread: Option<f64>,
    /// How many times as fast as PyTorch digits is, at the tutorial epoch: the median over
    /// `repeat` pairs of runs, each PyTorch run (the faster of its two thread settings) timed
    /// beside a digits run ([`Contest`]).
    speedup_over_pytorch: Option<f64>,
    cnn_train_images_per_s: f64,
    /// As `speedup_over_pytorch`, for `cnn` training.
    cnn_train_over_pytorch: Option<f64>,
    pytorch_cnn_train_images_per_s: Option<f64>,
    mlp_inference_images_per_s: f64,
    cnn_inference_images_per_s: f64,
    pytorch_mlp_inference_images_per_s: Option<f64>,
    pytorch_cnn_inference_images_per_s: Option<f64>,
    /// As `speedup_over_pytorch`, for batch inference of the MLP and of the `cnn`.
    mlp_inference_over_pytorch: Option<f64>,
    cnn_inference_over_pytorch: Option<f64>,
    one_image_ms: f64,
    pytorch_one_image_ms: Option<f64>,
    photo_2000px_ms: f64,
    photo_2000px_png_ms: f64,
    peak_rss_mb: Option<f64>,
    /// Every PyTorch figure, when its worker ran every workload.
    pytorch: Option<pytorch::PytorchFigures>,
    /// Why PyTorch's figures are missing (not installed, skipped, or the worker stopped).
    pytorch_note: Option<String>,
    /// Each pair's ratio behind the `*_over_pytorch` medians, in the order run: how far apart
    /// they are says how far to trust the median. A workload whose worker stopped midway
    /// keeps the pairs it finished here, and has no median.
    pair_ratios: PerWorkload<Vec<f64>>,
}

/// One figure of each workload compared with PyTorch.
#[derive(Debug, Serialize)]
struct PerWorkload<T> {
    tutorial_training: T,
    cnn_training: T,
    mlp_inference: T,
    cnn_inference: T,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// How long PyTorch's worker may take over one answer before `digits bench` takes it for
/// hung and goes on without it: its slowest, a warm-up and a timed 60,000-image tutorial
/// epoch, takes under a minute on 2 cores.
const PYTORCH_DEADLINE: Duration = Duration::from_secs(600);

/// Images per batch of the batch-inference workloads, and timed passes per run of each: as
/// PyTorch's worker takes them (`WORKLOADS` in bench/pytorch_baseline.py).
const INFERENCE_BATCH: usize = 1000;
const MLP_INFERENCE_PASSES: usize = 5;
const CNN_INFERENCE_PASSES: usize = 1;

/// Pairs of runs per `--repeat` in the batch-inference bouts: a pair of them takes
/// milliseconds, in which a shared machine's speed can halve (ratios of single pairs of MLP
/// runs ranged 0.6-1.9x within one bench run on a 2-core Xeon), so their median is taken
/// over more pairs than a training bout's, whose runs last seconds.
const INFERENCE_PAIRS_PER_REPEAT: u32 = 5;

/// " (PyTorch N images/s: digits Rx as fast)" when PyTorch ran every pair of the workload.
fn against(bout: &Bout) -> String {
    match (&bout.theirs[..], bout.speedup()) {
        (&[theirs], Some(speedup)) => {
            format!(" (PyTorch {theirs:.0} images/s: digits {speedup:.2}x as fast)")
        }
        _ => String::new(),
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    anyhow::ensure!(args.cnn_images > 0, "--cnn-images must be at least 1");
    let selected = args.device.open(if args.json {
        Announce::Quiet
    } else {
        Announce::Stdout
    })?;
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let device = &selected.device;

    let rival = if args.no_pytorch {
        Err("skipped (--no-pytorch)".to_string())
    } else if !pytorch::available(&args.python) {
        Err(format!("{} cannot import torch", args.python))
    } else {
        say("starting bench/pytorch_baseline.py: its runs alternate with digits' ...".into());
        Baseline::start(&args.python, args.images, PYTORCH_DEADLINE)
            .map_err(|err| format!("{err:#}"))
    };
    let mut contest = Contest::new(args.repeat, rival);

    let tutorial = contest.bout(
        || bench::tutorial_epoch(args.images, 50, EngineChoice::Auto, device),
        &[Workload::TutorialEpoch, Workload::TutorialEpochOneThread],
    );
    let scaled_from =
        (tutorial.ours.images != TUTORIAL_EPOCH_IMAGES).then_some(tutorial.ours.images);
    if let Some(images) = scaled_from {
        say(format!(
            "(each epoch time below is timed on {images} images and scaled to a \
             {TUTORIAL_EPOCH_IMAGES}-image MNIST epoch)"
        ));
    }
    say(format!(
        "tutorial epoch (MLP 784-128-400-10, batch 32, Adam): {:.2} s ({:.0} images/s)",
        tutorial.ours.epoch_seconds(),
        tutorial.ours.images_per_second()
    ));
    if let (&[threads, one_thread], Some(speedup), Some(baseline)) =
        (&tutorial.theirs[..], tutorial.speedup(), contest.rival())
    {
        say(format!(
            "PyTorch {} preloaded, same workload:          {threads:.2} s ({} threads), \
             {one_thread:.2} s (1 thread): digits is {speedup:.1}x faster",
            baseline.torch_version, baseline.default_threads,
        ));
    }
    let on_burn = median(args.repeat, || {
        bench::tutorial_epoch(args.images, 50, EngineChoice::Burn, device)
    });
    say(format!(
        "the same on Burn's autodiff (--engine burn):          {:.2} s",
        on_burn.epoch_seconds()
    ));
    let reference = median(args.repeat, || bench::reference_epoch(args.images, 50));
    say(format!(
        "plain loops, no GEMM library, same workload:          {:.2} s (digits takes {:.2}x as long)",
        reference.epoch_seconds(),
        tutorial.ours.epoch_seconds() / reference.epoch_seconds()
    ));

    let (_, best) = Preset::Best.recipe(digits::data::DatasetName::MnistLite);
    let cnn_config = ModelKind::Cnn.config();
    let cnn_train = TrainConfig {
        augment: None,
        ..best
    };
    let cnn = contest.bout(
        || bench::training(&cnn_config, &cnn_train, args.cnn_images, 5, device),
        &[Workload::CnnTraining],
    );
    say(format!(
        "cnn training (batch 64, AdamW, augmentation not included): {:.0} images/s{}",
        cnn.ours.images_per_second(),
        against(&cnn)
    ));

    let mlp_batch = bench::Inference::new(
        &Model::init(&ModelKind::Mlp.config(), 0, device),
        INFERENCE_BATCH,
    );
    let cnn_batch = bench::Inference::new(&Model::init(&cnn_config, 0, device), INFERENCE_BATCH);
    let inference_pairs = args.repeat * INFERENCE_PAIRS_PER_REPEAT;
    let mlp_inference = contest.bout_of(
        inference_pairs,
        || mlp_batch.time(MLP_INFERENCE_PASSES),
        &[Workload::MlpInference],
    );
    let cnn_inference = contest.bout_of(
        inference_pairs,
        || cnn_batch.time(CNN_INFERENCE_PASSES),
        &[Workload::CnnInference],
    );
    say(format!(
        "batch inference (batch {INFERENCE_BATCH}): MLP {:.0} images/s{}, cnn {:.0} images/s{}",
        mlp_inference.ours.images_per_second(),
        against(&mlp_inference),
        cnn_inference.ours.images_per_second(),
        against(&cnn_inference),
    ));
    let pytorch_one_image_ms = contest.time_once(Workload::OneImage);
    let versions = contest
        .rival()
        .map(|baseline| (baseline.torch_version.clone(), baseline.default_threads));
    let pytorch = match (
        versions,
        &tutorial.theirs[..],
        &cnn.theirs[..],
        &mlp_inference.theirs[..],
        &cnn_inference.theirs[..],
        pytorch_one_image_ms,
    ) {
        (
            Some((torch_version, default_threads)),
            &[tutorial_epoch_s, tutorial_epoch_s_1_thread],
            &[cnn_train_images_per_s],
            &[mlp_inference_images_per_s],
            &[cnn_inference_images_per_s],
            Some(one_image_ms),
        ) => Some(pytorch::PytorchFigures {
            torch_version,
            default_threads,
            tutorial_epoch_s,
            tutorial_epoch_s_1_thread,
            cnn_train_images_per_s,
            mlp_inference_images_per_s,
            cnn_inference_images_per_s,
            one_image_ms,
        }),
        _ => None,
    };
    contest.finish();
    match contest.note() {
        // The tutorial's bout comes first: if it finished, PyTorch's figures were printed.
        Some(note) if !tutorial.theirs.is_empty() => say(format!(
            "PyTorch baseline: stopped ({note}); the PyTorch figures above come from the \
             workloads it finished"
        )),
        Some(note) => say(format!("PyTorch baseline: not run ({note})")),
        None => {}
    }

    let forward = |config: &ModelConfig| {
        config
            .plan()
            .expect("built-in architectures have plans")
            .forward_flops() as f64
    };
    let (mlp_flops, cnn_flops) = (forward(&ModelKind::Mlp.config()), forward(&cnn_config));
    let gflops = PerWorkload {
        tutorial_training: 3.0 * mlp_flops * tutorial.ours.images_per_second() / 1e9,
        cnn_training: 3.0 * cnn_flops * cnn.ours.images_per_second() / 1e9,
        mlp_inference: mlp_flops * mlp_inference.ours.images_per_second() / 1e9,
        cnn_inference: cnn_flops * cnn_inference.ours.images_per_second() / 1e9,
    };
    let peak = bench::sgemm_peak_gflops();
    say(format!(
        "arithmetic, GFLOP/s: tutorial training {:.1}, cnn training {:.1}, MLP inference {:.1}, \
         cnn inference {:.1} (one core's SGEMM peak: {peak:.1})",
        gflops.tutorial_training, gflops.cnn_training, gflops.mlp_inference, gflops.cnn_inference
    ));

    let predictor = Predictor::built_in(device);
    let digit = Prepared::from_pixels(Dataset::lite(Split::Test).image(0).to_vec());
    let one = bench::median_time(200, || {
        predictor.predict(std::slice::from_ref(&digit));
    });
    say(format!(
        "one prepared image predicted in-process: {:.3} ms",
        ms(one)
    ));
    let photo = bench::photo(2000);
    let png = encode_png(&photo);
    let prepare_predict = bench::median_time(9, || {
        let prepared = prepare::prepare(&photo).expect("the photo holds a digit");
        predictor.predict(&[prepared]);
    });
    let with_decode = bench::median_time(9, || {
        let image = prepare::decode(&png).expect("the PNG decodes");
        predictor.predict(&[prepare::prepare(&image).expect("the photo holds a digit")]);
    });
    say(format!(
        "2000x2000 photo prepared and predicted: {:.1} ms ({:.1} ms from its PNG file)",
        ms(prepare_predict),
        ms(with_decode)
    ));
    let peak_rss_mb = bench::peak_rss_mb();
    if let Some(mb) = peak_rss_mb {
        say(format!("peak memory of this benchmark process: {mb:.0} MB"));
    }

    if args.json {
        let report = Report {
            device: selected.name.to_string(),
            cpu: bench::cpu(),
            sgemm_peak_gflops_one_core: peak,
            gflops,
            images_per_run: args.images,
            epoch_s_scaled_from_images: scaled_from,
            repeat: args.repeat,
            tutorial_epoch_s: tutorial.ours.epoch_seconds(),
            tutorial_images_per_s: tutorial.ours.images_per_second(),
            burn_epoch_s: on_burn.epoch_seconds(),
            reference_epoch_s: reference.epoch_seconds(),
            tutorial_over_reference: tutorial.ours.epoch_seconds() / reference.epoch_seconds(),
            pytorch_epoch_s: tutorial.theirs.first().copied(),
            pytorch_epoch_s_1_thread: tutorial.theirs.get(1).copied(),
            speedup_over_pytorch: tutorial.speedup(),
            cnn_train_images_per_s: cnn.ours.images_per_second(),
            cnn_train_over_pytorch: cnn.speedup(),
            pytorch_cnn_train_images_per_s: cnn.theirs.first().copied(),
            mlp_inference_images_per_s: mlp_inference.ours.images_per_second(),
            cnn_inference_images_per_s: cnn_inference.ours.images_per_second(),
            mlp_inference_over_pytorch: mlp_inference.speedup(),
            cnn_inference_over_pytorch: cnn_inference.speedup(),
            pytorch_mlp_inference_images_per_s: mlp_inference.theirs.first().copied(),
            pytorch_cnn_inference_images_per_s: cnn_inference.theirs.first().copied(),
            one_image_ms: ms(one),
            pytorch_one_image_ms,
            photo_2000px_ms: ms(prepare_predict),
            photo_2000px_png_ms: ms(with_decode),
            peak_rss_mb,
            pytorch,
            pytorch_note: contest.note().map(str::to_string),
            pair_ratios: PerWorkload {
                tutorial_training: tutorial.ratios.clone(),
                cnn_training: cnn.ratios.clone(),
                mlp_inference: mlp_inference.ratios.clone(),
                cnn_inference: cnn_inference.ratios.clone(),
            },
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    }
    Ok(())
}
