//! An optimizer's state for resuming, in one format whichever engine kept it: the moments under
//! PyTorch's names. Burn's optimizer record, keyed by parameter id, is converted to and from it
//! through the model, whose parameters get their ids in the order it builds them.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::store::RecordError;
use burn::tensor::{Bytes, Device, Tensor, TensorData};

use crate::model::{Model, ModelConfig, Weights, WeightsError, weights};

/// Adam's (and AdamW's) first moment, as PyTorch names it.
pub(crate) const EXP_AVG: &str = "exp_avg";
/// Adam's (and AdamW's) second moment.
pub(crate) const EXP_AVG_SQ: &str = "exp_avg_sq";
/// SGD's momentum.
pub(crate) const MOMENTUM_BUFFER: &str = "momentum_buffer";
/// The name of the step count in a saved state.
const STEP: &str = "step";

/// Where Burn's optimizer states keep each of PyTorch's moments (fields of `AdamState`,
/// `AdamWState` and `SgdState`, under the parameter's id).
const BURN_FIELDS: [(&str, &str); 3] = [
    ("momentum.moment_1", EXP_AVG),
    ("momentum.moment_2", EXP_AVG_SQ),
    ("momentum.velocity", MOMENTUM_BUFFER),
];
/// Adam's step count in Burn's record, one per parameter.
const BURN_STEP: &str = "momentum.time";
/// The rank of each parameter's state in Burn's record.
const BURN_RANK: &str = "__rank";

/// An optimizer's state as PyTorch names it: per parameter `{name}.exp_avg` and
/// `{name}.exp_avg_sq` (Adam and AdamW) or `{name}.momentum_buffer` (SGD with momentum), in
/// the parameter's PyTorch layout, and the steps Adam's bias correction counts (0 for SGD).
/// Plain SGD keeps no tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizerState {
    pub tensors: Weights,
    pub step: u64,
}

/// Every way an optimizer state can fail to convert to or from Burn's record.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerStateError {
    #[error("Burn's optimizer record cannot be encoded or decoded")]
    Pack(#[from] burn_pack::Error),
    #[error("Burn's optimizer cannot load the state")]
    Record(#[from] RecordError),
    #[error("Burn's optimizer record holds '{name}', which digits does not know")]
    UnknownField { name: String },
    #[error("Burn's optimizer record holds states for parameters the model lacks")]
    UnknownParameters,
    #[error("the moments do not fit the model")]
    Moments(#[from] WeightsError),
}

impl OptimizerState {
    /// The state as a safetensors file, with `step` as an int64 scalar.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        weights::to_safetensors_bytes_with_counters(
            &self.tensors,
            &[(STEP.to_string(), self.step as i64)],
        )
    }

    /// Reads a file written by [`OptimizerState::to_safetensors_bytes`]; `origin` names it in
    /// errors.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, WeightsError> {
        let step = weights::read_counter(bytes, STEP, origin)?.unwrap_or(0);
        let tensors = weights::select_from_safetensors_bytes(bytes, origin, |name| {
            (name != STEP).then_some(name)
        })?;
        Ok(Self {
            tensors,
            step: step.max(0) as u64,
        })
    }

    /// The moments of one kind (`exp_avg`, ...), under their parameters' names.
    pub(crate) fn moments(&self, kind: &str) -> Weights {
        self.tensors
            .iter()
            .filter_map(|(name, tensor)| {
                let parameter = name.strip_suffix(kind)?.strip_suffix('.')?;
                Some((parameter.to_string(), tensor.clone()))
            })
            .collect()
    }

    /// The moments of the given kinds, under their own names (`hidden1.weight.exp_avg`).
    pub(crate) fn of_kinds(&self, kinds: &[&str]) -> Weights {
        self.tensors
            .iter()
            .filter(|(name, _)| {
                kinds.iter().any(|kind| {
                    name.rsplit_once('.')
                        .is_some_and(|(_, suffix)| suffix == *kind)
                })
            })
            .map(|(name, tensor)| (name.clone(), tensor.clone()))
            .collect()
    }

    /// Adds moments of one kind, named after their parameters.
    pub(crate) fn insert_moments(&mut self, kind: &str, moments: Weights) {
        self.tensors.extend(
            moments
                .into_iter()
                .map(|(name, tensor)| (format!("{name}.{kind}"), tensor)),
        );
    }

    /// Converts Burn's optimizer record (burnpack bytes) for `model`.
    pub(crate) fn from_burn_record(
        bytes: Bytes,
        model: &Model,
    ) -> Result<Self, OptimizerStateError> {
        let reader = burn_pack::Reader::from_bytes(bytes)?;
        let step = reader
            .scalars()
            .iter()
            .filter(|(name, _)| name.ends_with(BURN_STEP))
            .filter_map(|(_, value)| u64::try_from(*value).ok())
            .max()
            .unwrap_or(0);
        let mut by_kind: BTreeMap<&str, HashMap<ParamId, TensorData>> = BTreeMap::new();
        for tensor in reader.into_tensors()? {
            let (name, dtype, shape, id, bytes) = tensor.into_parts()?;
            let field = id.and_then(|id| name.strip_prefix(&format!("{id}.")));
            let kind = BURN_FIELDS
                .iter()
                .find(|(burn, _)| Some(*burn) == field)
                .map(|(_, pytorch)| *pytorch);
            let (Some(kind), Some(id)) = (kind, id) else {
                return Err(OptimizerStateError::UnknownField { name });
            };
            by_kind.entry(kind).or_default().insert(
                ParamId::from(id),
                TensorData::from_bytes(bytes, shape, dtype),
            );
        }
        let mut state = Self {
            tensors: Weights::new(),
            step,
        };
        for (kind, by_id) in by_kind {
            let named = model.per_parameter(&by_id);
            if named.len() != by_id.len() {
                return Err(OptimizerStateError::UnknownParameters);
            }
            state.insert_moments(kind, named);
        }
        Ok(state)
    }

    /// Burn's optimizer record (burnpack bytes) for this state, for the model built from
    /// `config` and `weights` (which say where each moment belongs).
    pub(crate) fn to_burn_record(
        &self,
        config: &ModelConfig,
        weights: &Weights,
    ) -> Result<Bytes, OptimizerStateError> {
        let mut tensors = Vec::new();
        let mut scalars = BTreeMap::new();
        for (field, kind) in BURN_FIELDS {
            let moments = self.moments(kind);
            if moments.is_empty() {
                continue;
            }
            for (id, data) in by_parameter_id(config, weights, moments, kind)? {
                let id = id.val();
                let (bytes, shape, dtype) = data.into_parts();
                scalars.insert(format!("{id}.{BURN_RANK}"), shape.len().into());
                if kind == EXP_AVG {
                    scalars.insert(format!("{id}.{BURN_STEP}"), self.step.into());
                }
                tensors.push(burn_pack::Tensor::new(
                    format!("{id}.{field}"),
                    dtype,
                    shape,
                    Some(id),
                    bytes,
                ));
            }
        }
        let writer = scalars
            .iter()
            .fold(burn_pack::Writer::new(tensors), |writer, (name, value)| {
                writer.with_scalar(name, *value)
            });
        Ok(writer.into_bytes()?)
    }
}

/// `moments` (of one `kind`, under their parameters' PyTorch names and layouts) by parameter
/// id in Burn's layout: building the model with each parameter's moment in its place lets the
/// model's own walk put every moment where it belongs.
fn by_parameter_id(
    config: &ModelConfig,
    weights: &Weights,
    moments: Weights,
    kind: &str,
) -> Result<HashMap<ParamId, TensorData>, WeightsError> {
    let mut substituted = weights.clone();
    for (name, moment) in &moments {
        let Some(weight) = weights.get(name) else {
            return Err(WeightsError::UnexpectedTensor {
                name: format!("{name}.{kind}"),
            });
        };
        if weight.shape != moment.shape {
            return Err(WeightsError::ShapeMismatch {
                name: format!("{name}.{kind}"),
                expected: weight.shape.clone(),
                found: moment.shape.clone(),
            });
        }
        substituted.insert(name.clone(), moment.clone());
    }
    // On the autodiff device Burn tells parameters from buffers (batch norm's statistics).
    let model = Model::from_weights(config, substituted, &Device::flex().autodiff())?;
    let by_id = trainable_parameters(&model);
    let trainable = model.per_parameter(&by_id);
    if let Some((name, tensor)) = trainable
        .iter()
        .find(|(name, _)| !moments.contains_key(*name))
    {
        return Err(WeightsError::MissingTensor {
            name: format!("{name}.{kind}"),
            expected: tensor.shape.clone(),
        });
    }
    if let Some(name) = moments.keys().find(|name| !trainable.contains_key(*name)) {
        return Err(WeightsError::UnexpectedTensor {
            name: format!("{name}.{kind}"),
        });
    }
    Ok(by_id)
}

/// The values of the parameters training updates, by id, in Burn's layout.
fn trainable_parameters(model: &Model) -> HashMap<ParamId, TensorData> {
    struct Trainable(HashMap<ParamId, TensorData>);
    impl ModuleVisitor for Trainable {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0.insert(param.id, value.into_data());
            }
        }
    }
    let mut trainable = Trainable(HashMap::new());
    model.visit(&mut trainable);
    trainable.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Split};
    use crate::model::ModelKind;
    use crate::run::{RunConfig, RunDir};
    use crate::train::{Arithmetic, EngineChoice, OptimizerKind, TrainConfig, Trainer};

    /// A few AdamW steps of `model` on Burn's path.
    fn trained(model: ModelKind) -> Trainer {
        let model = model.config();
        let config = TrainConfig {
            optimizer: OptimizerKind::AdamW.into(),
            engine: EngineChoice::Burn,
            ..TrainConfig::default()
        };
        let weights = model.initial_weights(0);
        let mut trainer = Trainer::new(model, weights, config, &Device::flex()).unwrap();
        let data = Dataset::lite(Split::Train).truncated(16);
        for batch in data.batches(8, None) {
            trainer.step(&batch);
        }
        trainer
    }

    #[test]
    fn burns_record_converts_to_pytorchs_names_and_back() {
        // Batch norm's statistics are buffers, not parameters; LeNet-5's convolutions have
        // biases, built before their weights.
        for kind in [ModelKind::Cnn, ModelKind::Lenet5] {
            let trainer = trained(kind);
            let state = trainer.optimizer_state().unwrap();
            assert_eq!(state.step, 2);
            let weights = trainer.weights();
            let trainable: Vec<&String> = weights
                .keys()
                .filter(|name| !name.contains("running_"))
                .collect();
            for kind in [EXP_AVG, EXP_AVG_SQ] {
                let moments = state.moments(kind);
                assert_eq!(moments.keys().collect::<Vec<_>>(), trainable);
                for (name, moment) in moments {
                    assert_eq!(moment.shape, weights[&name].shape, "{name}");
                    assert!(moment.values.iter().any(|&v| v != 0.0), "{name}");
                }
            }

            let record = state
                .to_burn_record(trainer.model_config(), &weights)
                .unwrap();
            let Arithmetic::Burn { model, .. } = &trainer.arithmetic else {
                panic!("trained on Burn's path");
            };
            let again = OptimizerState::from_burn_record(record, model).unwrap();
            assert_eq!(again, state);
        }
    }

    #[test]
    fn a_run_saved_with_burns_own_record_resumes_from_it() {
        let trainer = trained(ModelKind::Cnn);
        let Arithmetic::Burn { optimizer, .. } = &trainer.arithmetic else {
            panic!("trained on Burn's path");
        };
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let config = RunConfig {
            digits_version: String::new(),
            model: trainer.model_config().clone(),
            train: Some(trainer.config().clone()),
            imported: None,
            dataset: crate::data::DatasetName::MnistLite,
            epochs_done: 0,
            batches_done: 2,
        };
        run.save(&config, &trainer.weights(), None, &[], false)
            .unwrap();
        let record = optimizer.into_bytes().unwrap();
        std::fs::write(dir.path().join("optimizer.bpk"), &record[..]).unwrap();

        let saved = run.optimizer_state().unwrap().unwrap();
        assert_eq!(saved, trainer.optimizer_state().unwrap());

        // The next save replaces Burn's record with the one format.
        run.save(&config, &trainer.weights(), Some(&saved), &[], false)
            .unwrap();
        assert!(!dir.path().join("optimizer.bpk").exists());
        assert_eq!(run.optimizer_state().unwrap(), Some(saved));
    }
}
