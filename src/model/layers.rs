//! What building and reading a Burn model needs besides the plan: deterministic parameter
//! ids, reading parameters as values, gradients or optimizer moments, and input normalisation.

use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};

use super::weights::NamedTensor;

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
