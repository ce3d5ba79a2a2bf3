//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses its own subset

pub mod server;
pub mod synth;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `digits` binary in `dir` with `args`.
pub fn digits(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_digits"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the digits binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a command failed cleanly: a non-zero exit, an `error:` line containing `needle`,
/// and no panic.
pub fn assert_clean_failure(output: &Output, needle: &str) {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "expected failure, got success:\n{err}"
    );
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert!(err.contains(needle), "expected '{needle}' in:\n{err}");
}

/// `digits train` for one epoch on 64 built-in digits: a run in under a second.
pub const TINY_TRAINING: [&str; 7] = [
    "train",
    "--dataset",
    "mnist-lite",
    "--epochs",
    "1",
    "--limit",
    "64",
];

/// Trains [`TINY_TRAINING`] into `dir/run` with the command, plus `extra` flags, and returns
/// its config.json: the start of the tests that hand-edit a run.
pub fn train_tiny_run(dir: &Path, extra: &[&str]) -> String {
    let mut args = TINY_TRAINING.to_vec();
    args.extend_from_slice(&["--out", "run"]);
    args.extend_from_slice(extra);
    let output = digits(dir, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::read_to_string(dir.join("run/config.json")).unwrap()
}

/// Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it (`.ci/run` installs it).
/// `None` only outside CI, where a test may then skip; in CI its absence is a failure.
pub fn fashion_mnist_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from("/usr/share/datasets/fashion-mnist");
    if dir.join("train-images-idx3-ubyte.gz").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install dataset-fashion-mnist (see .ci/run)"
    );
    eprintln!("skipping: apt-get install -y dataset-fashion-mnist to run this test");
    None
}

/// Trains the tutorial's recipe for `epochs` epochs as `digits train` does, saving a run
/// folder at `dir` after each; returns the experiment and the recorded epochs.
pub fn train_saved_run(
    dir: &Path,
    train_set: &digits::data::Dataset,
    test_set: &digits::data::Dataset,
    epochs: usize,
) -> (
    digits::experiment::Experiment,
    Vec<digits::train::EpochMetrics>,
) {
    use digits::experiment::{Adjustments, Plan};

    let adjustments = Adjustments {
        epochs: Some(epochs),
        ..Adjustments::default()
    };
    let mut experiment = Plan::start(adjustments, Some(dir.to_path_buf()))
        .unwrap()
        .prepare(
            train_set.name,
            train_set.clone(),
            test_set.clone(),
            &burn::tensor::Device::flex(),
        )
        .unwrap();
    let history = experiment.fit(&mut digits::train::Quiet).unwrap();
    (experiment, history)
}

/// Asserts a JSON answer's `probabilities` are ten numbers that sum to one.
pub fn assert_probabilities(entry: &serde_json::Value) {
    let probabilities: Vec<f64> = entry["probabilities"]
        .as_array()
        .expect("an array of probabilities")
        .iter()
        .map(|p| p.as_f64().expect("a number"))
        .collect();
    assert_eq!(probabilities.len(), 10);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-4);
}

/// A trainer for `model` from its initial weights drawn with `seed`, on the CPU.
pub fn trainer(
    model: &digits::model::ModelConfig,
    config: digits::train::TrainConfig,
    seed: u64,
) -> digits::train::Trainer {
    digits::train::Trainer::new(
        model.clone(),
        model.initial_weights(seed),
        config,
        &burn::tensor::Device::flex(),
    )
    .unwrap()
}

/// Asserts every tensor of `a` is within `tolerance` of `b`'s, element by element.
pub fn assert_weights_close(
    a: &digits::model::Weights,
    b: &digits::model::Weights,
    tolerance: f32,
) {
    for (name, tensor) in a {
        let max_diff = tensor
            .values
            .iter()
            .zip(&b[name].values)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max_diff <= tolerance, "{name} differs by {max_diff}");
    }
}
