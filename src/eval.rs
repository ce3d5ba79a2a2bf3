//! Evaluation: the tutorial's `test()` (accuracy and average loss), with a confusion matrix.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset, IMAGE_SIDE, NUM_CLASSES};
use crate::model::{Ensemble, Model};

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
    /// What the model said about each image, in the dataset's order.
    pub predictions: Vec<Prediction>,
}

/// The model's answer for one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub predicted: u8,
    /// The softmax probability of the predicted class.
    pub confidence: f32,
}

/// How well one class is recognised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassMetrics {
    /// Images of this class.
    pub support: usize,
    /// Of the images predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the images of this class, the fraction predicted as it.
    pub recall: f64,
    /// The harmonic mean of precision and recall.
    pub f1: f64,
}

/// A test image the model got wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mistake {
    pub index: usize,
    pub truth: u8,
    pub predicted: u8,
    pub confidence: f32,
}

impl Evaluation {
    /// Fraction correct, in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }

    /// Precision, recall and F1 of each class, from the confusion matrix.
    pub fn per_class(&self) -> [ClassMetrics; NUM_CLASSES] {
        std::array::from_fn(|class| {
            let hits = self.confusion[class][class] as f64;
            let support: usize = self.confusion[class].iter().sum();
            let predicted: usize = self.confusion.iter().map(|row| row[class]).sum();
            let ratio = |n: f64, d: usize| if d == 0 { 0.0 } else { n / d as f64 };
            let (precision, recall) = (ratio(hits, predicted), ratio(hits, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                support,
                precision,
                recall,
                f1,
            }
        })
    }

    /// The `count` wrong answers the model was surest of, surest first.
    pub fn most_confident_mistakes(&self, labels: &[u8], count: usize) -> Vec<Mistake> {
        let mut mistakes: Vec<Mistake> = self
            .predictions
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(_, (p, truth))| p.predicted != **truth)
            .map(|(index, (p, &truth))| Mistake {
                index,
                truth,
                predicted: p.predicted,
                confidence: p.confidence,
            })
            .collect();
        mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        mistakes.truncate(count);
        mistakes
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
    evaluate_ensemble(&Ensemble::new(vec![model.clone()]), data, batch_size)
}

/// As [`evaluate`], for models answering together. The loss is the cross-entropy of the
/// averaged probabilities.
pub fn evaluate_ensemble(models: &Ensemble, data: &Dataset, batch_size: usize) -> Evaluation {
    let mut evaluation = Evaluation {
        count: 0,
        correct: 0,
        avg_loss: 0.0,
        confusion: [[0; NUM_CLASSES]; NUM_CLASSES],
        predictions: Vec::with_capacity(data.len()),
    };
    let mut loss_sum = 0.0;
    let mut batches = 0;
    for batch in data.batches(batch_size, None) {
        let log_probabilities = models.log_probabilities_of(&batch.pixels);
        let picked: f64 = log_probabilities
            .chunks_exact(NUM_CLASSES)
            .zip(&batch.labels)
            .map(|(row, &label)| -f64::from(row[label as usize]))
            .sum();
        loss_sum += picked / batch.len() as f64;
        batches += 1;
        let probabilities: Vec<f32> = log_probabilities.iter().map(|v| v.exp()).collect();
        for (row, &truth) in probabilities.chunks_exact(NUM_CLASSES).zip(&batch.labels) {
            let prediction = most_probable(row);
            let (truth, predicted) = (truth as usize, usize::from(prediction.predicted));
            evaluation.confusion[truth][predicted] += 1;
            evaluation.count += 1;
            evaluation.correct += usize::from(truth == predicted);
            evaluation.predictions.push(prediction);
        }
    }
    evaluation.avg_loss = loss_sum / f64::from(batches.max(1));
    evaluation
}

/// The class with the highest probability (the first, on a tie, as `argmax` does).
pub fn most_probable(probabilities: &[f32]) -> Prediction {
    let (class, &confidence) =
        probabilities
            .iter()
            .enumerate()
            .fold((0, &f32::NEG_INFINITY), |best, (i, p)| {
                if *p > *best.1 { (i, p) } else { best }
            });
    Prediction {
        predicted: class as u8,
        confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_confusion(confusion: [[usize; NUM_CLASSES]; NUM_CLASSES]) -> Evaluation {
        let count = confusion.iter().flatten().sum();
        let correct = (0..NUM_CLASSES).map(|c| confusion[c][c]).sum();
        Evaluation {
            count,
            correct,
            avg_loss: 0.0,
            confusion,
            predictions: Vec::new(),
        }
    }

    #[test]
    fn precision_recall_and_f1_come_from_the_confusion_matrix() {
        let mut confusion = [[0; NUM_CLASSES]; NUM_CLASSES];
        confusion[0][0] = 8; // eight 0s recognised
        confusion[0][1] = 2; // two 0s taken for 1s
        confusion[1][1] = 6; // six 1s recognised
        let metrics = with_confusion(confusion).per_class();
        assert_eq!(metrics[0].support, 10);
        assert_eq!((metrics[0].precision, metrics[0].recall), (1.0, 0.8));
        assert_eq!((metrics[1].precision, metrics[1].recall), (0.75, 1.0));
        assert!((metrics[1].f1 - 2.0 * 0.75 / 1.75).abs() < 1e-12);
        assert_eq!(
            metrics[2].f1, 0.0,
            "a class never seen nor predicted scores zero, not NaN"
        );
    }

    #[test]
    fn the_surest_mistakes_come_first() {
        let mut evaluation = with_confusion([[0; NUM_CLASSES]; NUM_CLASSES]);
        let said = [(3, 0.9), (1, 0.99), (2, 0.6), (4, 0.95)];
        evaluation.predictions = said
            .iter()
            .map(|&(predicted, confidence)| Prediction {
                predicted,
                confidence,
            })
            .collect();
        let labels = [3, 7, 5, 4];
        let mistakes = evaluation.most_confident_mistakes(&labels, 5);
        let order: Vec<usize> = mistakes.iter().map(|m| m.index).collect();
        assert_eq!(order, [1, 2]);
        assert_eq!((mistakes[0].truth, mistakes[0].predicted), (7, 1));
    }

    #[test]
    fn ties_go_to_the_first_class_as_argmax_does() {
        assert_eq!(most_probable(&[0.1, 0.4, 0.4, 0.1]).predicted, 1);
    }
}
