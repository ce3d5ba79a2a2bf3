//! Batch norm over convolution channels, as PyTorch's `BatchNorm2d` (epsilon 1e-5, momentum
//! 0.1). Burn's own `BatchNorm` feeds its running variance the biased batch variance (divided
//! by n) where PyTorch feeds the unbiased one (divided by n - 1), so a model trained here would
//! carry different running statistics into eval mode, into a state dict and into an ONNX file.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::module::{batch_norm, batch_norm_train};

use super::plan::{BATCH_NORM_EPSILON as EPSILON, BATCH_NORM_MOMENTUM as MOMENTUM};

/// Normalises each channel of `[N, C, H, W]` by the batch's statistics when training (the
/// input is on an autodiff device), by the running statistics otherwise.
#[derive(Module, Debug)]
pub(crate) struct BatchNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
}

impl BatchNorm {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let device = input.device();
        if !device.is_autodiff() {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return batch_norm(input, self.gamma.val(), self.beta.val(), mean, var, EPSILON);
        }
        let [n, _, h, w] = input.dims();
        let samples = (n * h * w) as f64;
        let result = batch_norm_train(input, self.gamma.val(), self.beta.val(), EPSILON);
        // A single sample per channel has no unbiased variance (PyTorch refuses to train on
        // it); its variance, 0, is kept as it is.
        let bessel = if samples > 1.0 {
            samples / (samples - 1.0)
        } else {
            1.0
        };
        let blend = |running: &RunningState<Tensor<1>>, batch: Tensor<1>| {
            let updated = running
                .value_sync()
                .to_device(&device)
                .mul_scalar(1.0 - MOMENTUM)
                .add(batch.detach().mul_scalar(MOMENTUM));
            running.update(updated.detach());
        };
        blend(&self.running_mean, result.mean);
        blend(&self.running_var, result.variance.mul_scalar(bessel));
        result.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::ParamIds;

    fn batch_norm_of(channels: usize) -> BatchNorm {
        let device = Device::flex().autodiff();
        let constant = |value: f32| Tensor::<1>::full([channels], value, &device);
        let mut ids = ParamIds::default();
        BatchNorm {
            gamma: ids.param(constant(1.0)),
            beta: ids.param(constant(0.0)),
            running_mean: RunningState::new(constant(0.0)),
            running_var: RunningState::new(constant(1.0)),
        }
    }

    #[test]
    fn training_moves_the_running_variance_towards_the_unbiased_batch_variance() {
        let norm = batch_norm_of(1);
        // Eight samples 0..8: mean 3.5, unbiased variance 6 (biased 5.25).
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let input = Tensor::<4>::from_data(
            TensorData::new(values, [2, 1, 2, 2]),
            &Device::flex().autodiff(),
        );
        let output = norm
            .forward(input)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let std = (5.25f32 + 1e-5).sqrt();
        assert!((output[0] - -3.5 / std).abs() < 1e-5, "{output:?}");

        let inference = norm.valid();
        let mean = inference.running_mean.value().into_scalar::<f32>();
        let var = inference.running_var.value().into_scalar::<f32>();
        assert!((mean - 0.35).abs() < 1e-6, "running mean {mean}");
        assert!((var - (0.9 + 0.6)).abs() < 1e-6, "running variance {var}");
    }

    #[test]
    fn inference_normalises_with_the_running_statistics_and_leaves_them() {
        let norm = batch_norm_of(1).valid();
        let input =
            Tensor::<4>::from_data(TensorData::new(vec![3.0f32], [1, 1, 1, 1]), &Device::flex());
        let output = norm.forward(input).into_scalar::<f32>();
        assert!((output - 3.0 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-6);
        assert_eq!(norm.running_var.value().into_scalar::<f32>(), 1.0);
    }
}
