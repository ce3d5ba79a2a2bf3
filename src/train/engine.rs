//! Which code does a run's arithmetic: decided once, from the model, the training settings and
//! the device, and kept by the [`Trainer`](super::Trainer) that everything else asks.

use burn::tensor::Device;

use super::{EngineChoice, TrainConfig};
use crate::model::{ModelConfig, Plan};

/// The engine a [`Trainer`](super::Trainer) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// digits' own CPU engine ([`crate::cpu`], trained through `src/train/fused.rs`).
    Fused,
    /// Burn's autodiff and optimizers, and why the fused path does not apply.
    Burn(WhyBurn),
}

/// Why a run trains on Burn's path rather than the fused one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyBurn {
    /// The settings ask for Burn (`--engine burn`).
    Requested,
    /// The network has a GELU, whose derivative the CPU engine does not implement.
    Activation,
    /// The device is not the CPU, where the fused path runs.
    NotCpu,
    /// The model config lays out no network; building the model says why.
    NoPlan,
}

/// The plan the fused path trains for `model` with `config` on `device`, wherever that path
/// applies (the same reference tests hold it to PyTorch's numbers); otherwise why Burn's path
/// trains it.
pub(crate) fn fused_path(
    model: &ModelConfig,
    config: &TrainConfig,
    device: &Device,
) -> Result<Plan, WhyBurn> {
    if config.engine == EngineChoice::Burn {
        return Err(WhyBurn::Requested);
    }
    if *device != Device::flex() {
        return Err(WhyBurn::NotCpu);
    }
    let plan = model.plan().map_err(|_| WhyBurn::NoPlan)?;
    if crate::cpu::computes(&plan) {
        Ok(plan)
    } else {
        Err(WhyBurn::Activation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, MlpConfig, ModelKind};
    use crate::train::Optimizer;

    #[test]
    fn only_gelu_and_an_explicit_choice_send_a_cpu_run_to_burns_path() {
        let cpu = Device::flex();
        let why = |model: &ModelConfig, config: TrainConfig| {
            fused_path(model, &config, &cpu).map(|_| Engine::Fused)
        };
        let gelu = ModelConfig::Mlp(MlpConfig {
            activation: Activation::Gelu,
            ..MlpConfig::default()
        });
        let anything = TrainConfig {
            optimizer: Optimizer::AdamW { weight_decay: 0.05 },
            label_smoothing: 0.1,
            not_digits: 0.1,
            ..TrainConfig::default()
        };
        for kind in [
            ModelKind::Mlp,
            ModelKind::Lenet5,
            ModelKind::Cnn,
            ModelKind::CnnLarge,
        ] {
            assert_eq!(why(&kind.config(), anything.clone()), Ok(Engine::Fused));
        }
        assert_eq!(why(&gelu, TrainConfig::default()), Err(WhyBurn::Activation));
        let burn = TrainConfig {
            engine: EngineChoice::Burn,
            ..TrainConfig::default()
        };
        assert_eq!(why(&ModelConfig::default(), burn), Err(WhyBurn::Requested));
    }
}
