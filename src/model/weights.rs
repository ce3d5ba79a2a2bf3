//! Named weights in PyTorch's layout, and their safetensors files.
//!
//! digits stores every model under the names and layouts PyTorch would give it (for the
//! tutorial: `hidden1.weight` of shape `[128, 784]`, ...), so a run's weights load into the
//! tutorial's `Net` and a PyTorch state dict loads into digits without a conversion table.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// One tensor: its shape and its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every tensor of a model, by name.
pub type Weights = BTreeMap<String, NamedTensor>;

/// Every way a weights file can be wrong.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file")]
    Format {
        path: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{path}: '{name}' is not an int64 scalar")]
    NotACounter { path: String, name: String },
    #[error("{path}: tensor '{name}' is {dtype}, but digits reads float32 weights")]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error("the weights have no tensor '{name}' (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error("tensor '{name}' has shape {found:?}, but the architecture needs {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor '{name}' is not part of this architecture")]
    UnexpectedTensor { name: String },
    #[error("tensor '{name}' holds a value that is not finite")]
    NotFinite { name: String },
    #[error("the architecture is invalid")]
    Architecture(#[from] super::plan::PlanError),
    #[error("cannot encode weights")]
    Encode(#[source] safetensors::SafeTensorError),
}

/// Reads the float32 tensors of a safetensors file whose names start with `prefix` (the
/// prefix is removed), e.g. `init.` in a reference file; `""` takes every tensor.
pub fn read_safetensors(path: &Path, prefix: &str) -> Result<Weights, WeightsError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: display.clone(),
        source,
    })?;
    from_safetensors_bytes(&bytes, prefix, &display)
}

/// As [`read_safetensors`], from bytes; `origin` names them in errors.
pub fn from_safetensors_bytes(
    bytes: &[u8],
    prefix: &str,
    origin: &str,
) -> Result<Weights, WeightsError> {
    select_from_safetensors_bytes(bytes, origin, |name| name.strip_prefix(prefix))
}

/// The float32 tensors of a safetensors file that `select` gives a name to (`None` skips a
/// tensor, whatever its dtype).
pub fn select_from_safetensors_bytes(
    bytes: &[u8],
    origin: &str,
    select: impl Fn(&str) -> Option<&str>,
) -> Result<Weights, WeightsError> {
    let file = deserialize(bytes, origin)?;
    let mut weights = Weights::new();
    for (name, view) in file.tensors() {
        let Some(short) = select(&name) else {
            continue;
        };
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::Dtype {
                path: origin.to_string(),
                name,
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        weights.insert(
            short.to_string(),
            NamedTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(weights)
}

/// Encodes weights as a safetensors file.
pub fn to_safetensors_bytes(weights: &Weights) -> Result<Vec<u8>, WeightsError> {
    to_safetensors_bytes_with_counters(weights, &[])
}

/// Encodes weights, plus int64 scalars such as PyTorch's `num_batches_tracked` or an
/// optimizer's step count, as a safetensors file.
pub fn to_safetensors_bytes_with_counters(
    weights: &Weights,
    counters: &[(String, i64)],
) -> Result<Vec<u8>, WeightsError> {
    to_safetensors_bytes_with_metadata(weights, counters, None)
}

/// As [`to_safetensors_bytes_with_counters`], with string `metadata` in the header's
/// `__metadata__` (what a file knows about itself beyond its tensors).
pub fn to_safetensors_bytes_with_metadata(
    weights: &Weights,
    counters: &[(String, i64)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let encode_error = WeightsError::Encode;
    let floats: Vec<Vec<u8>> = weights
        .values()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let integers: Vec<[u8; 8]> = counters.iter().map(|(_, v)| v.to_le_bytes()).collect();
    let mut views = Vec::with_capacity(weights.len() + counters.len());
    for ((name, t), raw) in weights.iter().zip(&floats) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), raw).map_err(encode_error)?;
        views.push((name.clone(), view));
    }
    for ((name, _), raw) in counters.iter().zip(&integers) {
        let view = TensorView::new(Dtype::I64, vec![], raw).map_err(encode_error)?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, metadata).map_err(encode_error)
}

/// Reads the int64 scalar `name` of a safetensors file, if it has one.
pub fn read_counter(bytes: &[u8], name: &str, origin: &str) -> Result<Option<i64>, WeightsError> {
    let file = deserialize(bytes, origin)?;
    let Ok(view) = file.tensor(name) else {
        return Ok(None);
    };
    <[u8; 8]>::try_from(view.data())
        .map(|b| Some(i64::from_le_bytes(b)))
        .map_err(|_| WeightsError::NotACounter {
            path: origin.to_string(),
            name: name.to_string(),
        })
}

fn deserialize<'a>(bytes: &'a [u8], origin: &str) -> Result<SafeTensors<'a>, WeightsError> {
    SafeTensors::deserialize(bytes).map_err(|source| WeightsError::Format {
        path: origin.to_string(),
        source,
    })
}

/// Takes the tensor `name` out of `weights`, checking its shape and values.
pub fn take(weights: &mut Weights, name: &str, shape: &[usize]) -> Result<Vec<f32>, WeightsError> {
    let tensor = weights
        .remove(name)
        .ok_or_else(|| WeightsError::MissingTensor {
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
    if tensor.shape != shape {
        return Err(WeightsError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            found: tensor.shape,
        });
    }
    if tensor.values.iter().any(|v| !v.is_finite()) {
        return Err(WeightsError::NotFinite {
            name: name.to_string(),
        });
    }
    Ok(tensor.values)
}

/// Refuses weights that still hold tensors after a model took its own.
pub fn ensure_consumed(weights: &Weights) -> Result<(), WeightsError> {
    match weights.keys().next() {
        Some(name) => Err(WeightsError::UnexpectedTensor { name: name.clone() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip() {
        let mut weights = Weights::new();
        weights.insert(
            "a.weight".into(),
            NamedTensor {
                shape: vec![2, 3],
                values: vec![1.0, -2.0, 3.5, 0.0, 1e-7, 9.0],
            },
        );
        weights.insert(
            "a.bias".into(),
            NamedTensor {
                shape: vec![2],
                values: vec![0.25, -0.5],
            },
        );
        let bytes = to_safetensors_bytes(&weights).unwrap();
        assert_eq!(from_safetensors_bytes(&bytes, "", "mem").unwrap(), weights);
        let only_a = from_safetensors_bytes(&bytes, "a.", "mem").unwrap();
        assert_eq!(only_a.keys().collect::<Vec<_>>(), ["bias", "weight"]);
    }

    #[test]
    fn garbage_is_not_a_safetensors_file() {
        let err = from_safetensors_bytes(b"not a tensor file", "", "x.safetensors").unwrap_err();
        assert!(matches!(err, WeightsError::Format { .. }));
        assert!(err.to_string().contains("x.safetensors"));
    }

    #[test]
    fn take_checks_name_shape_and_values() {
        let mut weights = Weights::new();
        weights.insert(
            "w".into(),
            NamedTensor {
                shape: vec![2],
                values: vec![1.0, f32::NAN],
            },
        );
        weights.insert(
            "v".into(),
            NamedTensor {
                shape: vec![3],
                values: vec![0.0; 3],
            },
        );
        assert!(matches!(
            take(&mut weights, "missing", &[1]),
            Err(WeightsError::MissingTensor { .. })
        ));
        assert!(matches!(
            take(&mut weights, "v", &[4]),
            Err(WeightsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            take(&mut weights, "w", &[2]),
            Err(WeightsError::NotFinite { .. })
        ));
    }
}
