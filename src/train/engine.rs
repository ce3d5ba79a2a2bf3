//! Which code does a run's arithmetic: decided once, from the model, the training settings and
//! the device, and kept by the [`Trainer`](super::Trainer) that everything else asks.

use burn::tensor::Device;

use super::fused::DenseStack;
use super::{EngineChoice, Optimizer, TrainConfig};
use crate::model::ModelConfig;

/// The engine a [`Trainer`](super::Trainer) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The fused MLP path (`src/train/fused.rs`), with the update it takes.
    Fused(FusedOptimizer),
    /// Burn's autodiff and optimizers, and why the fused path does not apply.
    Burn(WhyBurn),
}

/// The updates the fused path implements, each as PyTorch takes it. Anything else trains on
/// Burn's path, so the fused path has no update it could take wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedOptimizer {
    /// Adam without weight decay.
    Adam,
    /// SGD without momentum or weight decay.
    Sgd,
}

/// Why a run trains on Burn's path rather than the fused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyBurn {
    /// The settings ask for Burn (`--engine burn`).
    Requested,
    /// The model is not an MLP, the only kind the fused path knows.
    NotAnMlp,
    /// The MLP has dropout, for which the fused path draws no masks.
    Dropout,
    /// The MLP's activation is GELU, whose derivative the fused path cannot take from the
    /// outputs it keeps, or its layers mix activations.
    Activation,
    /// The optimizer is AdamW, or has weight decay or momentum.
    Optimizer,
    /// The loss smooths its labels; the fused path's is the plain cross-entropy.
    LabelSmoothing,
    /// Batches carry marks that are no digit, which the fused path does not train on.
    NotDigits,
    /// The device is not the CPU, where the fused path runs.
    NotCpu,
}

/// The MLP and the update of the fused path for training `model` with `config` on `device`,
/// wherever that path computes exactly what Burn's would (the same reference tests hold it to
/// PyTorch's numbers); otherwise why Burn's path trains it.
pub(crate) fn fused_path(
    model: &ModelConfig,
    config: &TrainConfig,
    device: &Device,
) -> Result<(DenseStack, FusedOptimizer), WhyBurn> {
    if config.engine == EngineChoice::Burn {
        return Err(WhyBurn::Requested);
    }
    let plan = model.plan().map_err(|_| WhyBurn::NotAnMlp)?;
    let stack = DenseStack::of(&plan)?;
    let optimizer = match config.optimizer {
        Optimizer::Adam { weight_decay } if weight_decay == 0.0 => FusedOptimizer::Adam,
        Optimizer::Sgd {
            momentum,
            weight_decay,
        } if momentum == 0.0 && weight_decay == 0.0 => FusedOptimizer::Sgd,
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } | Optimizer::Sgd { .. } => {
            return Err(WhyBurn::Optimizer);
        }
    };
    if config.label_smoothing != 0.0 {
        Err(WhyBurn::LabelSmoothing)
    } else if config.not_digits != 0.0 {
        Err(WhyBurn::NotDigits)
    } else if *device != Device::flex() {
        Err(WhyBurn::NotCpu)
    } else {
        Ok((stack, optimizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, MlpConfig, ModelKind};

    #[test]
    fn each_setting_the_fused_path_lacks_sends_a_run_to_burns() {
        let cpu = Device::flex();
        let mlp = ModelConfig::default();
        let why = |model: &ModelConfig, config: TrainConfig| {
            fused_path(model, &config, &cpu).map(|(_, optimizer)| optimizer)
        };
        assert_eq!(why(&mlp, TrainConfig::default()), Ok(FusedOptimizer::Adam));
        let dropout = ModelConfig::Mlp(MlpConfig {
            dropout: 0.5,
            ..MlpConfig::default()
        });
        let gelu = ModelConfig::Mlp(MlpConfig {
            activation: Activation::Gelu,
            ..MlpConfig::default()
        });
        let activated_logits = ModelConfig::Layers(
            crate::model::LayersConfig::parse("fc128,relu,fc10,sigmoid").unwrap(),
        );
        for (model, config, reason) in [
            (
                &ModelKind::Lenet5.config(),
                TrainConfig::default(),
                WhyBurn::NotAnMlp,
            ),
            (&dropout, TrainConfig::default(), WhyBurn::Dropout),
            (&gelu, TrainConfig::default(), WhyBurn::Activation),
            (&activated_logits, TrainConfig::default(), WhyBurn::NotAnMlp),
            (
                &mlp,
                TrainConfig {
                    optimizer: Optimizer::Adam { weight_decay: 0.01 },
                    ..TrainConfig::default()
                },
                WhyBurn::Optimizer,
            ),
            (
                &mlp,
                TrainConfig {
                    label_smoothing: 0.1,
                    ..TrainConfig::default()
                },
                WhyBurn::LabelSmoothing,
            ),
            (
                &mlp,
                TrainConfig {
                    not_digits: 0.1,
                    ..TrainConfig::default()
                },
                WhyBurn::NotDigits,
            ),
        ] {
            assert_eq!(why(model, config), Err(reason));
        }
    }
}
