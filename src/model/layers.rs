//! What every architecture shares: building layers from named PyTorch-layout tensors, reading
//! them back (as values or as gradients), PyTorch's initialisation, and input normalisation.

use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::Gradients;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::weights::{self, ArchitectureError, NamedTensor, Weights, WeightsError};

/// Gives parameters ids in the order a model builds them, rather than random ones, so that a
/// saved optimizer state (keyed by id) finds its parameters again when a run is resumed.
#[derive(Default)]
pub(crate) struct ParamIds(u64);

impl ParamIds {
    pub fn param<const D: usize>(&mut self, tensor: Tensor<D>) -> Param<Tensor<D>> {
        let mut param = Param::from_tensor(tensor);
        param.id = ParamId::from(self.0);
        self.0 += 1;
        param
    }
}

/// Whether a walk over a model reads its parameters, their gradients or what an optimizer keeps
/// for each: one walk, and so one naming, serves saving the weights, comparing gradients with
/// PyTorch's and saving an optimizer's moments.
#[derive(Clone, Copy)]
pub(crate) enum Reading<'a> {
    Values,
    Gradients(&'a Gradients),
    /// A tensor per parameter id, in Burn's layout.
    PerParameter(&'a HashMap<ParamId, TensorData>),
}

impl Reading<'_> {
    pub fn read<const D: usize>(self, param: &Param<Tensor<D>>) -> Option<Tensor<D>> {
        match self {
            Reading::Values => Some(param.val()),
            Reading::Gradients(grads) => param.val().grad(grads),
            Reading::PerParameter(tensors) => tensors
                .get(&param.id)
                .map(|data| Tensor::from_data(data.clone(), &param.lazy_device())),
        }
    }

    /// Puts `tensor` (already in PyTorch's layout) into `out` under `name`, if present.
    pub fn insert<const D: usize>(self, out: &mut Weights, name: &str, tensor: Option<Tensor<D>>) {
        if let Some(tensor) = tensor {
            out.insert(name.to_string(), host(tensor));
        }
    }
}

/// A tensor copied to the host, with its shape.
pub(crate) fn host<const D: usize>(tensor: Tensor<D>) -> NamedTensor {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("model tensors are float32");
    NamedTensor { shape, values }
}

/// Takes `name` (of `shape`) out of `weights` as a tensor on `device`.
pub(crate) fn tensor<const D: usize>(
    weights: &mut Weights,
    name: &str,
    shape: [usize; D],
    device: &Device,
) -> Result<Tensor<D>, WeightsError> {
    let values = weights::take(weights, name, &shape)?;
    Ok(Tensor::<D>::from_data(
        TensorData::new(values, shape),
        device,
    ))
}

/// The fully connected layer `name` (`name.weight` `[out, in]`, `name.bias` `[out]`).
pub(crate) fn linear(
    weights: &mut Weights,
    name: &str,
    [inputs, outputs]: [usize; 2],
    ids: &mut ParamIds,
    device: &Device,
) -> Result<Linear, WeightsError> {
    let weight = tensor(
        weights,
        &format!("{name}.weight"),
        [outputs, inputs],
        device,
    )?;
    let bias = tensor(weights, &format!("{name}.bias"), [outputs], device)?;
    // PyTorch keeps `[out, in]`; Burn's `Linear` multiplies by `[in, out]`.
    Ok(Linear {
        weight: ids.param(weight.transpose()),
        bias: Some(ids.param(bias)),
    })
}

/// The inverse of [`linear`].
pub(crate) fn read_linear(layer: &Linear, name: &str, reading: Reading, out: &mut Weights) {
    let weight = reading.read(&layer.weight).map(|w| w.transpose());
    reading.insert(out, &format!("{name}.weight"), weight);
    if let Some(bias) = &layer.bias {
        reading.insert(out, &format!("{name}.bias"), reading.read(bias));
    }
}

/// Dropout with probability `p`, refused unless it is in [0, 1): a config read from disk may
/// hold anything, and Burn's own check would panic.
pub(crate) fn dropout(p: f64) -> Result<Dropout, WeightsError> {
    if !(0.0..1.0).contains(&p) {
        return Err(ArchitectureError::Dropout { p }.into());
    }
    Ok(DropoutConfig::new(p).init())
}

/// Draws fresh weights as PyTorch does for `nn.Linear` and `nn.Conv2d`: weight and bias
/// uniform in `±1/sqrt(fan_in)`, on the host from a seeded generator, so every backend starts
/// identically.
pub(crate) struct PyTorchInit {
    rng: ChaCha8Rng,
    pub weights: Weights,
}

impl PyTorchInit {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            weights: Weights::new(),
        }
    }

    /// `name.weight` of `weight_shape` (`[out, in, ...]`) and `name.bias` `[out]`.
    pub fn layer(&mut self, name: &str, weight_shape: Vec<usize>) {
        let fan_in: usize = weight_shape[1..].iter().product();
        let outputs = weight_shape[0];
        let bound = 1.0 / (fan_in as f32).sqrt();
        for (suffix, shape) in [("weight", weight_shape), ("bias", vec![outputs])] {
            let len = shape.iter().product();
            let values = (0..len)
                .map(|_| self.rng.random_range(-bound..bound))
                .collect();
            self.weights
                .insert(format!("{name}.{suffix}"), NamedTensor { shape, values });
        }
    }

    /// `name` filled with `value`.
    pub fn constant(&mut self, name: &str, len: usize, value: f32) {
        self.weights.insert(
            name.to_string(),
            NamedTensor {
                shape: vec![len],
                values: vec![value; len],
            },
        );
    }
}

/// Input standardisation, `(pixel - mean) / std`, done inside the model so that every caller
/// (eval, predict, serve, an exported file) feeds it plain [0, 1] pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: f32,
    pub std: f32,
}

impl Normalization {
    pub(crate) fn apply(normalization: Option<Self>, images: Tensor<4>) -> Tensor<4> {
        match normalization {
            Some(Self { mean, std }) => images.sub_scalar(mean).div_scalar(std),
            None => images,
        }
    }
}
