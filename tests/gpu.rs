//! The run-time device choice, and the GPU path computing what the CPU computes.
//!
//! The wgpu checks run for real without a GPU: Mesa's lavapipe is a Vulkan driver that runs on
//! the CPU (`.ci/run` installs `mesa-vulkan-drivers`), and the README's test command builds
//! every feature. The CUDA backend is compiled there but finds no GPU, which is itself checked:
//! asking for it is a clear error, and `auto` falls back to the CPU.

mod common;

use common::{assert_clean_failure, digits, stderr, stdout};
use digits::data::{Dataset, Split};
use digits::device::{DeviceChoice, DeviceError, SelectedDevice};
use digits::model::{CnnConfig, ModelConfig, ModelKind};
use digits::train::{EngineChoice, Quiet, TrainConfig, Trainer};

#[test]
fn the_cpu_is_always_there() {
    let cpu = DeviceChoice::Cpu.select().unwrap();
    assert_eq!(cpu.name, "cpu");
    assert_eq!(cpu.device, burn::tensor::Device::flex());
}

#[test]
fn auto_names_a_device_and_gives_its_reason() {
    let chosen = DeviceChoice::Auto.select().unwrap();
    assert!(["cpu", "cuda", "wgpu"].contains(&chosen.name));
    if chosen.name == "cpu" && cfg!(any(feature = "cuda", feature = "wgpu")) {
        // Each GPU backend that was built in says why it was passed over.
        for backend in ["CUDA", "wgpu"] {
            assert!(
                chosen.reason.contains(backend),
                "no word on {backend} in '{}'",
                chosen.reason
            );
        }
    } else if chosen.name == "cpu" {
        assert_eq!(chosen.reason, "no GPU backend in this build");
    }
}

#[test]
fn cuda_is_a_device_or_a_clear_error() {
    let built_in = cfg!(feature = "cuda");
    match DeviceChoice::Cuda.select() {
        Ok(selected) => assert_eq!(selected.name, "cuda"),
        Err(DeviceError::NotBuilt { feature, .. }) => {
            assert!(!built_in);
            assert_eq!(feature, "cuda");
        }
        Err(DeviceError::Unavailable { backend, why }) => {
            assert!(built_in);
            assert_eq!(backend, "CUDA");
            assert!(!why.is_empty());
        }
    }
}

#[test]
fn asking_the_cli_for_a_missing_backend_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &["eval", "--device", "cuda", "--model", "no-such-run"],
    );
    assert!(!output.status.success());
    if stdout(&output).contains("Using cuda device") {
        // A machine with an NVIDIA GPU and a `cuda` build: it failed on the missing run.
        return;
    }
    assert_clean_failure(&output, "CUDA");
    let typo = digits(dir.path(), &["eval", "--device", "gpu"]);
    assert_clean_failure(&typo, "expected auto, cpu, cuda or wgpu");
}

/// The wgpu device, or `None` (and a note) where this build or machine has none. In CI, where
/// lavapipe is installed and every feature built, its absence is a failure.
fn wgpu() -> Option<SelectedDevice> {
    match DeviceChoice::Wgpu.select() {
        Ok(selected) => Some(selected),
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must build --all-features and install mesa-vulkan-drivers: {err}"
            );
            eprintln!("skipping: {err}");
            None
        }
    }
}

/// Per-batch losses of `batches` steps of `model` from seed 0 with Adam at `lr`, on Burn's
/// autodiff (the path a GPU takes) on `device`, and the trained model's average test loss.
fn train_on(
    model: &ModelConfig,
    batches: usize,
    lr: f64,
    device: &burn::tensor::Device,
) -> (Vec<f32>, f64) {
    let config = TrainConfig {
        engine: EngineChoice::Burn,
        lr,
        ..TrainConfig::default()
    };
    let train_set = Dataset::lite(Split::Train).truncated(batches * config.batch_size);
    let test_set = Dataset::lite(Split::Test).truncated(512);
    let mut trainer =
        Trainer::new(model.clone(), model.initial_weights(0), config, device).unwrap();
    let losses = trainer.train_epoch(&train_set, &mut Quiet).unwrap();
    let evaluation = digits::eval::evaluate(&trainer.model(), &test_set, 64);
    (losses, evaluation.avg_loss)
}

/// Trains the same model from the same weights on the CPU and on wgpu, and compares every
/// step's loss and the trained models' test losses, relative to the CPU's.
fn assert_same_training(model: &ModelConfig, batches: usize, lr: f64, tolerance: f32) {
    let Some(gpu) = wgpu() else { return };
    let cpu = burn::tensor::Device::flex();
    let (cpu_losses, cpu_test_loss) = train_on(model, batches, lr, &cpu);
    let (gpu_losses, gpu_test_loss) = train_on(model, batches, lr, &gpu.device);
    assert_eq!(gpu_losses.len(), batches);
    for (step, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(
            (g - c).abs() <= tolerance * c.abs(),
            "step {step}: loss {g} on {} vs {c} on the CPU",
            gpu.reason
        );
    }
    assert!(
        (gpu_test_loss - cpu_test_loss).abs() <= f64::from(tolerance) * cpu_test_loss,
        "test loss {gpu_test_loss} on wgpu vs {cpu_test_loss} on the CPU"
    );
}

#[test]
fn the_tutorial_mlp_trains_on_wgpu_as_on_the_cpu() {
    // Adam at lr 1e-3 rather than the tutorial's 1e-2: at 1e-2 Adam amplifies float32
    // differences in summation order until, after about 130 steps, the losses drift apart by
    // about 1% on any two backends. At 1e-3 the 300 steps measured here agree to 2.4e-7.
    assert_same_training(&ModelKind::Mlp.config(), 300, 1e-3, 1e-5);
}

#[test]
fn the_cnn_trains_on_wgpu_as_on_the_cpu() {
    // Convolutions, batch norm (batch statistics while training, running ones in the test)
    // and pooling, forward and backward. Without dropout: each device draws its own masks.
    // Measured: steps within 1.1e-3 of the CPU's, the test loss within 0.3%.
    let cnn = ModelConfig::Cnn(CnnConfig {
        dropout: 0.0,
        ..CnnConfig::small()
    });
    assert_same_training(&cnn, 16, 1e-3, 5e-3);
}

#[test]
fn the_cli_trains_on_wgpu_when_asked() {
    if wgpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &[
            "train",
            "--device",
            "wgpu",
            "--dataset",
            "mnist-lite",
            "--epochs",
            "1",
            "--limit",
            "640",
            "--out",
            "run",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("Using wgpu device ("), "{printed}");
    assert!(printed.contains("Accuracy:"), "{printed}");
    let eval = digits(dir.path(), &["eval", "--device", "wgpu", "--model", "run"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
}
