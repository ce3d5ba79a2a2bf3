//! The `digits` command end to end, bad input included: every failure is a clear message and
//! a non-zero exit, never a panic.

mod common;

use std::path::Path;

use common::{assert_clean_failure, digits, stderr, stdout};

#[test]
fn train_prints_the_tutorial_lines_saves_a_run_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &[
            "train",
            "--dataset",
            "mnist-lite",
            "--epochs",
            "1",
            "--limit",
            "3200",
            "--out",
            "run",
        ],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    for line in [
        "Using cpu device",
        "Shape of X [N, C, H, W]: [32, 1, 28, 28]",
        "Shape of y: [32] int64",
        "Epoch 1\n-------------------------------",
        "loss: ",
        "[   32/ 3200]",
        "Test Error: \n Accuracy: ",
        "Done! Saved to run",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // 3200 images are 100 batches: losses are printed at batches 0 and 100 (the tutorial's
    // `batch % 100 == 0`), so exactly once here.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("loss: ")).count(),
        1,
        "{out}"
    );
    for file in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "metrics.jsonl",
    ] {
        assert!(dir.path().join("run").join(file).is_file(), "{file}");
    }

    let resumed = digits(
        dir.path(),
        &[
            "train", "--resume", "run", "--epochs", "1", "--limit", "3200",
        ],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stdout(&resumed).contains("Resuming after epoch 1\nEpoch 2"),
        "{}",
        stdout(&resumed)
    );
    let config = std::fs::read_to_string(dir.path().join("run/config.json")).unwrap();
    assert!(config.contains("\"epochs_done\": 2"), "{config}");

    let eval = digits(dir.path(), &["eval", "--model", "run"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let text = stdout(&eval);
    assert!(text.contains("after 2 epochs on mnist-lite"), "{text}");
    assert!(
        text.contains("Accuracy: ") && text.contains("precision"),
        "{text}"
    );
    assert!(text.contains("confusion matrix (rows: true class, columns: predicted class)"));
    let matrix_rows = text
        .lines()
        .skip_while(|l| !l.starts_with("confusion"))
        .skip(2)
        .take(10);
    let total: usize = matrix_rows
        .flat_map(|row| row.split_whitespace().skip(1))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(total, 10_000, "every test image is counted once:\n{text}");
}

#[test]
fn train_help_gives_the_tutorial_presets_defaults_and_says_a_preset_changes_them() {
    let help = stdout(&digits(Path::new("."), &["train", "--help"]));
    let tutorial = digits::train::TrainConfig::default();
    for default in [
        format!("[default: {}, or the preset's]", tutorial.epochs),
        format!("[default: {}, or the preset's]", tutorial.batch_size),
        format!("[default: {}, or the preset's]", tutorial.lr),
    ] {
        assert!(help.contains(&default), "{default} in:\n{help}");
    }
    let (_, best) = digits::train::Preset::Best.recipe(digits::data::DatasetName::Mnist);
    let described = format!(
        "AdamW with weight decay {}, lr {}, one-cycle, batch {}, {} epochs",
        best.optimizer.weight_decay(),
        best.lr,
        best.batch_size,
        best.epochs
    );
    assert!(help.contains(&described), "{described} in:\n{help}");
}

#[test]
fn a_new_run_never_overwrites_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    for expected in ["runs/tutorial", "runs/tutorial-2"] {
        let output = digits(dir.path(), &common::TINY_TRAINING);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            stdout(&output).contains(&format!("Saved to {expected}")),
            "{}",
            stdout(&output)
        );
    }
    let explicit = digits(
        dir.path(),
        &[&common::TINY_TRAINING[..], &["--out", "runs/tutorial"]].concat(),
    );
    assert_clean_failure(&explicit, "already holds a run");
}

#[test]
fn without_full_mnist_training_falls_back_to_the_built_in_digits_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &[
            "train",
            "--offline",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--out",
            "r",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("using mnist-lite instead"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains("Dataset: mnist-lite"));
}

#[test]
fn a_dataset_named_on_the_command_line_is_never_swapped_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let offline = digits(
        dir.path(),
        &[
            "train",
            "--dataset",
            "mnist",
            "--offline",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--out",
            "r",
        ],
    );
    assert_clean_failure(&offline, "mnist is not in ./data/mnist");
    assert!(
        stderr(&offline).contains("digits data fetch --dataset mnist"),
        "{}",
        stderr(&offline)
    );
    assert!(!stderr(&offline).contains("using mnist-lite"));
    assert!(!dir.path().join("r").exists());

    // Nothing listens on port 9 of this machine: every download fails at once.
    let show = digits(
        dir.path(),
        &[
            "show",
            "--dataset",
            "mnist",
            "--mirror",
            "http://127.0.0.1:9/",
        ],
    );
    assert_clean_failure(&show, "could not download");
    assert!(stderr(&show).contains("use --dataset mnist-lite, which is built in"));
}

#[test]
fn eval_needs_only_the_test_files_and_data_info_never_downloads() {
    let dir = tempfile::tempdir().unwrap();
    common::train_tiny_run(dir.path(), &[]);
    let test_only = dir.path().join("test-only");
    std::fs::create_dir(&test_only).unwrap();
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        let asset = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist-lite");
        std::fs::copy(asset.join(name), test_only.join(name)).unwrap();
    }
    let eval = digits(
        dir.path(),
        &[
            "eval",
            "--model",
            "run",
            "--dataset",
            "mnist",
            "--data-dir",
            "test-only",
            "--offline",
        ],
    );
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert!(
        stdout(&eval).contains("Test set: mnist (10000 images)"),
        "{}",
        stdout(&eval)
    );
    assert!(!stderr(&eval).contains("warning"), "{}", stderr(&eval));

    // data info reports what is there; were it to download, the mirror would be tried.
    for (args, needle) in [
        (
            &["data", "info", "--data-dir", "test-only"][..],
            "mnist is not in test-only (missing train-images-idx3-ubyte.gz, \
             train-labels-idx1-ubyte.gz)",
        ),
        (
            &["data", "info", "--dataset", "mnist"],
            "mnist is not in ./data/mnist (missing train-images-idx3-ubyte.gz",
        ),
    ] {
        let info = digits(
            dir.path(),
            &[args, &["--mirror", "http://127.0.0.1:9/"]].concat(),
        );
        assert_clean_failure(&info, needle);
        assert!(!stderr(&info).contains("could not download"));
        assert!(!stderr(&info).contains("mnist-lite"));
    }
}

#[test]
fn a_run_that_diverges_in_its_first_epoch_leaves_no_folder_behind() {
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &[
            &common::TINY_TRAINING[..],
            &["--lr", "1e9", "--out", "runs/big"],
        ]
        .concat(),
    );
    assert_clean_failure(&output, "training diverged");
    assert!(
        stderr(&output).contains("nothing was saved"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("runs/big").exists());
}

#[test]
fn show_writes_the_grid_and_previews_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = digits(dir.path(), &["show", "--dataset", "mnist-lite"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("#9991 "),
        "the last nine of a 10,000-image set: {text}"
    );
    assert!(text.contains("Saved 9 samples to samples.png"));
    let image = image::open(dir.path().join("samples.png")).unwrap();
    assert_eq!((image.width(), image.height()), (552, 636));

    let past_end = digits(
        dir.path(),
        &["show", "--dataset", "mnist-lite", "--start", "20000"],
    );
    assert_clean_failure(
        &past_end,
        "--start 20000 is past the end of the mnist-lite train split (10000 images)",
    );
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            &["train", "--epochs", "0"][..],
            "'--epochs <EPOCHS>': must be at least 1",
        ),
        (
            &["train", "--epochs", "-1"],
            "'--epochs <EPOCHS>': must be at least 1",
        ),
        (
            &["train", "--epochs", "two"],
            "'--epochs <EPOCHS>': expected a whole number, at least 1",
        ),
        (
            &["train", "--lr", "-0.01"],
            "--lr must be a positive number",
        ),
        (&["train", "--batch-size", "-1"], "-1 is not in 1..=65536"),
        (
            &["train", "--optimizer", "sgd", "--momentum", "-0.5"],
            "--momentum must be in [0, 1)",
        ),
        (
            &["train", "--optimizer", "adam", "--momentum", "0.9"],
            "--momentum is a setting of --optimizer sgd; adam has none",
        ),
        (
            &["train", "--preset", "best", "--momentum", "0.9"],
            "--momentum is a setting of --optimizer sgd; adamw has none",
        ),
        (
            &["train", "--preset", "best", "--hidden", "64"],
            "--hidden sets the widths of an MLP",
        ),
        (
            &["train", "--weight-decay", "-1"],
            "--weight-decay must be zero or a positive number",
        ),
        (
            &["show", "--start", "-5"],
            "'--start <START>': must be at least 0",
        ),
        (
            &["train", "--optimizer", "adagrad"],
            "unknown optimizer 'adagrad'",
        ),
        (&["train", "--model", "resnet"], "unknown model 'resnet'"),
        (
            &["train", "--preset", "fastest"],
            "unknown preset 'fastest'",
        ),
        (
            &["train", "--schedule", "step:0"],
            "unknown schedule 'step:0'",
        ),
        (
            &["train", "--patience", "2"],
            "--patience needs --validation N",
        ),
        (
            &["train", "--model", "cnn", "--hidden", "64"],
            "--hidden sets the widths of an MLP",
        ),
        (
            &["train", "--label-smoothing", "1.5"],
            "--label-smoothing must be in [0, 1)",
        ),
        (
            &["train", "--optimizer", "sgd", "--momentum", "1"],
            "--momentum must be in [0, 1)",
        ),
        (&["train", "--augment", "wobbly"], "invalid value 'wobbly'"),
        (
            &["train", "--activation", "swish"],
            "unknown activation 'swish'",
        ),
        (&["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (
            &["train", "--dataset", "mnist-lite", "--lr=-1"],
            "--lr must be a positive number",
        ),
        (&["train", "--hidden", "128,0"], "0 is not in 1..=65536"),
        (&["train", "--device", "tpu"], "unknown device 'tpu'"),
        (&["train", "--batch-size", "many"], "invalid value 'many'"),
        (
            &["show", "--split", "validation"],
            "unknown split 'validation'",
        ),
        (&["eval"], "--model <RUN>"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let output = digits(dir.path(), args);
        assert_clean_failure(&output, needle);
    }
}

#[test]
fn missing_and_corrupt_data_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = digits(
        dir.path(),
        &["train", "--dataset", "fashion-mnist", "--offline"],
    );
    assert_clean_failure(&missing, "fashion-mnist is not in ./data/fashion-mnist");
    assert!(stderr(&missing).contains("digits data fetch --dataset fashion-mnist"));

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(
            corrupt.join(name),
            b"\x00\x00\x08\x03 not really an idx file",
        )
        .unwrap();
    }
    let output = digits(dir.path(), &["train", "--data-dir", "corrupt", "--offline"]);
    assert_clean_failure(
        &output,
        "corrupt/train-images-idx3-ubyte: the header claims 544108404 items",
    );

    let wrong_magic = digits(
        dir.path(),
        &["show", "--data-dir", "corrupt", "--split", "test"],
    );
    assert_clean_failure(&wrong_magic, "corrupt/t10k-images-idx3-ubyte");
}

#[test]
fn unwritable_outputs_and_non_runs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    let train = digits(
        dir.path(),
        &["train", "--dataset", "mnist-lite", "--out", "a-file/run"],
    );
    assert_clean_failure(&train, "cannot write a-file/run");
    let show = digits(
        dir.path(),
        &[
            "show",
            "--dataset",
            "mnist-lite",
            "--out",
            "a-file/samples.png",
        ],
    );
    assert_clean_failure(&show, "cannot write a-file/samples.png");
    let eval = digits(dir.path(), &["eval", "--model", "."]);
    assert_clean_failure(&eval, "is not a run folder");
    let resume = digits(dir.path(), &["train", "--resume", "nowhere"]);
    assert_clean_failure(&resume, "nowhere is not a run folder");

    std::fs::create_dir(dir.path().join("broken")).unwrap();
    std::fs::write(
        dir.path().join("broken/config.json"),
        b"{\"not\": \"a config\"}",
    )
    .unwrap();
    assert_clean_failure(
        &digits(dir.path(), &["eval", "--model", "broken"]),
        "not a valid run config",
    );
}

#[test]
fn hand_edited_augmentation_that_would_ruin_images_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::train_tiny_run(dir.path(), &["--augment", "digits"]);
    assert!(config.contains("\"sigma\": 4.0"), "{config}");
    std::fs::write(
        dir.path().join("run/config.json"),
        config.replace("\"sigma\": 4.0", "\"sigma\": 0.0"),
    )
    .unwrap();
    assert_clean_failure(
        &digits(dir.path(), &["train", "--resume", "run", "--epochs", "1"]),
        "augment.elastic.sigma is 0, but it must be between 0.5 and 28",
    );
}

#[test]
fn hand_edited_settings_out_of_range_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::train_tiny_run(dir.path(), &["--optimizer", "sgd"]);
    for (from, to, refusal) in [
        (
            "\"lr\": 0.01",
            "\"lr\": -0.01",
            "lr must be a positive number",
        ),
        (
            "\"weight_decay\": 0.0",
            "\"weight_decay\": 0.0, \"momentum\": 1.5",
            "momentum must be in [0, 1)",
        ),
    ] {
        assert!(config.contains(from), "{config}");
        std::fs::write(dir.path().join("run/config.json"), config.replace(from, to)).unwrap();
        for command in [
            &["train", "--resume", "run", "--epochs", "1"][..],
            &["eval", "--model", "run", "--dataset", "mnist-lite"],
        ] {
            let output = digits(dir.path(), command);
            assert_clean_failure(&output, "config.json");
            assert_clean_failure(&output, refusal);
        }
    }
    // A momentum beside Adam never did anything; runs saved with one (the command line
    // once took `--optimizer adam --momentum 0.9`) still open.
    let adam = config.replace(
        "\"optimizer\": \"sgd\"",
        "\"optimizer\": \"adam\", \"momentum\": 0.9",
    );
    std::fs::write(dir.path().join("run/config.json"), adam).unwrap();
    let output = digits(
        dir.path(),
        &["eval", "--model", "run", "--dataset", "mnist-lite"],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
}

#[test]
fn a_weights_file_that_does_not_fit_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::train_tiny_run(dir.path(), &[]);
    std::fs::write(
        dir.path().join("run/config.json"),
        config.replace("400", "300"),
    )
    .unwrap();
    assert_clean_failure(
        &digits(dir.path(), &["eval", "--model", "run"]),
        "tensor 'hidden2.weight' has shape [400, 128], but the architecture needs [300, 128]",
    );
    std::fs::write(dir.path().join("run/model.safetensors"), b"garbage").unwrap();
    assert_clean_failure(
        &digits(dir.path(), &["eval", "--model", "run"]),
        "is not a safetensors file",
    );
}

#[test]
fn fashion_mnist_is_read_from_the_folder_debian_installs() {
    let Some(fashion) = common::fashion_mnist_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = digits(
        dir.path(),
        &[
            "data",
            "info",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            fashion.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("train: 60000 images\n  test: 10000 images"),
        "{}",
        stdout(&output)
    );
    let show = digits(
        dir.path(),
        &[
            "show",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            fashion.to_str().unwrap(),
        ],
    );
    assert!(stdout(&show).starts_with("#59000 "), "{}", stdout(&show));
}

#[test]
fn resuming_with_another_optimizer_starts_its_state_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--dataset", "mnist-lite", "--epochs", "1", "--limit", "320"];
    let first = digits(
        dir.path(),
        &[&["train", "--out", "run"][..], &quick].concat(),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let switched = digits(
        dir.path(),
        &[
            "train",
            "--resume",
            "run",
            "--optimizer",
            "sgd",
            "--epochs",
            "1",
            "--limit",
            "320",
        ],
    );
    assert!(switched.status.success(), "{}", stderr(&switched));
    assert!(
        stdout(&switched).contains("Sgd lr 0.01"),
        "{}",
        stdout(&switched)
    );
    let config = std::fs::read_to_string(dir.path().join("run/config.json")).unwrap();
    assert!(
        config.contains("\"optimizer\": \"sgd\"") && config.contains("\"epochs_done\": 2"),
        "{config}"
    );
}

#[test]
fn the_best_preset_trains_a_cnn_that_eval_and_predict_load_alone_and_as_an_ensemble() {
    let dir = tempfile::tempdir().unwrap();
    for (run, seed) in [("a", "1"), ("b", "2")] {
        let output = digits(
            dir.path(),
            &[
                "train",
                "--dataset",
                "mnist-lite",
                "--preset",
                "best",
                "--epochs",
                "1",
                "--limit",
                "640",
                "--validation",
                "128",
                "--seed",
                seed,
                "--out",
                run,
            ],
        );
        let out = stdout(&output);
        assert!(output.status.success(), "{}", stderr(&output));
        for line in [
            "Model: cnn conv32k3p-conv64k3p bn fc128 relu dropout0.25 (421738 parameters); AdamW",
            "Shape of X [N, C, H, W]: [64, 1, 28, 28]",
            "512 training images, 10000 test images, 128 held out for validation",
            "Validation: \n Accuracy: ",
            "Best epoch by validation: 1",
        ] {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
        let config = std::fs::read_to_string(dir.path().join(run).join("config.json")).unwrap();
        for field in [
            "\"arch\": \"cnn\"",
            "\"one-cycle\"",
            "\"normalization\"",
            "\"elastic\"",
        ] {
            assert!(config.contains(field), "{field} in {config}");
        }
        assert!(dir.path().join(run).join("best.safetensors").is_file());
    }

    let single = digits(
        dir.path(),
        &["eval", "--model", "a", "--dataset", "mnist-lite"],
    );
    assert!(single.status.success(), "{}", stderr(&single));
    let ensemble = digits(
        dir.path(),
        &[
            "eval",
            "--model",
            "a",
            "--model",
            "b",
            "--dataset",
            "mnist-lite",
        ],
    );
    let out = stdout(&ensemble);
    assert!(ensemble.status.success(), "{}", stderr(&ensemble));
    assert!(out.contains("Ensemble of 2 models"), "{out}");
    assert!(out.contains("Accuracy: "), "{out}");

    let digit = dir.path().join("seven.png");
    let mut image = image::GrayImage::from_pixel(28, 28, image::Luma([0]));
    for i in 0..20 {
        image.put_pixel(6 + i, 6, image::Luma([255]));
        image.put_pixel(24 - i / 2, 6 + i, image::Luma([255]));
    }
    image.save(&digit).unwrap();
    let predicted = digits(
        dir.path(),
        &[
            "predict",
            "--model",
            "a",
            "--model",
            "b",
            "--format",
            "json",
            "seven.png",
        ],
    );
    assert!(predicted.status.success(), "{}", stderr(&predicted));
    let answers: serde_json::Value = serde_json::from_str(&stdout(&predicted)).unwrap();
    common::assert_probabilities(&answers[0]);
}

#[test]
fn bench_prints_every_figure_as_json_and_says_why_pytorch_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&short_bench(dir.path(), "no-such-python", "1", true)).unwrap();
    for key in [
        "tutorial_epoch_s",
        "burn_epoch_s",
        "reference_epoch_s",
        "tutorial_over_reference",
        "cnn_train_images_per_s",
        "mlp_inference_images_per_s",
        "one_image_ms",
        "photo_2000px_ms",
        "peak_rss_mb",
        "sgemm_peak_gflops_one_core",
    ] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {report}"));
        assert!(value.is_finite() && value > 0.0, "{key}: {value}");
    }
    for workload in [
        "tutorial_training",
        "cnn_training",
        "mlp_inference",
        "cnn_inference",
    ] {
        let rate = report["gflops"][workload].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{workload}: {rate}");
    }
    assert!(report["cpu"]["flags"].is_array(), "{report}");
    assert_eq!(
        report["epoch_s_scaled_from_images"], 640,
        "the epoch figures say they are scaled up from --images"
    );
    assert!(report["pytorch_epoch_s"].is_null());
    assert!(
        report["pytorch_note"]
            .as_str()
            .unwrap()
            .contains("no-such-python cannot import torch")
    );
}

/// `digits bench` on a few images with `--python python`, its stdout once it succeeded.
fn short_bench(dir: &std::path::Path, python: &str, repeat: &str, json: bool) -> String {
    let mut args = vec![
        "bench",
        "--images",
        "640",
        "--cnn-images",
        "64",
        "--repeat",
        repeat,
        "--python",
        python,
    ];
    if json {
        args.push("--json");
    }
    let output = digits(dir, &args);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// A stand-in for a Python with PyTorch: it speaks `pytorch_baseline.py --worker`'s protocol
/// with fixed figures, and runs the shell command `misbehave` when asked for `fail_on`.
#[cfg(unix)]
fn fake_python(dir: &std::path::Path, fail_on: &str, misbehave: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-python");
    let script = format!(
        r#"#!/bin/sh
[ "$1" = "-c" ] && exit 0
echo '{{"torch_version": "9.9-fake", "default_threads": 2}}'
while read workload; do
  case "$workload" in
    {fail_on}) {misbehave};;
    tutorial_epoch_s) value=2.0;;
    tutorial_epoch_s_1_thread) value=3.0;;
    one_image_ms) value=0.5;;
    *) value=1000;;
  esac
  echo "{{\"workload\": \"$workload\", \"value\": $value}}"
done
"#
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[cfg(unix)]
#[test]
fn bench_alternates_its_runs_with_pytorchs_and_reports_each_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |python: &str, repeat: &str| {
        serde_json::from_str::<serde_json::Value>(&short_bench(dir.path(), python, repeat, true))
            .unwrap()
    };
    let report = bench(&fake_python(dir.path(), "none", ""), "3");
    let figure = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(report["pytorch"]["torch_version"], "9.9-fake");
    assert_eq!(figure("pytorch_epoch_s"), 2.0);
    assert_eq!(figure("pytorch_one_image_ms"), 0.5);
    // PyTorch's figure is the same every run, so the median of the ratios is the ratio of
    // the medians; the tutorial's is taken against the faster thread setting.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
    assert!(close(
        figure("speedup_over_pytorch"),
        2.0 / figure("tutorial_epoch_s")
    ));
    for (ours, ratio) in [
        ("cnn_train_images_per_s", "cnn_train_over_pytorch"),
        ("mlp_inference_images_per_s", "mlp_inference_over_pytorch"),
        ("cnn_inference_images_per_s", "cnn_inference_over_pytorch"),
    ] {
        assert!(
            close(figure(ratio), figure(ours) / 1000.0),
            "{ratio}: {report}"
        );
    }
    assert!(report["pytorch_note"].is_null(), "{report}");

    let pairs = |workload: &str| report["pair_ratios"][workload].as_array().unwrap().len();
    assert_eq!(pairs("cnn_training"), 3);
    // Batch inference's runs are short: five times the pairs.
    assert_eq!(pairs("mlp_inference"), 15);

    // Dying at the cnn's turn keeps the tutorial's finished pairs, and nothing after them.
    let die = r#"echo "RuntimeError: fake out of memory" >&2; exit 1"#;
    let report = bench(&fake_python(dir.path(), "cnn_train_images_per_s", die), "1");
    assert_eq!(report["pytorch_epoch_s"], 2.0, "{report}");
    assert!(report["speedup_over_pytorch"].as_f64().unwrap() > 0.0);
    for key in [
        "pytorch",
        "cnn_train_over_pytorch",
        "pytorch_cnn_inference_images_per_s",
    ] {
        assert!(report[key].is_null(), "{key}: {report}");
    }
    assert!(
        report["cnn_train_images_per_s"].as_f64().unwrap() > 0.0,
        "digits' own figures stay"
    );
    let note = report["pytorch_note"].as_str().unwrap();
    assert!(note.contains("fake out of memory"), "{note}");

    // A figure of zero is refused, and the text says the worker stopped on the way.
    let python = fake_python(dir.path(), "mlp_inference_images_per_s", "value=0");
    let text = short_bench(dir.path(), &python, "1", false);
    assert!(text.contains("cnn training (batch 64, AdamW, augmentation not included)"));
    assert!(text.contains("(PyTorch 1000 images/s: digits"), "{text}");
    assert!(
        text.contains(
            "PyTorch baseline: stopped (the PyTorch baseline printed something unexpected: \
             0 for mlp_inference_images_per_s)"
        ),
        "{text}"
    );
}

#[test]
fn ctrl_c_during_training_saves_the_run_and_resume_finishes_it() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    // Far more epochs than can pass before the signal lands, however loaded the machine.
    let mut child = Command::new(env!("CARGO_BIN_EXE_digits"))
        .args([
            "train",
            "--dataset",
            "mnist-lite",
            "--epochs",
            "500",
            "--out",
            "run",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until epoch 2 has begun, then press Ctrl-C.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("loss: ") && printed.contains("Epoch 2") {
            break;
        }
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    printed.extend(lines.map(|l| l.unwrap() + "\n"));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{printed}");
    assert!(
        printed.contains("Continue with: digits train --resume run"),
        "{printed}"
    );
    let read_config = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/config.json")).unwrap())
            .unwrap()
    };
    let config = read_config();
    let epochs_done = config["epochs_done"].as_u64().unwrap();
    let batches_done = config["batches_done"].as_u64().unwrap();
    assert!(epochs_done >= 1 && batches_done < 313, "{config}");
    assert!(
        printed.contains(&format!(
            "Interrupted during epoch {} after {batches_done} batches",
            epochs_done + 1
        )),
        "{printed}"
    );

    // One more epoch: the interrupted one, finished from where it stopped.
    let resumed = digits(dir.path(), &["train", "--resume", "run", "--epochs", "1"]);
    let out = stdout(&resumed);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let expected = match batches_done {
        0 => format!("Resuming after epoch {epochs_done}"),
        n => format!(
            "Resuming epoch {} after its first {n} batches",
            epochs_done + 1
        ),
    };
    assert!(out.contains(&expected), "{out}");
    let config = read_config();
    assert_eq!(config["epochs_done"].as_u64(), Some(epochs_done + 1));
    assert_eq!(config["batches_done"].as_u64(), Some(0));
}
