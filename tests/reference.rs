//! Number for number against PyTorch, llm.c style: the tutorial network's and the
//! convolutional networks' logits, loss, gradients, batch norm's running statistics and
//! optimizer steps, and a PyTorch-trained model's accuracy, from the values in
//! `tests/fixtures/reference` (computed with PyTorch 2.15 on real MNIST digits; see its README).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use digits::data::{Batch, Dataset, Split};
use digits::eval;
use digits::model::{
    Activation, MlpConfig, Model, ModelConfig, ModelKind, NamedTensor, Weights, weights,
};
use digits::train::{EngineChoice, Optimizer, OptimizerKind, TrainConfig, Trainer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name)
}

/// ‖ours − reference‖ / ‖reference‖, the measure the reference README gives tolerances in.
fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let diff: f64 = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|&b| f64::from(b).powi(2)).sum();
    (diff / norm).sqrt()
}

fn assert_close(what: &str, ours: &NamedTensor, reference: &NamedTensor, tolerance: f64) {
    assert_eq!(ours.shape, reference.shape, "{what}: shape");
    let error = relative_error(&ours.values, &reference.values);
    assert!(
        error <= tolerance,
        "{what}: relative error {error:e} > {tolerance:e}"
    );
}

/// `loss` against the step's `loss` in `values`, within the logits' 1e-5.
fn assert_loss_close(what: &str, loss: f32, values: &Weights) {
    let reference = values["loss"].values[0];
    assert!(
        ((loss - reference) / reference).abs() <= 1e-5,
        "{what}: {loss} vs {reference}"
    );
}

fn assert_all_close(what: &str, ours: &Weights, reference: &Weights, tolerance: f64) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, tensor) in reference {
        assert_close(&format!("{what} {name}"), &ours[name], tensor, tolerance);
    }
}

/// The batch of step `s`: float images as PyTorch saw them and int64 labels.
fn reference_batch(file: &Path, step: usize) -> Batch {
    let bytes = std::fs::read(file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let x = tensors.tensor(&format!("batch{step}.x")).unwrap();
    let y = tensors.tensor(&format!("batch{step}.y")).unwrap();
    assert_eq!(x.shape()[1..], [1, 28, 28]);
    assert_eq!(y.shape(), [x.shape()[0]]);
    assert_eq!(y.dtype(), safetensors::Dtype::I64);
    Batch {
        pixels: x
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        labels: y
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    }
}

fn logits_of(model: &Model, batch: &Batch) -> NamedTensor {
    let (images, _) = eval::batch_tensors(batch, &Device::flex());
    logits_of_images(model, images)
}

fn logits_of_images(model: &Model, images: Tensor<4>) -> NamedTensor {
    let logits = model.forward(images).into_data();
    NamedTensor {
        shape: logits.shape().to_vec(),
        values: logits.try_to_vec().unwrap(),
    }
}

/// `steps` steps of `model` from the `init.` weights of `file` equal PyTorch's: logits, loss,
/// gradients and weights after each step, on the batches `batches` holds.
fn steps_match_pytorch(
    file: &str,
    batches: &str,
    steps: usize,
    model: ModelConfig,
    config: TrainConfig,
) -> Trainer {
    let path = fixture(file);
    let with_prefix = |prefix: &str| weights::read_safetensors(&path, prefix).unwrap();
    let mut trainer = Trainer::new(model, with_prefix("init."), config, &Device::flex()).unwrap();
    for step in 0..steps {
        let batch = reference_batch(&fixture(batches), step);
        let values = with_prefix(&format!("step{step}."));
        let logits = logits_of(&trainer.model(), &batch);
        assert_close(
            &format!("step{step} logits"),
            &logits,
            &values["logits"],
            1e-5,
        );

        let (loss, gradients) = trainer.gradients(&batch);
        assert_loss_close(&format!("step{step} loss"), loss, &values);
        assert_all_close(
            &format!("step{step} grad"),
            &gradients,
            &with_prefix(&format!("step{step}.grad.")),
            1e-4,
        );

        assert_eq!(trainer.step(&batch), loss);
        assert_all_close(
            &format!("step{step} after"),
            &trainer.weights(),
            &with_prefix(&format!("step{step}.after.")),
            1e-4,
        );
    }
    trainer
}

/// Both training paths, digits' CPU engine (`EngineChoice::Auto` here) and Burn's autodiff,
/// are held to the same numbers.
fn three_steps_match_pytorch(
    file: &str,
    activation: Activation,
    optimizer: OptimizerKind,
    engine: EngineChoice,
) {
    let model = ModelConfig::Mlp(MlpConfig {
        hidden: vec![128, 400],
        activation,
        ..MlpConfig::default()
    });
    let config = TrainConfig {
        optimizer: optimizer.into(),
        lr: 0.01,
        engine,
        ..TrainConfig::default()
    };
    let trainer = steps_match_pytorch(file, file, 3, model, config);
    assert_eq!(trainer.is_fused(), engine == EngineChoice::Auto);
}

#[test]
fn three_adam_steps_with_relu_equal_pytorchs() {
    for engine in [EngineChoice::Auto, EngineChoice::Burn] {
        three_steps_match_pytorch(
            "mlp_relu_adam.safetensors",
            Activation::Relu,
            OptimizerKind::Adam,
            engine,
        );
    }
}

#[test]
fn three_sgd_steps_with_sigmoid_equal_pytorchs() {
    for engine in [EngineChoice::Auto, EngineChoice::Burn] {
        three_steps_match_pytorch(
            "mlp_sigmoid_sgd.safetensors",
            Activation::Sigmoid,
            OptimizerKind::Sgd,
            engine,
        );
    }
}

/// A convolutional network (dropout off, as in the reference files) trained three steps on each
/// engine as PyTorch did: logits and loss of every step, and, where the file has them, the gradients and
/// the weights after the step, batch norm's running statistics included; then the logits in
/// eval mode (running statistics) of 100 other digits.
fn cnn_steps_match_pytorch(file: &str, kind: ModelKind, config: TrainConfig) {
    for engine in [EngineChoice::Auto, EngineChoice::Burn] {
        cnn_steps_on_engine_match_pytorch(
            file,
            kind,
            TrainConfig {
                engine,
                ..config.clone()
            },
        );
    }
}

/// [`cnn_steps_match_pytorch`] on the engine `config` chooses.
fn cnn_steps_on_engine_match_pytorch(file: &str, kind: ModelKind, config: TrainConfig) {
    let path = fixture(file);
    let with_prefix = |prefix: &str| weights::read_safetensors(&path, prefix).unwrap();
    let ModelConfig::Cnn(cnn) = kind.config() else {
        panic!("{kind:?} is a convolutional network");
    };
    let model = ModelConfig::Cnn(digits::model::CnnConfig {
        dropout: 0.0,
        ..cnn
    });
    let device = Device::flex();
    let fused = config.engine == EngineChoice::Auto;
    let mut trainer = Trainer::new(model, with_prefix("init."), config, &device).unwrap();
    assert_eq!(trainer.is_fused(), fused);
    let file = &format!("{file} ({})", if fused { "fused" } else { "Burn" });
    for step in 0..3 {
        let batch = reference_batch(&path, step);
        let values = with_prefix(&format!("step{step}."));
        // In training mode, as PyTorch's: batch norm normalises with the batch's statistics.
        let training = Model::from_weights(
            trainer.model_config(),
            trainer.weights(),
            &device.clone().autodiff(),
        )
        .unwrap();
        let (images, _) = eval::batch_tensors(&batch, &device.clone().autodiff());
        let logits = logits_of_images(&training, images);
        assert_close(
            &format!("{file} step{step} logits"),
            &logits,
            &values["logits"],
            1e-5,
        );

        let gradients = with_prefix(&format!("step{step}.grad."));
        if !gradients.is_empty() {
            assert_all_close(
                &format!("{file} step{step} grad"),
                &trainer.gradients(&batch).1,
                &gradients,
                1e-4,
            );
        }

        let loss = trainer.step(&batch);
        assert_loss_close(&format!("{file} step{step} loss"), loss, &values);
        let after = with_prefix(&format!("step{step}.after."));
        if !after.is_empty() {
            // Running statistics come from the forward pass alone, so they are held to the
            // logits' tolerance, which also tells PyTorch's unbiased batch variance from the
            // biased one (1.6e-5 off in `cnn_large_adam`'s bn3).
            let running = |(name, _): &(String, NamedTensor)| {
                name.ends_with(".running_mean") || name.ends_with(".running_var")
            };
            let (ours_running, ours): (Weights, Weights) =
                trainer.weights().into_iter().partition(running);
            let (after_running, after): (Weights, Weights) = after.into_iter().partition(running);
            let what = format!("{file} step{step} after");
            assert_all_close(&what, &ours, &after, 1e-4);
            assert_all_close(&what, &ours_running, &after_running, 1e-5);
        }
    }

    let eval = with_prefix("eval.");
    let images = Tensor::<4>::from_data(
        TensorData::new(eval["x"].values.clone(), eval["x"].shape.clone()),
        &device,
    );
    assert_close(
        &format!("{file} eval logits"),
        &logits_of_images(&trainer.model(), images),
        &eval["logits"],
        1e-5,
    );
}

#[test]
fn three_adamw_steps_of_the_cnn_with_label_smoothing_equal_pytorchs() {
    cnn_steps_match_pytorch(
        "cnn_adamw.safetensors",
        ModelKind::Cnn,
        TrainConfig {
            optimizer: Optimizer::AdamW { weight_decay: 0.05 },
            lr: 0.003,
            label_smoothing: 0.1,
            batch_size: 64,
            ..TrainConfig::default()
        },
    );
}

#[test]
fn three_adam_steps_of_the_large_cnn_equal_pytorchs() {
    cnn_steps_match_pytorch(
        "cnn_large_adam.safetensors",
        ModelKind::CnnLarge,
        TrainConfig {
            optimizer: OptimizerKind::Adam.into(),
            lr: 0.001,
            ..TrainConfig::default()
        },
    );
}

#[test]
fn three_sgd_momentum_steps_of_lenet5_equal_pytorchs() {
    cnn_steps_match_pytorch(
        "lenet5_sgd_momentum.safetensors",
        ModelKind::Lenet5,
        TrainConfig {
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            lr: 0.01,
            ..TrainConfig::default()
        },
    );
}

#[test]
fn the_pytorch_trained_tutorial_model_scores_exactly_as_in_pytorch() {
    let path = fixture("tutorial_trained.safetensors");
    let mut trained = weights::read_safetensors(&path, "").unwrap();
    let reference_logits = trained.remove("eval.logits_first100").unwrap();
    let model = Model::from_weights(&ModelConfig::default(), trained, &Device::flex()).unwrap();
    let test = Dataset::lite(Split::Test);

    let first100 = test.clone().truncated(100);
    let logits = logits_of(&model, &first100.batch(0..100));
    assert_close("first 100 logits", &logits, &reference_logits, 1e-5);

    let values: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("values.json")).unwrap()).unwrap();
    let expected_accuracy = values["tutorial_trained"]["test_accuracy_percent"]
        .as_f64()
        .unwrap();
    let expected_loss = values["tutorial_trained"]["test_avg_loss_mean_of_batch_means"]
        .as_f64()
        .unwrap();
    let evaluation = eval::evaluate(&model, &test, 32);
    assert_eq!(evaluation.count, 10_000);
    assert_eq!(evaluation.correct as f64 / 100.0, expected_accuracy);
    assert!(
        (evaluation.avg_loss - expected_loss).abs() / expected_loss < 1e-5,
        "{} vs {expected_loss}",
        evaluation.avg_loss
    );
}

#[test]
fn the_benchmarks_plain_loop_baseline_takes_the_same_three_adam_steps() {
    use digits::bench::reference::ReferenceMlp;
    let path = fixture("mlp_relu_adam.safetensors");
    let with_prefix = |prefix: &str| weights::read_safetensors(&path, prefix).unwrap();
    let mut reference = ReferenceMlp::new(with_prefix("init."), 0.01).unwrap();
    for step in 0..3 {
        let batch = reference_batch(&path, step);
        let values = with_prefix(&format!("step{step}."));
        let logits = NamedTensor {
            shape: vec![32, 10],
            values: reference.forward(&batch.pixels).to_vec(),
        };
        assert_close(
            &format!("step{step} logits"),
            &logits,
            &values["logits"],
            1e-5,
        );

        let loss = reference.step(&batch);
        assert_loss_close(&format!("step{step} loss"), loss, &values);
        assert_all_close(
            &format!("step{step} grad"),
            &reference.tensors(true),
            &with_prefix(&format!("step{step}.grad.")),
            1e-4,
        );
        assert_all_close(
            &format!("step{step} after"),
            &reference.tensors(false),
            &with_prefix(&format!("step{step}.after.")),
            1e-4,
        );
    }
}

/// The layer kinds added with the network plan, GELU and average pooling, on Burn's path
/// (`tests/python/make_layer_reference.py` made the values).
#[test]
fn gelu_and_average_pooling_match_pytorch_forward_backward_and_adam() {
    use digits::model::{CnnConfig, ConvLayer, Pooling};
    let conv = |channels, pool| ConvLayer {
        channels,
        kernel: 3,
        padding: 1,
        pool: Some(pool),
    };
    let model = ModelConfig::Cnn(CnnConfig {
        conv: vec![conv(4, Pooling::Average), conv(8, Pooling::Max)],
        batch_norm: false,
        hidden: vec![16],
        activation: Activation::Gelu,
        dropout: 0.0,
        normalization: None,
    });
    let config = TrainConfig {
        optimizer: OptimizerKind::Adam.into(),
        lr: 0.01,
        ..TrainConfig::default()
    };
    steps_match_pytorch(
        "gelu_avgpool_adam.safetensors",
        "mlp_relu_adam.safetensors",
        2,
        model,
        config,
    );
}

/// Tanh, on both training paths.
#[test]
fn tanh_matches_pytorch_on_both_paths() {
    for engine in [EngineChoice::Auto, EngineChoice::Burn] {
        let model = ModelConfig::Mlp(MlpConfig {
            hidden: vec![32],
            activation: Activation::Tanh,
            ..MlpConfig::default()
        });
        let config = TrainConfig {
            optimizer: OptimizerKind::Sgd.into(),
            lr: 0.1,
            engine,
            ..TrainConfig::default()
        };
        let trainer = steps_match_pytorch(
            "tanh_sgd.safetensors",
            "mlp_relu_adam.safetensors",
            2,
            model,
            config,
        );
        assert_eq!(trainer.is_fused(), engine == EngineChoice::Auto);
    }
}
