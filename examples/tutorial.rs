//! The beginner PyTorch MNIST tutorial, step by step, on the digits library.
//!
//! `cargo run --release --example tutorial [EPOCHS]` (10 epochs unless told otherwise).
//! Each numbered step matches one of the tutorial's; the `digits` command does the same work
//! with more options (`digits show`, `digits train`, `digits eval`).

use std::error::Error;
use std::path::PathBuf;

use digits::data::download::Silent;
use digits::data::{DataSource, DatasetName, FetchOptions, Split};
use digits::device::DeviceChoice;
use digits::eval;
use digits::files::save_png;
use digits::model::{Activation, MlpConfig, ModelConfig};
use digits::show;
use digits::train::{BatchProgress, Optimizer, TrainConfig, TrainObserver, Trainer};

/// Step 11's printing: the loss every 100 batches, as the tutorial's `train()` prints it.
struct PrintEvery100;

impl TrainObserver for PrintEvery100 {
    fn batch(&mut self, p: &BatchProgress) {
        if p.batch.is_multiple_of(100) {
            println!("loss: {:>7.6}  [{:>5}/{:>5}]", p.loss, p.seen, p.total);
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. Imports: the `use` lines above.
    let epochs: usize = std::env::args()
        .nth(1)
        .map(|e| e.parse())
        .transpose()?
        .unwrap_or(10);

    // 2. Load MNIST into ./data; pixels are scaled to [0, 1] when batches are made. Without a
    //    network the built-in 10,000 real training digits stand in for the 60,000.
    let source = DataSource {
        dataset: DatasetName::Mnist,
        data_dir: PathBuf::from("./data"),
        fetch: Some(FetchOptions::default()),
    };
    let data = source.resolve(&mut Silent)?;
    if let Some(reason) = &data.fallback {
        println!("Full MNIST is not available ({reason}); using mnist-lite.");
    }
    let training_data = data.load(Split::Train)?;
    let test_data = data.load(Split::Test)?;

    // 3. Show training samples 59000..59008 (the last nine of a smaller set) with their labels.
    let range = show::sample_range(training_data.len(), None, 9);
    let grid = show::grid(&show::samples(&training_data, range), 3);
    save_png(&grid.into(), "samples.png".as_ref())?;

    // 4. Data loaders: batches of 32, in the dataset's order.
    let batch_size = 32;

    // 5. CUDA if available, else the CPU.
    let selected = DeviceChoice::Auto.select()?;
    println!("Using {} device", selected.name);

    // 6. The shape of one test batch and the dtype of its labels.
    let batch = test_data
        .batches(batch_size, None)
        .next()
        .ok_or("empty test set")?;
    println!("Shape of X [N, C, H, W]: {:?}", batch.shape());
    println!("Shape of y: [{}] int64", batch.len());

    // 7. The network: 784 -> 128 -> 400 -> 10 with ReLU (sigmoid is the alternative).
    let network = ModelConfig::Mlp(MlpConfig {
        hidden: vec![128, 400],
        activation: Activation::Relu,
        ..MlpConfig::default()
    });

    // 8-10. The model object, cross-entropy loss and Adam with lr 0.01 (SGD is the
    //    alternative), all inside a trainer.
    let config = TrainConfig {
        epochs,
        batch_size,
        lr: 0.01,
        optimizer: Optimizer::Adam { weight_decay: 0.0 },
        shuffle: false,
        seed: 0,
        ..TrainConfig::default()
    };
    let weights = network.initial_weights(config.seed);
    let mut trainer = Trainer::new(network, weights, config, &selected.device)?;

    // 11-13. Train and test, epoch after epoch.
    for epoch in 1..=epochs {
        println!("Epoch {epoch}\n-------------------------------");
        trainer.train_epoch(&training_data, &mut PrintEvery100)?;
        let result = eval::evaluate(&trainer.model(), &test_data, batch_size);
        println!(
            "Test Error: \n Accuracy: {:.1}%, Avg loss: {:>8.6} \n",
            100.0 * result.accuracy(),
            result.avg_loss
        );
    }
    println!("Done!");
    Ok(())
}
