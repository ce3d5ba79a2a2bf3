//! Evaluation: the tutorial's `test()` (accuracy and average loss), with a confusion matrix.

use burn::nn::loss::CrossEntropyLoss;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset, IMAGE_SIDE, NUM_CLASSES};
use crate::model::Model;

/// How a model did on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub count: usize,
    pub correct: usize,
    /// The tutorial's average loss: the mean of the per-batch mean losses (so a short last
    /// batch weighs as much as a full one, exactly as the tutorial computes it).
    pub avg_loss: f64,
    /// `confusion[truth][predicted]`: how many test images of each class went where.
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
}

impl Evaluation {
    /// Fraction correct, in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }

    /// For each class: how many of its images there were and how many were recognised.
    pub fn per_class(&self) -> [(usize, usize); NUM_CLASSES] {
        std::array::from_fn(|class| {
            let row = &self.confusion[class];
            (row.iter().sum(), row[class])
        })
    }
}

/// Turns a batch into the tensors a model takes: `[N, 1, 28, 28]` images and `[N]` targets.
pub fn batch_tensors(batch: &Batch, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let images = Tensor::<4>::from_data(
        TensorData::new(
            batch.pixels.clone(),
            [batch.len(), 1, IMAGE_SIDE, IMAGE_SIDE],
        ),
        device,
    );
    let targets =
        Tensor::<1, Int>::from_data(TensorData::new(batch.labels.clone(), [batch.len()]), device);
    (images, targets)
}

/// Runs `model` over every image of `data`, `batch_size` at a time, in the dataset's order.
pub fn evaluate(model: &Model, data: &Dataset, batch_size: usize) -> Evaluation {
    let device = model_device(model);
    let loss_fn = CrossEntropyLoss::new(None, &device);
    let mut evaluation = Evaluation {
        count: 0,
        correct: 0,
        avg_loss: 0.0,
        confusion: [[0; NUM_CLASSES]; NUM_CLASSES],
    };
    let mut loss_sum = 0.0;
    let mut batches = 0;
    for batch in data.batches(batch_size, None) {
        let (images, targets) = batch_tensors(&batch, &device);
        let logits = model.forward(images);
        loss_sum += f64::from(
            loss_fn
                .forward(logits.clone(), targets)
                .into_scalar::<f32>(),
        );
        batches += 1;
        let predictions = logits.argmax(1).into_data();
        let predictions = predictions
            .iter::<i64>()
            .map(|p| usize::try_from(p).unwrap_or(0));
        for (predicted, &truth) in predictions.zip(&batch.labels) {
            let truth = truth as usize;
            evaluation.confusion[truth][predicted] += 1;
            evaluation.count += 1;
            evaluation.correct += usize::from(truth == predicted);
        }
    }
    evaluation.avg_loss = loss_sum / f64::from(batches.max(1));
    evaluation
}

fn model_device(model: &Model) -> Device {
    use burn::module::Module;
    model
        .devices()
        .into_iter()
        .next()
        .expect("a model has at least one parameter")
}
