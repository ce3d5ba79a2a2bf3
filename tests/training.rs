//! Training on real digits: the tutorial's claims, checked with accuracy thresholds.

mod common;

use burn::tensor::Device;
use digits::data::{Dataset, Split};
use digits::eval;
use digits::experiment::{self, Adjustments, Plan};
use digits::model::{Model, ModelConfig};
use digits::run::RunDir;
use digits::train::{
    CancelToken, Engine, EngineChoice, EpochMetrics, Optimizer, OptimizerKind, Quiet, TrainConfig,
    TrainError, TrainObserver, Trainer, WhyBurn,
};

fn tutorial_trainer(epochs: usize) -> Trainer {
    let model = ModelConfig::default();
    let config = TrainConfig {
        epochs,
        ..TrainConfig::default()
    };
    common::trainer(&model, config, 0)
}

#[test]
fn three_epochs_of_the_tutorial_recipe_on_real_digits_reach_90_percent() {
    // PyTorch: 91.78% after 3 epochs with the same recipe and data from its own initial weights
    // (tests/fixtures/reference). Adam at lr 0.01 makes the accuracy jump by a point or two
    // from epoch to epoch (digits from its seed-0 weights: 87.4%, 91.2%, 89.2%), so the best
    // epoch must reach 90% and the last 88%.
    let train_set = Dataset::lite(Split::Train);
    let test_set = Dataset::lite(Split::Test);
    let dir = tempfile::tempdir().unwrap();
    let (experiment, history) = common::train_saved_run(dir.path(), &train_set, &test_set, 3);
    assert_eq!(history.len(), 3);
    let last = history.last().unwrap();
    let best = history.iter().map(|m| m.test_accuracy).fold(0.0, f64::max);
    assert!(best >= 0.90, "best accuracy {best}");
    assert!(
        last.test_accuracy >= 0.88,
        "accuracy {}",
        last.test_accuracy
    );
    assert!(
        last.train_loss < history[0].batch_losses[0] as f64 / 4.0,
        "the loss fell"
    );
    assert_eq!(last.batch_losses.len(), 313);

    // The saved run reloads to the same model: identical predictions, identical figures.
    let run = RunDir::open(dir.path()).unwrap();
    let (config, reloaded) = run.load_model(&Device::flex()).unwrap();
    assert_eq!(config.epochs_done, 3);
    assert_eq!(run.metrics().unwrap(), history);
    let again = eval::evaluate(&reloaded, &test_set, 32);
    assert_eq!(again.correct as f64 / 10_000.0, last.test_accuracy);
    assert_eq!(
        again.confusion,
        eval::evaluate(&experiment.trainer().model(), &test_set, 32).confusion
    );
}

#[test]
fn resuming_a_saved_run_continues_exactly_where_it_stopped() {
    let train_set = Dataset::lite(Split::Train).truncated(1_600);
    let test_set = Dataset::lite(Split::Test).truncated(320);

    let mut straight = tutorial_trainer(2);
    for _ in 0..2 {
        straight.train_epoch(&train_set, &mut Quiet).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    common::train_saved_run(dir.path(), &train_set, &test_set, 1);

    // As `digits train --resume RUN --epochs 1` does it.
    let one_more = Adjustments {
        epochs: Some(1),
        ..Adjustments::default()
    };
    let mut resumed = Plan::resume(dir.path(), one_more, None)
        .unwrap()
        .prepare(
            train_set.name,
            train_set.clone(),
            test_set.clone(),
            &Device::flex(),
        )
        .unwrap();
    assert_eq!(resumed.resumed_at(), Some((1, 0)));
    resumed.fit(&mut Quiet).unwrap();

    let trainer = resumed.trainer();
    assert_eq!(trainer.epochs_done(), 2);
    common::assert_weights_close(&straight.weights(), &trainer.weights(), 1e-6);
    assert_eq!(
        RunDir::open(dir.path()).unwrap().metrics().unwrap().len(),
        2
    );
}

/// Trains with [`digits::train::fit`], saving a new run folder at `dir` after every epoch.
fn fit_saving(
    dir: &std::path::Path,
    trainer: &mut Trainer,
    train_set: &Dataset,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<EpochMetrics>, TrainError> {
    let mut checkpoint = digits::run::RunCheckpoint {
        dir: RunDir::create(dir).unwrap(),
        dataset: train_set.name,
        imported: None,
        history: Vec::new(),
    };
    let test_set = Dataset::lite(Split::Test).truncated(32);
    digits::train::fit(
        trainer,
        train_set,
        None,
        &test_set,
        observer,
        &mut checkpoint,
    )
}

/// Trains `config` for one epoch of `train_set`, saving a run folder at `dir`.
fn save_one_epoch(
    dir: &std::path::Path,
    model: &ModelConfig,
    config: TrainConfig,
    train_set: &Dataset,
) {
    let mut trainer = common::trainer(
        model,
        TrainConfig {
            epochs: 1,
            ..config
        },
        0,
    );
    fit_saving(dir, &mut trainer, train_set, &mut Quiet).unwrap();
}

/// The run saved at `dir`, resumed to train `config` (on the engine `config` gives).
fn resume_run(dir: &std::path::Path, config: TrainConfig) -> Trainer {
    let run = RunDir::open(dir).unwrap();
    experiment::resume_trainer(&run, config, &Device::flex()).unwrap()
}

#[test]
fn every_optimizer_resumes_exactly_on_every_engine_that_trains_it() {
    let train_set = Dataset::lite(Split::Train).truncated(640);
    let model = ModelConfig::default();
    let adam = Optimizer::from(OptimizerKind::Adam);
    let sgd = Optimizer::from(OptimizerKind::Sgd);
    let momentum = Optimizer::Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let adamw = Optimizer::from(OptimizerKind::AdamW);
    let (auto, burn) = (EngineChoice::Auto, EngineChoice::Burn);
    for optimizer in [adam, sgd, momentum, adamw] {
        for (engine, chosen) in [
            (auto, Engine::Fused),
            (burn, Engine::Burn(WhyBurn::Requested)),
        ] {
            let config = TrainConfig {
                epochs: 2,
                optimizer,
                engine,
                ..TrainConfig::default()
            };
            let mut straight = common::trainer(&model, config.clone(), 0);
            assert_eq!(straight.engine(), chosen);
            for _ in 0..2 {
                straight.train_epoch(&train_set, &mut Quiet).unwrap();
            }

            let dir = tempfile::tempdir().unwrap();
            save_one_epoch(dir.path(), &model, config.clone(), &train_set);
            let mut resumed = resume_run(dir.path(), config.clone());
            resumed.train_epoch(&train_set, &mut Quiet).unwrap();

            assert_eq!(resumed.epochs_done(), 2);
            common::assert_weights_close(&straight.weights(), &resumed.weights(), 1e-6);
        }
    }
}

/// One epoch of `model` saved in `dir` by the engine `saved_on`, then resumed by `resumed_on`,
/// which must take the saved optimizer state whole; returns that state and the resumed trainer.
fn resume_on_the_other_engine(
    dir: &std::path::Path,
    model: &ModelConfig,
    on: impl Fn(EngineChoice) -> TrainConfig,
    (saved_on, resumed_on): (EngineChoice, EngineChoice),
    train_set: &Dataset,
) -> (digits::train::OptimizerState, Trainer) {
    save_one_epoch(dir, model, on(saved_on), train_set);
    let saved = RunDir::open(dir)
        .unwrap()
        .optimizer_state()
        .unwrap()
        .unwrap();
    let resumed = resume_run(dir, on(resumed_on));
    assert_eq!(resumed.is_fused(), resumed_on == EngineChoice::Auto);
    assert!(
        resumed.optimizer_state().unwrap() == saved,
        "{saved_on:?} to {resumed_on:?}: the state changed on the way"
    );
    (saved, resumed)
}

/// The optimizer state of a convolutional network, batch norm's parameters and convolution
/// biases included, passes from either engine to the other whole: Adam's moments and step
/// count for the `cnn` with AdamW, the momentum buffers for LeNet-5 with SGD.
#[test]
fn a_convolutional_networks_optimizer_state_passes_between_engines_whole() {
    let train_set = Dataset::lite(Split::Train).truncated(128);
    let momentum = Optimizer::Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
    };
    for (kind, optimizer) in [
        (
            digits::model::ModelKind::Cnn,
            Optimizer::AdamW { weight_decay: 0.05 },
        ),
        (digits::model::ModelKind::Lenet5, momentum),
    ] {
        let model = kind.config();
        let on = |engine| TrainConfig {
            epochs: 2,
            batch_size: 64,
            optimizer,
            engine,
            ..TrainConfig::default()
        };
        for engines in [
            (EngineChoice::Auto, EngineChoice::Burn),
            (EngineChoice::Burn, EngineChoice::Auto),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (saved, _) =
                resume_on_the_other_engine(dir.path(), &model, on, engines, &train_set);
            assert!(!saved.tensors.is_empty(), "{kind:?}");
        }
    }
}

#[test]
fn a_state_saved_by_one_engine_resumes_on_the_other() {
    let train_set = Dataset::lite(Split::Train).truncated(640);
    let model = ModelConfig::default();
    let on = |engine| TrainConfig {
        epochs: 2,
        engine,
        ..TrainConfig::default()
    };
    for (saved_on, resumed_on) in [
        (EngineChoice::Auto, EngineChoice::Burn),
        (EngineChoice::Burn, EngineChoice::Auto),
    ] {
        // The other engine takes the moments and the step count exactly...
        let dir = tempfile::tempdir().unwrap();
        let engines = (saved_on, resumed_on);
        let (saved, mut resumed) =
            resume_on_the_other_engine(dir.path(), &model, on, engines, &train_set);
        let run = RunDir::open(dir.path()).unwrap();
        assert!(run.path().join("optimizer.safetensors").is_file());
        assert!(!run.path().join("optimizer.bpk").exists());
        assert_eq!(saved.step, 20);

        // ...and goes on as the first would have: the engines sum in different orders, so
        // closely rather than exactly, but far closer than with a fresh optimizer.
        let mut straight = resume_run(dir.path(), on(saved_on));
        let mut fresh = Trainer::new(
            model.clone(),
            run.weights().unwrap(),
            on(resumed_on),
            &Device::flex(),
        )
        .unwrap();
        for trainer in [&mut straight, &mut resumed, &mut fresh] {
            trainer.train_epoch(&train_set, &mut Quiet).unwrap();
        }
        let distance = |a: &Trainer| {
            let (a, b) = (a.weights(), straight.weights());
            let squares = |f: &dyn Fn(f32, f32) -> f32| {
                a.iter()
                    .flat_map(|(name, t)| t.values.iter().zip(&b[name].values))
                    .map(|(&x, &y)| f(x, y).powi(2))
                    .sum::<f32>()
            };
            (squares(&|x, y| x - y) / squares(&|_, y| y)).sqrt()
        };
        let (resumed_distance, fresh_distance) = (distance(&resumed), distance(&fresh));
        assert!(
            resumed_distance < 1e-3 && resumed_distance * 20.0 < fresh_distance,
            "{saved_on:?} to {resumed_on:?}: {resumed_distance} against {fresh_distance}"
        );
    }
}

#[test]
fn without_its_optimizer_state_a_resumed_run_would_differ() {
    // Guards the test above: Adam's moments matter, so a resume that dropped them would fail it.
    let train_set = Dataset::lite(Split::Train).truncated(1_600);
    let mut straight = tutorial_trainer(2);
    straight.train_epoch(&train_set, &mut Quiet).unwrap();
    let mut fresh_optimizer = Trainer::new(
        ModelConfig::default(),
        straight.weights(),
        TrainConfig::default(),
        &Device::flex(),
    )
    .unwrap();
    straight.train_epoch(&train_set, &mut Quiet).unwrap();
    fresh_optimizer.train_epoch(&train_set, &mut Quiet).unwrap();
    let (a, b) = (straight.weights(), fresh_optimizer.weights());
    let differs = a.iter().any(|(name, t)| {
        t.values
            .iter()
            .zip(&b[name].values)
            .any(|(x, y)| (x - y).abs() > 1e-4)
    });
    assert!(differs);
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_does_not() {
    let config = ModelConfig::default();
    assert_eq!(config.initial_weights(1), config.initial_weights(1));
    assert_ne!(config.initial_weights(1), config.initial_weights(2));
    let weights = config.initial_weights(1);
    let bound = 1.0 / (784f32).sqrt();
    assert!(
        weights["hidden1.weight"]
            .values
            .iter()
            .all(|w| w.abs() <= bound)
    );
    let model = Model::init(&config, 1, &Device::flex());
    assert_eq!(model.weights(), weights);
}

#[test]
fn a_cnn_with_dropout_and_augmentation_trains_the_same_every_time() {
    let train_set = Dataset::lite(Split::Train).truncated(256);
    let model = digits::model::ModelKind::Cnn.config();
    let (_, config) = digits::train::Preset::Best.recipe(digits::data::DatasetName::MnistLite);
    let trained = || {
        let config = TrainConfig {
            not_digits: 0.1,
            ..config.clone()
        };
        let mut trainer = common::trainer(&model, config, 0);
        trainer.train_epoch(&train_set, &mut Quiet).unwrap();
        trainer.model().weights()
    };
    assert_eq!(
        trained(),
        trained(),
        "dropout masks are drawn from the run's seed"
    );
}

#[test]
fn a_loss_that_stops_being_finite_stops_training_before_it_is_saved() {
    let model = ModelConfig::default();
    let mut weights = model.initial_weights(0);
    // Weights this large overflow the logits to infinity on the first batch.
    for tensor in weights.values_mut() {
        tensor.values.iter_mut().for_each(|v| *v *= 1e30);
    }
    let mut trainer = Trainer::new(
        model,
        weights,
        TrainConfig {
            epochs: 1,
            ..TrainConfig::default()
        },
        &Device::flex(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::lite(Split::Train).truncated(64);
    let err = fit_saving(dir.path(), &mut trainer, &data, &mut Quiet).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Diverged {
                epoch: 1,
                batch: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lower the learning rate"));
    assert!(
        !dir.path().join("config.json").exists(),
        "nothing diverged was saved"
    );
}

#[test]
fn the_fused_path_and_burns_path_train_the_same_model() {
    let train_set = Dataset::lite(Split::Train).truncated(3_200);
    for (optimizer, activation) in [
        (
            digits::train::OptimizerKind::Adam,
            digits::model::Activation::Relu,
        ),
        (
            digits::train::OptimizerKind::Sgd,
            digits::model::Activation::Sigmoid,
        ),
    ] {
        let model = ModelConfig::Mlp(digits::model::MlpConfig {
            activation,
            ..Default::default()
        });
        let trained = |engine| {
            let config = TrainConfig {
                optimizer: optimizer.into(),
                engine,
                ..TrainConfig::default()
            };
            let mut trainer = common::trainer(&model, config, 0);
            assert_eq!(trainer.is_fused(), engine == EngineChoice::Auto);
            let losses = trainer.train_epoch(&train_set, &mut Quiet).unwrap();
            (losses, trainer.weights())
        };
        let (fused_losses, fused) = trained(EngineChoice::Auto);
        let (burn_losses, burn) = trained(EngineChoice::Burn);
        // 100 steps in float32 with different summation orders: close, not identical.
        for (a, b) in fused_losses.iter().zip(&burn_losses) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{optimizer:?}: loss {a} vs {b}"
            );
        }
        for (name, tensor) in &fused {
            let norm: f32 = burn[name].values.iter().map(|v| v * v).sum::<f32>().sqrt();
            let diff: f32 = tensor
                .values
                .iter()
                .zip(&burn[name].values)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            assert!(
                diff / norm < 1e-3,
                "{optimizer:?} {name}: relative difference {}",
                diff / norm
            );
        }
    }
}

/// Cancels training after `after` batches, as Ctrl-C does.
struct StopAfter {
    after: usize,
    seen: usize,
    token: CancelToken,
}

impl TrainObserver for StopAfter {
    fn batch(&mut self, _: &digits::train::BatchProgress) {
        self.seen += 1;
        if self.seen >= self.after {
            self.token.cancel();
        }
    }
}

#[test]
fn a_run_stopped_mid_epoch_is_saved_and_resumes_exactly() {
    let train_set = Dataset::lite(Split::Train).truncated(1_600);
    for (model, config) in [
        (ModelConfig::default(), TrainConfig::default()),
        (
            digits::model::ModelKind::Lenet5.config(),
            TrainConfig {
                shuffle: true,
                augment: Some(digits::augment::AugmentConfig::digits()),
                schedule: digits::train::LrSchedule::OneCycle,
                lr: 0.002,
                ..TrainConfig::default()
            },
        ),
    ] {
        let config = TrainConfig {
            epochs: 2,
            ..config
        };
        let mut straight = common::trainer(&model, config.clone(), 0);
        for _ in 0..2 {
            straight.train_epoch(&train_set, &mut Quiet).unwrap();
        }

        // Stopped 30 batches into epoch 2 (50 batches each).
        let dir = tempfile::tempdir().unwrap();
        let mut stopper = StopAfter {
            after: 80,
            seen: 0,
            token: CancelToken::new(),
        };
        let mut trainer =
            common::trainer(&model, config.clone(), 0).with_cancel_token(stopper.token.clone());
        let stopped = fit_saving(dir.path(), &mut trainer, &train_set, &mut stopper).unwrap_err();
        assert!(
            matches!(
                stopped,
                TrainError::Interrupted {
                    epoch: 2,
                    batches_done: 30
                }
            ),
            "{stopped}"
        );
        let run = RunDir::open(dir.path()).unwrap();
        let saved = run.config().unwrap();
        assert_eq!((saved.epochs_done, saved.batches_done), (1, 30));
        assert_eq!(run.metrics().unwrap().len(), 1);

        let mut resumed = experiment::resume_trainer(&run, config, &Device::flex()).unwrap();
        let losses = resumed.train_epoch(&train_set, &mut Quiet).unwrap();
        assert_eq!(losses.len(), 20);
        common::assert_weights_close(&straight.weights(), &resumed.weights(), 1e-5);
    }
}

#[test]
fn a_token_cancelled_before_training_stops_it_before_the_first_batch() {
    let data = Dataset::lite(Split::Train).truncated(64);
    let token = CancelToken::new();
    token.cancel();
    let mut trainer = tutorial_trainer(1).with_cancel_token(token);
    let dir = tempfile::tempdir().unwrap();
    let stopped = fit_saving(dir.path(), &mut trainer, &data, &mut Quiet).unwrap_err();
    assert!(
        matches!(
            stopped,
            TrainError::Interrupted {
                epoch: 1,
                batches_done: 0
            }
        ),
        "{stopped}"
    );
    assert_eq!(trainer.weights(), ModelConfig::default().initial_weights(0));

    // Another trainer has its own token.
    let mut other = tutorial_trainer(1);
    assert_eq!(other.train_epoch(&data, &mut Quiet).unwrap().len(), 2);
}

#[test]
fn training_leaves_the_float_mode_of_the_process_alone() {
    // Flush-to-zero is the program's choice (digits::device::flush_subnormals_to_zero): a
    // training step in the library must not turn it on for the caller or Burn's workers.
    let data = Dataset::lite(Split::Train).truncated(64);
    for engine in [EngineChoice::Auto, EngineChoice::Burn] {
        let config = TrainConfig {
            engine,
            ..TrainConfig::default()
        };
        let mut trainer = common::trainer(&ModelConfig::default(), config, 0);
        trainer.train_epoch(&data, &mut Quiet).unwrap();
    }
    let keeps_subnormals = || std::hint::black_box(f32::MIN_POSITIVE) / 2.0 != 0.0;
    assert!(keeps_subnormals(), "the calling thread");
    assert!(
        rayon::broadcast(|_| keeps_subnormals())
            .into_iter()
            .all(|kept| kept),
        "the worker threads"
    );
}

/// The average of the model's highest probability over `images` (28x28 each, in [0, 1]).
fn mean_confidence(model: &Model, images: &[f32]) -> f32 {
    let count = images.len() / 784;
    let tensor = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(images.to_vec(), [count, 1, 28, 28]),
        &Device::flex(),
    );
    let probabilities = burn::tensor::activation::softmax(model.forward(tensor), 1)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    probabilities
        .chunks_exact(10)
        .map(|row| row.iter().copied().fold(0.0, f32::max))
        .sum::<f32>()
        / count as f32
}

#[test]
fn marks_that_are_no_digit_are_trained_towards_no_confident_answer() {
    let train_set = Dataset::lite(Split::Train).truncated(1_000);
    let test_set = Dataset::lite(Split::Test).truncated(500);
    // Marks of the same families as training draws, but never the same ones.
    let unseen_marks = digits::augment::not_digits(200, 12_345);
    let trained = |not_digits: f64| {
        // Six epochs: after three, the marks' share of the steps still showed as 2 to 7
        // points of accuracy on some seeds (on either engine), which more training closes.
        let config = TrainConfig {
            epochs: 6,
            batch_size: 64,
            lr: 0.003,
            optimizer: digits::train::OptimizerKind::AdamW.into(),
            shuffle: true,
            not_digits,
            ..TrainConfig::default()
        };
        let mut trainer = common::trainer(&digits::model::ModelKind::Cnn.config(), config, 0);
        for _ in 0..6 {
            trainer.train_epoch(&train_set, &mut Quiet).unwrap();
        }
        let model = trainer.model();
        let accuracy = eval::evaluate(&model, &test_set, 100).accuracy();
        (accuracy, mean_confidence(&model, &unseen_marks))
    };
    let (plain_accuracy, plain_confidence) = trained(0.0);
    let (exposed_accuracy, exposed_confidence) = trained(0.25);
    eprintln!(
        "without marks: {plain_accuracy:.3} right, {plain_confidence:.2} sure of marks; \
         with: {exposed_accuracy:.3}, {exposed_confidence:.2}"
    );
    assert!(
        plain_confidence > exposed_confidence + 0.25,
        "{plain_confidence} against {exposed_confidence}"
    );
    assert!(exposed_confidence < 0.35, "{exposed_confidence}");
    assert!(exposed_accuracy > plain_accuracy - 0.03);
}
