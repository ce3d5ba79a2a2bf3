//! PyTorch and ONNX interop: importing the tutorial's PyTorch weights, export round trips,
//! refusals, and (where Python has torch and onnxruntime) the exported files run in them.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use digits::data::{Dataset, Split};
use digits::eval;
use digits::interop;
use digits::model::{
    Activation, CnnConfig, Model, ModelConfig, ModelKind, Normalization, Pooling, weights,
};
use digits::run::{RunConfig, RunDir};
use digits::train::{Quiet, TrainConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name)
}

/// values.json's accuracy (percent) and average loss of the PyTorch-trained tutorial model.
fn reference_figures() -> (f64, f64) {
    let values: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("values.json")).unwrap()).unwrap();
    let trained = &values["tutorial_trained"];
    (
        trained["test_accuracy_percent"].as_f64().unwrap(),
        trained["test_avg_loss_mean_of_batch_means"]
            .as_f64()
            .unwrap(),
    )
}

#[test]
fn the_pytorch_trained_tutorial_model_imports_from_safetensors_and_pt_with_its_exact_figures() {
    let (accuracy, loss) = reference_figures();
    let test = Dataset::lite(Split::Test);
    for file in [
        "tutorial_trained.safetensors",
        "tutorial_trained.pt",
        "tutorial_checkpoint.pt",
    ] {
        let config = ModelConfig::default();
        let imported = interop::import_state_dict(&fixture(file), &config).unwrap();
        let expected_ignored: Vec<String> = if file.ends_with(".safetensors") {
            vec!["eval.logits_first100".into()]
        } else {
            vec![]
        };
        assert_eq!(imported.ignored, expected_ignored, "{file}");
        let model = Model::from_weights(&config, imported.weights, &Device::flex()).unwrap();
        let evaluation = eval::evaluate(&model, &test, 32);
        assert_eq!(evaluation.correct as f64 / 100.0, accuracy, "{file}");
        assert!(
            (evaluation.avg_loss - loss).abs() / loss < 1e-5,
            "{file}: {} vs {loss}",
            evaluation.avg_loss
        );
    }
}

#[test]
fn import_makes_a_run_that_eval_reads_and_export_writes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("tutorial_trained.safetensors");
    let imported = common::digits(
        dir.path(),
        &[
            "import",
            source.to_str().unwrap(),
            "--out",
            "run",
            "--dataset",
            "mnist-lite",
        ],
    );
    assert!(imported.status.success(), "{}", common::stderr(&imported));
    assert!(
        common::stdout(&imported)
            .contains("Ignored 1 tensor(s) that are not parameters: eval.logits_first100")
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/config.json")).unwrap())
            .unwrap();
    assert!(
        config.get("train").is_none(),
        "an imported run has no training settings: {config}"
    );
    let file = std::fs::canonicalize(&source).unwrap();
    assert_eq!(config["imported"]["file"], file.display().to_string());
    let sha256 = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&source).unwrap());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(config["imported"]["sha256"], sha256);
    let date = config["imported"]["date"].as_str().unwrap();
    assert!(date.len() == 20 && date.ends_with('Z'), "{date}");

    let evaluated = common::digits(dir.path(), &["eval", "--model", "run"]);
    let out = common::stdout(&evaluated);
    assert!(
        out.contains(&format!("imported from {}\n", file.display())),
        "{out}"
    );
    assert!(!out.contains("after 0 epochs"), "{out}");
    let (accuracy, loss) = reference_figures();
    assert!(
        out.contains(&format!("Accuracy: {accuracy:.2}%, Avg loss: {loss:>8.6}")),
        "{out}"
    );

    let exported = common::digits(
        dir.path(),
        &[
            "export",
            "run",
            "--format",
            "pytorch",
            "--out",
            "tutorial.safetensors",
        ],
    );
    assert!(exported.status.success(), "{}", common::stderr(&exported));
    let original = weights::read_safetensors(&source, "").unwrap();
    let written = weights::read_safetensors(&dir.path().join("tutorial.safetensors"), "").unwrap();
    for (name, tensor) in &written {
        assert_eq!(tensor, &original[name], "{name}");
    }
    assert_eq!(written.len(), 6);

    // Trained further, it still says where it came from.
    let resumed = common::digits(
        dir.path(),
        &["train", "--resume", "run", "--epochs", "1", "--limit", "64"],
    );
    assert!(resumed.status.success(), "{}", common::stderr(&resumed));
    let evaluated = common::digits(dir.path(), &["eval", "--model", "run"]);
    assert!(
        common::stdout(&evaluated).contains(&format!(
            "imported from {}, then trained 1 epoch on mnist-lite",
            file.display()
        )),
        "{}",
        common::stdout(&evaluated)
    );

    let again = common::digits(
        dir.path(),
        &["import", source.to_str().unwrap(), "--out", "run"],
    );
    common::assert_clean_failure(&again, "already holds a run");
}

/// A briefly trained model of `kind`, with the input normalisation of the best preset, saved
/// as a run in `dir`.
fn trained_run(mut model: ModelConfig, dir: &Path) -> (RunConfig, Model) {
    let train = Dataset::lite(Split::Train).truncated(320);
    *model.normalization_mut() = Some(Normalization {
        mean: 0.13,
        std: 0.31,
    });
    let config = TrainConfig {
        epochs: 1,
        lr: 0.002,
        ..TrainConfig::default()
    };
    let mut trainer = common::trainer(&model, config, 3);
    trainer.train_epoch(&train, &mut Quiet).unwrap();
    let run = RunConfig {
        digits_version: "test".into(),
        model: trainer.model_config().clone(),
        train: Some(trainer.config().clone()),
        imported: None,
        dataset: train.name,
        epochs_done: 1,
        batches_done: 0,
    };
    RunDir::create(dir)
        .unwrap()
        .save(&run, &trainer.weights(), None, &[], false)
        .unwrap();
    (run, trainer.model())
}

#[test]
fn every_architecture_survives_export_and_import_with_identical_predictions() {
    let test = Dataset::lite(Split::Test).truncated(200);
    for kind in [
        ModelKind::Mlp,
        ModelKind::MlpLarge,
        ModelKind::Lenet5,
        ModelKind::Cnn,
        ModelKind::CnnLarge,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (run, model) = trained_run(kind.config(), &dir.path().join("run"));
        let bytes = interop::export_state_dict(model.plan(), &model.weights()).unwrap();
        let file = dir.path().join("exported.safetensors");
        std::fs::write(&file, bytes).unwrap();
        let imported = interop::import_state_dict(&file, &run.model).unwrap();
        assert!(
            imported.ignored.is_empty(),
            "{kind:?}: {:?}",
            imported.ignored
        );
        let reloaded = Model::from_weights(&run.model, imported.weights, &Device::flex()).unwrap();
        let before = eval::evaluate(&model, &test, 50);
        let after = eval::evaluate(&reloaded, &test, 50);
        assert_eq!(before.predictions, after.predictions, "{kind:?}");
        assert_eq!(before.avg_loss, after.avg_loss, "{kind:?}");
    }
}

#[test]
fn files_that_do_not_fit_are_refused_with_the_file_beside_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let trained = fixture("tutorial_trained.safetensors");
    let trained = trained.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["import", trained, "--hidden", "64,400"],
            "hidden1.weight [128, 784]  ≠ hidden1.weight [64, 784]",
        ),
        (
            vec!["import", trained, "--hidden", "128"],
            "hidden2.weight [400, 128]  ≠ output.weight [10, 128]",
        ),
        (
            vec!["import", trained, "--arch", "cnn"],
            "hidden1.weight [128, 784]  ≠ conv1.weight [32, 1, 3, 3]",
        ),
        (
            vec!["import", "weights.npz"],
            "weights.npz is not a PyTorch checkpoint",
        ),
        (vec!["import", "missing.pt"], "cannot read missing.pt"),
        (
            vec!["import", "garbage.pt"],
            "garbage.pt is not a PyTorch checkpoint",
        ),
        (
            vec!["import", "double.safetensors"],
            "'hidden1.bias' is F64",
        ),
        (
            vec!["export", "nowhere", "--format", "onnx", "--out", "x.onnx"],
            "nowhere is not a run folder",
        ),
        (
            vec!["export", "nowhere", "--format", "tflite", "--out", "x"],
            "invalid value 'tflite'",
        ),
    ] {
        std::fs::write(dir.path().join("garbage.pt"), b"not a checkpoint").unwrap();
        std::fs::write(dir.path().join("weights.npz"), b"PK\x03\x04 not a zip").unwrap();
        let mut double =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![128], &[0u8; 1024])
                .map(|view| vec![("hidden1.bias".to_string(), view)])
                .unwrap();
        let bytes = safetensors::serialize(double.drain(..), None).unwrap();
        std::fs::write(dir.path().join("double.safetensors"), bytes).unwrap();
        let output = common::digits(dir.path(), &args);
        common::assert_clean_failure(&output, needle);
    }
    assert!(
        !dir.path()
            .join("runs")
            .join("imported")
            .join("config.json")
            .exists()
    );
}

#[test]
fn exported_files_give_digits_logits_in_pytorch_and_onnxruntime() {
    let python = std::env::var("DIGITS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ready = std::process::Command::new(&python)
        .args(["-c", "import torch, onnxruntime, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        let missing = format!(
            "{python} cannot import torch, onnxruntime and safetensors; install them \
             (pip install torch onnxruntime safetensors) or point DIGITS_PYTHON at a Python \
             that has them"
        );
        // CI installs them (.ci/run): there, a skip would pass without checking anything.
        assert!(std::env::var_os("CI").is_none(), "{missing}");
        eprintln!("skipped: {missing}");
        return;
    }
    let test = Dataset::lite(Split::Test).truncated(100);
    let pixels: Vec<u8> = (0..test.len())
        .flat_map(|i| test.image(i).to_vec())
        .collect();
    // Every built-in architecture, and the layer kinds no built-in one uses.
    let mut gelu_average_pooling = CnnConfig::lenet5();
    gelu_average_pooling.activation = Activation::Gelu;
    gelu_average_pooling.conv[0].pool = Some(Pooling::Average);
    let configs = [
        ModelKind::Mlp.config(),
        ModelKind::Lenet5.config(),
        ModelKind::Cnn.config(),
        ModelKind::CnnLarge.config(),
        ModelConfig::Cnn(gelu_average_pooling),
    ];
    for config in configs {
        let kind = config.describe();
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let (_, model) = trained_run(config, &run_dir);
        for (format, file) in [("pytorch", "model.safetensors"), ("onnx", "model.onnx")] {
            let output = common::digits(
                dir.path(),
                &["export", "run", "--format", format, "--out", file],
            );
            assert!(output.status.success(), "{}", common::stderr(&output));
        }
        let images = eval::batch_tensors(&test.batch(0..test.len()), &Device::flex()).0;
        let logits: Vec<f32> = model.forward(images).into_data().try_to_vec().unwrap();
        std::fs::write(dir.path().join("images.u8"), &pixels).unwrap();
        let raw: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.path().join("logits.f32"), raw).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_export.py");
        let output = std::process::Command::new(&python)
            .arg(script)
            .args([
                "--config",
                "run/config.json",
                "--pytorch",
                "model.safetensors",
            ])
            .args([
                "--onnx",
                "model.onnx",
                "--images",
                "images.u8",
                "--logits",
                "logits.f32",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        eprintln!("{kind}: {report}");
        assert!(
            output.status.success(),
            "{kind}: {report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn import_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// Log-softmax of `[rows, 10]` values: what a model's logits and a log-softmax head's outputs
/// have in common.
fn log_softmax_rows(values: &[f32]) -> Vec<f64> {
    values
        .chunks(10)
        .flat_map(|row| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            row.iter().map(move |&v| v as f64 - max - sum.ln())
        })
        .collect()
}

#[test]
fn peoples_checkpoints_import_with_the_outputs_pytorch_computed() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(import_fixture("expected.json")).unwrap())
            .unwrap();
    let pixels: Vec<f32> = expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32 / 255.0)
        .collect();
    let count = pixels.len() / 784;
    let files = expected["files"].as_object().unwrap();
    assert_eq!(files.len(), 9);
    for (file, entry) in files {
        let dir = tempfile::tempdir().unwrap();
        let source = import_fixture(file);
        let mut args = vec!["import", source.to_str().unwrap(), "--out", "run"];
        let flags: Vec<&str> = entry["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        args.extend(&flags);
        let output = common::digits(dir.path(), &args);
        assert!(
            output.status.success(),
            "{file}: {}",
            common::stderr(&output)
        );
        if flags.is_empty() {
            assert!(
                common::stdout(&output).contains("Inferred the network from the file's tensors"),
                "{file}: {}",
                common::stdout(&output)
            );
        }
        let (_, model) = RunDir::open(&dir.path().join("run"))
            .unwrap()
            .load_model(&Device::flex())
            .unwrap();
        let images = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(pixels.clone(), [count, 1, 28, 28]),
            &Device::flex(),
        );
        let ours: Vec<f32> = model.forward(images).into_data().try_to_vec().unwrap();
        let theirs: Vec<f32> = entry["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let (ours, theirs) = (log_softmax_rows(&ours), log_softmax_rows(&theirs));
        let difference: f64 = ours.iter().zip(&theirs).map(|(a, b)| (a - b).powi(2)).sum();
        let size: f64 = theirs.iter().map(|b| b * b).sum();
        let relative = (difference / size).sqrt();
        eprintln!("{file}: relative error {relative:.2e}");
        assert!(relative < 1e-5, "{file}: relative error {relative}");
    }
}

#[test]
fn files_that_fit_several_networks_or_none_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = import_fixture("convnet_checkpoint.pth.tar");
    let checkpoint = checkpoint.to_str().unwrap();
    let legacy_module = import_fixture("legacy_whole_module.pt");
    let mlp = import_fixture("mlp_fc1_fc3.pt");
    let mlp = mlp.to_str().unwrap();
    std::fs::write(dir.path().join("model.bin"), b"\x08\x07\x12\x07pytorch").unwrap();
    for (args, needles) in [
        (
            vec!["import", legacy_module.to_str().unwrap()],
            vec!["torch.save(model.state_dict(), 'weights.pt')"],
        ),
        (
            vec!["import", "model.bin"],
            vec!["starts like an ONNX graph but does not read as one"],
        ),
        (
            vec!["import", mlp, "--rename", "fc1=z"],
            vec!["'z' takes 784 inputs, but the layer before it gives 10"],
        ),
        (
            vec!["import", mlp, "--rename", "conv1=c"],
            vec!["has no tensor named conv1 or under conv1."],
        ),
        (
            vec!["import", mlp, "--normalize", "0.1"],
            vec!["'0.1' is not MEAN,STD"],
        ),
    ] {
        let output = common::digits(dir.path(), &args);
        for needle in needles {
            common::assert_clean_failure(&output, needle);
        }
    }
    // Three networks fit; the one whose convolutions are padded alike is taken, and the
    // others are listed.
    let chosen = common::digits(dir.path(), &["import", checkpoint, "--out", "chosen"]);
    let out = common::stdout(&chosen);
    assert!(
        out.contains("tensors: conv3k5,relu,pool,conv5k5,relu,pool,conv12k4,relu,fc8,relu,fc10\n"),
        "{out}"
    );
    assert!(
        out.contains("also fits (--layers chooses): conv3k5p2,relu,pool,conv5k5"),
        "{out}"
    );
    assert!(
        out.contains(
            "Ignored 30 tensor(s) that are not parameters: optimizer_state_dict.state.0.exp_avg"
        ) && out.contains(" and 22 more"),
        "{out}"
    );
    let renamed = common::digits(
        dir.path(),
        &["import", mlp, "--rename", "fc3=out", "--out", "renamed"],
    );
    assert!(renamed.status.success(), "{}", common::stderr(&renamed));
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("renamed/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["imported"]["names"]["output.weight"], "out.weight");
    assert_eq!(config["imported"]["names"]["hidden1.bias"], "fc1.bias");
}

#[test]
fn the_normalisation_survives_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = import_fixture("mlp_fc1_fc3.pt");
    let imported = common::digits(
        dir.path(),
        &["import", mlp.to_str().unwrap(), "--out", "first"],
    );
    assert!(imported.status.success(), "{}", common::stderr(&imported));
    assert!(
        common::stdout(&imported).contains(
            "a state dict cannot say how its inputs were normalised. If the model was trained \
             on normalised images (often Normalize((0.1307,), (0.3081,))), import it with \
             --normalize 0.1307,0.3081"
        ),
        "{}",
        common::stdout(&imported)
    );
    let normalized = common::digits(
        dir.path(),
        &[
            "import",
            mlp.to_str().unwrap(),
            "--normalize",
            "0.1307,0.3081",
            "--out",
            "run",
        ],
    );
    assert!(
        normalized.status.success(),
        "{}",
        common::stderr(&normalized)
    );
    let exported = common::digits(
        dir.path(),
        &[
            "export",
            "run",
            "--format",
            "pytorch",
            "--out",
            "m.safetensors",
        ],
    );
    assert!(exported.status.success(), "{}", common::stderr(&exported));
    let back = common::digits(dir.path(), &["import", "m.safetensors", "--out", "back"]);
    assert!(back.status.success(), "{}", common::stderr(&back));
    assert!(
        common::stdout(&back).contains(
            "Inputs are normalised as the file's metadata says: (pixels - 0.1307) / 0.3081"
        ),
        "{}",
        common::stdout(&back)
    );
    let config = |run: &str| -> RunConfig {
        serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(run).join("config.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        config("back").model.normalization(),
        Some(Normalization {
            mean: 0.1307,
            std: 0.3081
        })
    );
    assert_eq!(config("back").model, config("run").model);
}

fn onnx_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// The first 8 reference images, which the ONNX fixtures' logits were computed on.
fn onnx_fixture_images() -> burn::tensor::Tensor<4> {
    let bytes = std::fs::read(fixture("mlp_relu_adam.safetensors")).unwrap();
    let images = weights::select_from_safetensors_bytes(&bytes, "reference", |name| {
        (name == "batch0.x").then_some(name)
    })
    .unwrap();
    let pixels = images["batch0.x"].values[..8 * 28 * 28].to_vec();
    burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(pixels, [8, 1, 28, 28]),
        &Device::flex(),
    )
}

/// ‖ours − reference‖ / ‖reference‖ of `model`'s output, with the final (log-)softmax the
/// import left out applied again, against onnxruntime's for the fixture `name`.
fn error_against_onnxruntime(model: &Model, final_softmax: Option<&str>, name: &str) -> f64 {
    use burn::tensor::activation;
    let logits = model.forward(onnx_fixture_images());
    let ours = match final_softmax {
        Some("LogSoftmax") => activation::log_softmax(logits, 1),
        Some("Softmax") => activation::softmax(logits, 1),
        _ => logits,
    };
    let ours: Vec<f32> = ours.into_data().try_to_vec().unwrap();
    let expected =
        weights::read_safetensors(&onnx_fixture(&format!("{name}.logits.safetensors")), "")
            .unwrap()
            .remove("logits")
            .unwrap();
    assert_eq!(expected.shape, [8, 10]);
    let (difference, norm) = ours
        .iter()
        .zip(&expected.values)
        .fold((0.0, 0.0), |(d, n), (a, b)| {
            (d + f64::from(a - b).powi(2), n + f64::from(*b).powi(2))
        });
    (difference / norm).sqrt()
}

#[test]
fn onnx_files_import_with_the_logits_onnxruntime_computes() {
    use digits::interop::onnx_import;
    for (name, described, normalization, final_softmax) in [
        (
            "mlp_logsoftmax_batch1",
            "mlp 784-16-10 relu",
            None,
            Some("LogSoftmax"),
        ),
        (
            "lenet_tanh_avgpool",
            "cnn conv4k5a-conv8k5a fc16 tanh",
            None,
            None,
        ),
        (
            "cnn_bn_normalize",
            "cnn conv4k3p-conv8k3p bn relu",
            Some(Normalization {
                mean: 0.1307,
                std: 0.3081,
            }),
            None,
        ),
        ("mlp_size_view_opset9", "mlp 784-4-10 relu", None, None),
        (
            "hand_built_opset20",
            "cnn conv4k3p bn gelu dropout0.3",
            Some(Normalization {
                mean: 0.5,
                std: 0.25,
            }),
            None,
        ),
        (
            "mlp_matmul_softmax_flat",
            "mlp 784-12-10 sigmoid",
            None,
            Some("Softmax"),
        ),
    ] {
        let file = format!("{name}.onnx");
        let bytes = std::fs::read(onnx_fixture(&file)).unwrap();
        let network = onnx_import::read(&bytes, &file).unwrap();
        assert_eq!(network.final_softmax, final_softmax, "{name}");
        assert_eq!(network.layers.normalization, normalization, "{name}");
        let config = ModelConfig::Layers(network.layers);
        assert_eq!(config.describe(), described);
        let model = Model::from_weights(&config, network.weights, &Device::flex()).unwrap();
        let error = error_against_onnxruntime(&model, final_softmax, name);
        eprintln!("{name}: relative error {error:.2e} against onnxruntime");
        assert!(error < 1e-5, "{name}: relative error {error}");
    }
}

#[test]
fn digits_import_reads_onnx_by_content_into_a_run_that_exports_again() {
    let dir = tempfile::tempdir().unwrap();
    // No .onnx extension: the content says what the file is.
    std::fs::copy(
        onnx_fixture("cnn_bn_normalize.onnx"),
        dir.path().join("model.bin"),
    )
    .unwrap();
    let imported = common::digits(
        dir.path(),
        &[
            "import",
            "model.bin",
            "--out",
            "run",
            "--dataset",
            "mnist-lite",
        ],
    );
    assert!(imported.status.success(), "{}", common::stderr(&imported));
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(stdout.contains("(pixels - 0.1307) / 0.3081"), "{stdout}");
    assert!(
        stdout.contains("(cnn conv4k3p-conv8k3p bn relu) into run"),
        "{stdout}"
    );
    let (config, model) = RunDir::open(&dir.path().join("run"))
        .unwrap()
        .load_model(&Device::flex())
        .unwrap();
    assert!(config.train.is_none() && config.imported.is_some());
    assert!(error_against_onnxruntime(&model, None, "cnn_bn_normalize") < 1e-5);
    let evaluated = common::digits(
        dir.path(),
        &[
            "eval",
            "--model",
            "run",
            "--dataset",
            "mnist-lite",
            "--offline",
        ],
    );
    assert!(evaluated.status.success(), "{}", common::stderr(&evaluated));

    let exported = common::digits(
        dir.path(),
        &["export", "run", "--format", "onnx", "--out", "again.onnx"],
    );
    assert!(exported.status.success(), "{}", common::stderr(&exported));
    let again = std::fs::read(dir.path().join("again.onnx")).unwrap();
    let network = digits::interop::onnx_import::read(&again, "again.onnx").unwrap();
    assert_eq!(network.weights, model.weights());

    let head = onnx_fixture("mlp_logsoftmax_batch1.onnx");
    let imported = common::digits(
        dir.path(),
        &["import", head.to_str().unwrap(), "--out", "mlp"],
    );
    assert!(imported.status.success(), "{}", common::stderr(&imported));
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        stdout.contains("Left out the graph's final LogSoftmax"),
        "{stdout}"
    );
}

#[test]
fn onnx_graphs_digits_cannot_run_are_refused_naming_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let resize = onnx_fixture("unsupported_resize.onnx");
    let lenet = onnx_fixture("lenet_tanh_avgpool.onnx");
    let strided = onnx_fixture("strided_conv.onnx");
    let normalized = onnx_fixture("cnn_bn_normalize.onnx");
    std::fs::write(dir.path().join("empty.onnx"), b"").unwrap();
    for (args, needle) in [
        (
            vec!["import", resize.to_str().unwrap()],
            "uses operators digits has no layer for: LeakyRelu, Resize;",
        ),
        (
            vec!["import", strided.to_str().unwrap()],
            "strided_conv.onnx: node '/conv/Conv' (Conv) has strides [2, 2]; digits' layers \
             have strides 1",
        ),
        (
            vec!["import", lenet.to_str().unwrap(), "--hidden", "64"],
            "an ONNX file describes its own network",
        ),
        (
            vec!["import", lenet.to_str().unwrap(), "--rename", "a=b"],
            "--rename do not apply",
        ),
        (
            vec![
                "import",
                normalized.to_str().unwrap(),
                "--normalize",
                "0.5,0.25",
            ],
            "--normalize would do it twice",
        ),
        (
            vec!["import", "empty.onnx"],
            "empty.onnx is not an ONNX model: it holds no graph",
        ),
    ] {
        let output = common::digits(dir.path(), &args);
        common::assert_clean_failure(&output, needle);
    }
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn a_rename_that_would_give_two_tensors_one_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = import_fixture("mlp_fc1_fc3.pt");
    let mlp = mlp.to_str().unwrap();
    let collision = common::digits(
        dir.path(),
        &["import", mlp, "--rename", "fc1=fc2", "--out", "a"],
    );
    common::assert_clean_failure(&collision, "--rename gives two tensors of");
    assert!(!dir.path().join("a").exists());
}

#[test]
fn normalize_applies_to_an_onnx_graph_that_does_not_standardise_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let lenet = onnx_fixture("lenet_tanh_avgpool.onnx");
    let output = common::digits(
        dir.path(),
        &[
            "import",
            lenet.to_str().unwrap(),
            "--normalize",
            "0.1307,0.3081",
            "--out",
            "run",
        ],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let (config, _) = RunDir::open(&dir.path().join("run"))
        .unwrap()
        .load_model(&Device::flex())
        .unwrap();
    assert_eq!(
        config.model.normalization(),
        Some(Normalization {
            mean: 0.1307,
            std: 0.3081
        })
    );
}
