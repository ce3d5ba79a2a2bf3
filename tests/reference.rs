//! Number for number against PyTorch, llm.c style: the tutorial network's logits, loss,
//! gradients and optimizer steps, and a PyTorch-trained model's accuracy, from the values in
//! `tests/fixtures/reference` (computed with PyTorch 2.15 on real MNIST digits; see its README).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use digits::data::{Batch, Dataset, Split};
use digits::eval;
use digits::model::{Activation, MlpConfig, Model, ModelConfig, NamedTensor, Weights, weights};
use digits::train::{EngineChoice, OptimizerKind, TrainConfig, Trainer};

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
    assert_eq!(x.shape(), [32, 1, 28, 28]);
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
    let logits = model.forward(images).into_data();
    NamedTensor {
        shape: logits.shape().to_vec(),
        values: logits.try_to_vec().unwrap(),
    }
}

/// Both training paths, the fused MLP path (`EngineChoice::Auto` here) and Burn's autodiff,
/// are held to the same numbers.
fn three_steps_match_pytorch(
    file: &str,
    activation: Activation,
    optimizer: OptimizerKind,
    engine: EngineChoice,
) {
    let path = fixture(file);
    let with_prefix = |prefix: &str| weights::read_safetensors(&path, prefix).unwrap();
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
    let device = Device::flex();
    let mut trainer = Trainer::new(model, with_prefix("init."), config, &device).unwrap();
    assert_eq!(trainer.is_fused(), engine == EngineChoice::Auto);
    for step in 0..3 {
        let batch = reference_batch(&path, step);
        let values = with_prefix(&format!("step{step}."));
        let logits = logits_of(&trainer.model(), &batch);
        assert_close(
            &format!("step{step} logits"),
            &logits,
            &values["logits"],
            1e-5,
        );

        let (loss, gradients) = trainer.gradients(&batch);
        let reference_loss = values["loss"].values[0];
        assert!(
            ((loss - reference_loss) / reference_loss).abs() <= 1e-5,
            "step{step} loss {loss} vs {reference_loss}"
        );
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
fn the_hand_written_benchmark_reference_takes_the_same_three_adam_steps() {
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
        let expected = values["loss"].values[0];
        assert!(
            ((loss - expected) / expected).abs() <= 1e-5,
            "step{step} loss {loss} vs {expected}"
        );
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
