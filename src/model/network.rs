//! The Burn module of a plan: one network type for every architecture, built, run and read
//! back by walking its [`Plan`].

use std::collections::HashMap;

use burn::module::{ParamId, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{DropoutConfig, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::{Gradients, activation};

use super::ModelConfig;
use super::batch_norm::BatchNorm;
use super::layers::{Normalization, ParamIds, Reading, host};
use super::plan::{Activation, Layer, ParamSpec, Plan, Pooling};
use super::weights::{self, NamedTensor, Weights, WeightsError};

/// A layer with parameters, as Burn holds it. The plan's other layers (activations, pooling,
/// flattening, dropout) hold nothing and are applied as functions.
#[derive(Module, Debug)]
pub enum Trainable {
    Conv(Conv2d),
    Norm(BatchNorm),
    Linear(Linear),
}

/// A digit classifier: images in, ten logits out.
#[derive(Module, Debug)]
pub struct Model {
    /// One per plan layer that has parameters, in plan order.
    trainables: Vec<Trainable>,
    #[module(skip)]
    plan: Plan,
}

/// What flows from layer to layer.
enum Flowing {
    Maps(Tensor<4>),
    Features(Tensor<2>),
}

impl Model {
    /// A new, untrained model.
    ///
    /// # Panics
    /// If `config` does not describe a network: use [`Model::from_weights`] for configs
    /// that were read from a file.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Self {
        Self::from_weights(config, config.initial_weights(seed), device)
            .expect("freshly drawn weights fit their own architecture")
    }

    /// A model with the given weights (PyTorch's names and layouts), which must fit the
    /// architecture exactly: every tensor present, none left over.
    pub fn from_weights(
        config: &ModelConfig,
        mut weights: Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let plan = config.plan()?;
        let mut ids = ParamIds::default();
        let mut trainables = Vec::new();
        for layer in plan.layers() {
            let specs = layer.params();
            let trainable = match layer {
                Layer::Conv {
                    kernel,
                    padding,
                    bias,
                    ..
                } => {
                    // The bias takes its id first, as it did before the plan: optimizer records
                    // that Burn saved then are keyed by these ids.
                    let bias = match bias {
                        true => Some(ids.param(take(&mut weights, &specs[1], device)?)),
                        false => None,
                    };
                    let weight = ids.param(take(&mut weights, &specs[0], device)?);
                    let (k, p) = (*kernel, *padding);
                    Trainable::Conv(Conv2d {
                        weight,
                        bias,
                        stride: [1, 1],
                        kernel_size: [k, k],
                        dilation: [1, 1],
                        groups: 1,
                        padding: PaddingConfig2d::Explicit(p, p, p, p),
                    })
                }
                Layer::BatchNorm { .. } => Trainable::Norm(BatchNorm {
                    gamma: ids.param(take(&mut weights, &specs[0], device)?),
                    beta: ids.param(take(&mut weights, &specs[1], device)?),
                    running_mean: RunningState::new(take(&mut weights, &specs[2], device)?),
                    running_var: RunningState::new(take(&mut weights, &specs[3], device)?),
                }),
                Layer::Linear { .. } => {
                    // PyTorch keeps `[out, in]`; Burn's `Linear` multiplies by `[in, out]`.
                    let weight: Tensor<2> = take(&mut weights, &specs[0], device)?;
                    Trainable::Linear(Linear {
                        weight: ids.param(weight.transpose()),
                        bias: Some(ids.param(take(&mut weights, &specs[1], device)?)),
                    })
                }
                Layer::Activation(_) | Layer::Pool(_) | Layer::Flatten | Layer::Dropout(_) => {
                    continue;
                }
            };
            trainables.push(trainable);
        }
        weights::ensure_consumed(&weights)?;
        Ok(Self { trainables, plan })
    }

    /// The plan the model was built from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `[N, 1, 28, 28]` images with pixels in [0, 1] to `[N, 10]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = Flowing::Maps(Normalization::apply(self.plan.normalization(), images));
        let mut trainables = self.trainables.iter();
        for layer in self.plan.layers() {
            x = match (layer, x) {
                (Layer::Conv { .. }, Flowing::Maps(x)) => match trainables.next() {
                    Some(Trainable::Conv(conv)) => Flowing::Maps(conv.forward(x)),
                    _ => unreachable!("the trainables were built from this plan"),
                },
                (Layer::BatchNorm { .. }, Flowing::Maps(x)) => match trainables.next() {
                    Some(Trainable::Norm(norm)) => Flowing::Maps(norm.forward(x)),
                    _ => unreachable!("the trainables were built from this plan"),
                },
                (Layer::Linear { .. }, Flowing::Features(x)) => match trainables.next() {
                    Some(Trainable::Linear(linear)) => Flowing::Features(linear.forward(x)),
                    _ => unreachable!("the trainables were built from this plan"),
                },
                (Layer::Activation(f), Flowing::Maps(x)) => Flowing::Maps(activate(*f, x)),
                (Layer::Activation(f), Flowing::Features(x)) => Flowing::Features(activate(*f, x)),
                (Layer::Pool(pooling), Flowing::Maps(x)) => Flowing::Maps(pool(*pooling, x)),
                (Layer::Flatten, Flowing::Maps(x)) => Flowing::Features(x.flatten(1, 3)),
                (Layer::Dropout(p), Flowing::Maps(x)) => {
                    Flowing::Maps(DropoutConfig::new(*p).init().forward(x))
                }
                (Layer::Dropout(p), Flowing::Features(x)) => {
                    Flowing::Features(DropoutConfig::new(*p).init().forward(x))
                }
                _ => unreachable!("a plan's layers fit what the one before gives"),
            };
        }
        match x {
            Flowing::Features(logits) => logits,
            Flowing::Maps(_) => unreachable!("a plan ends in logits"),
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.devices()
            .into_iter()
            .next()
            .expect("a model has at least one parameter")
    }

    /// The model compiled for digits' CPU engine, if it lives on the CPU and the engine
    /// computes its plan.
    pub(crate) fn compiled_for_cpu(&self) -> Option<crate::cpu::Network> {
        let on_cpu = self.device() == Device::flex();
        (on_cpu && crate::cpu::computes(&self.plan)).then(|| {
            crate::cpu::Network::new(&self.plan, self.weights())
                .expect("a model's own weights fit its plan")
        })
    }

    /// The weights, in PyTorch's layout and names.
    pub fn weights(&self) -> Weights {
        self.read(Reading::Values)
    }

    /// The gradients of each weight after a backward pass, named as [`Model::weights`].
    pub fn gradients(&self, grads: &Gradients) -> Weights {
        self.read(Reading::Gradients(grads))
    }

    /// Tensors kept per parameter (an optimizer's moments, by parameter id in Burn's layout)
    /// under the parameters' names, in PyTorch's layout; ids of no parameter are left out.
    pub(crate) fn per_parameter(&self, tensors: &HashMap<ParamId, TensorData>) -> Weights {
        self.read(Reading::PerParameter(tensors))
    }

    fn read(&self, reading: Reading) -> Weights {
        let mut out = Weights::new();
        let specs = self
            .plan
            .layers()
            .iter()
            .map(Layer::params)
            .filter(|specs| !specs.is_empty());
        for (specs, trainable) in specs.zip(&self.trainables) {
            for (spec, tensor) in specs.into_iter().zip(trainable.tensors(reading)) {
                if let Some(tensor) = tensor {
                    out.insert(spec.name, tensor);
                }
            }
        }
        out
    }
}

impl Trainable {
    /// The layer's tensors in state-dict order (see [`Layer::params`]); `None` where the
    /// reading has nothing, as running statistics have no gradient.
    fn tensors(&self, reading: Reading) -> Vec<Option<NamedTensor>> {
        match self {
            Trainable::Conv(conv) => {
                let mut tensors = vec![reading.read(&conv.weight).map(host)];
                if let Some(bias) = &conv.bias {
                    tensors.push(reading.read(bias).map(host));
                }
                tensors
            }
            Trainable::Norm(norm) => {
                let running = |state: &RunningState<Tensor<1>>| match reading {
                    Reading::Values => Some(host(state.value())),
                    Reading::Gradients(_) | Reading::PerParameter(_) => None,
                };
                vec![
                    reading.read(&norm.gamma).map(host),
                    reading.read(&norm.beta).map(host),
                    running(&norm.running_mean),
                    running(&norm.running_var),
                ]
            }
            Trainable::Linear(linear) => vec![
                reading.read(&linear.weight).map(|w| host(w.transpose())),
                linear.bias.as_ref().and_then(|b| reading.read(b).map(host)),
            ],
        }
    }
}

/// Takes the tensor `spec` names out of `weights`, checking its shape.
fn take<const D: usize>(
    weights: &mut Weights,
    spec: &ParamSpec,
    device: &Device,
) -> Result<Tensor<D>, WeightsError> {
    let shape: [usize; D] = spec
        .shape
        .clone()
        .try_into()
        .expect("a plan gives each tensor the rank its layer uses");
    let values = weights::take(weights, &spec.name, &shape)?;
    Ok(Tensor::<D>::from_data(
        TensorData::new(values, shape),
        device,
    ))
}

fn activate<const D: usize>(activation: Activation, x: Tensor<D>) -> Tensor<D> {
    match activation {
        Activation::Relu => activation::relu(x),
        Activation::Sigmoid => activation::sigmoid(x),
        Activation::Tanh => activation::tanh(x),
        Activation::Gelu => activation::gelu(x),
    }
}

fn pool(pooling: Pooling, x: Tensor<4>) -> Tensor<4> {
    match pooling {
        Pooling::Max => MaxPool2dConfig::new([2, 2])
            .with_strides([2, 2])
            .init()
            .forward(x),
        Pooling::Average => AvgPool2dConfig::new([2, 2])
            .with_strides([2, 2])
            .init()
            .forward(x),
    }
}
