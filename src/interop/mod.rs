//! Weights in and out: PyTorch state dicts (`.safetensors`, `.pt`/`.pth`) and ONNX graphs.
//!
//! digits keeps every model under PyTorch's names and layouts (see [`crate::model`]), so a
//! state dict moves in and out without a conversion table; the only differences are
//! PyTorch's bookkeeping tensors, which this module adds and drops.

pub mod onnx;
pub mod onnx_import;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pytorch_reader::{DType, PytorchReader};

use crate::data::catalog::DigestKind;
use crate::data::download::hex_digest;
use crate::model::{Layer, ModelConfig, NamedTensor, Plan, Weights, WeightsError, weights};
use crate::run::Provenance;

/// PyTorch's `BatchNorm2d` counts its training batches in this int64 buffer; digits has no
/// use for it, but `load_state_dict` insists on it.
const BATCHES_TRACKED: &str = "num_batches_tracked";

/// Every way an import or export can fail.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PyTorch checkpoint: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(
        "{path}: tensor '{name}' is {dtype}, but digits reads float32 weights (convert with \
         `model.float()` before saving)"
    )]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error("{path} does not fit the architecture")]
    Mismatch {
        path: String,
        #[source]
        source: WeightsError,
    },
    #[error("{path}: unknown file type; expected .safetensors, .pt or .pth")]
    UnknownFormat { path: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Onnx(#[from] onnx_import::OnnxImportError),
}

/// What an import found.
#[derive(Debug)]
pub struct Imported {
    pub weights: Weights,
    /// Tensors that are not parameters (their last name part is not `weight`, `bias`,
    /// `running_mean` or `running_var`): saved outputs, metrics. Left out, and listed.
    pub ignored: Vec<String>,
    /// The file, its digest and the time of the import, for the run's config.
    pub provenance: Provenance,
}

/// What an ONNX import found: the network the graph describes, with its weights.
#[derive(Debug)]
pub struct ImportedNetwork {
    pub network: onnx_import::OnnxNetwork,
    /// The file, its digest and the time of the import, for the run's config.
    pub provenance: Provenance,
}

/// Reads an ONNX file as a network of digits' layers (see [`onnx_import`]).
pub fn import_onnx(path: &Path) -> Result<ImportedNetwork, InteropError> {
    let display = path.display().to_string();
    let read_error = |source| InteropError::Read {
        path: display.clone(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read_error)?;
    let network = onnx_import::read(&bytes, &display)?;
    let provenance = provenance(path).map_err(read_error)?;
    Ok(ImportedNetwork {
        network,
        provenance,
    })
}

/// Whether `name` names a parameter or buffer a model of digits could have.
fn is_parameter(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(last, "weight" | "bias" | "running_mean" | "running_var")
}

/// Reads a PyTorch state dict for `config`, checking every name, shape and dtype against it
/// and naming the first that does not fit.
pub fn import_state_dict(path: &Path, config: &ModelConfig) -> Result<Imported, InteropError> {
    let display = path.display().to_string();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (weights, mut ignored) = match extension.as_deref() {
        Some("safetensors") => read_safetensors_state_dict(path)?,
        Some("pt" | "pth") => read_pytorch(path)?,
        _ => return Err(InteropError::UnknownFormat { path: display }),
    };
    ignored.retain(|name| !name.ends_with(BATCHES_TRACKED));
    ignored.sort();
    // Building the model checks names and shapes in the architecture's order.
    let device = burn::tensor::Device::flex();
    crate::model::Model::from_weights(config, weights.clone(), &device).map_err(|source| {
        InteropError::Mismatch {
            path: display.clone(),
            source,
        }
    })?;
    let provenance = provenance(path).map_err(|source| InteropError::Read {
        path: display,
        source,
    })?;
    Ok(Imported {
        weights,
        ignored,
        provenance,
    })
}

/// Where `path` is, what it holds (its SHA-256) and when it was read: now.
fn provenance(path: &Path) -> std::io::Result<Provenance> {
    let sha256 = hex_digest(DigestKind::Sha256, &mut std::fs::File::open(path)?)?;
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    Ok(Provenance {
        file: file.display().to_string(),
        sha256,
        date: utc_timestamp(now),
    })
}

/// `seconds` after the Unix epoch as an RFC 3339 UTC timestamp (`2023-11-14T22:13:20Z`), by
/// Howard Hinnant's `civil_from_days`.
fn utc_timestamp(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let time = seconds % 86_400;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's leap day comes last.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// The parameters of a safetensors state dict, and the names of the other tensors.
fn read_safetensors_state_dict(path: &Path) -> Result<(Weights, Vec<String>), InteropError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InteropError::Read {
        path: display.clone(),
        source,
    })?;
    let ignored = std::cell::RefCell::new(Vec::new());
    let weights = weights::select_from_safetensors_bytes(&bytes, &display, |name| {
        if is_parameter(name) {
            Some(name)
        } else {
            ignored.borrow_mut().push(name.to_string());
            None
        }
    })
    .map_err(|err| match err {
        WeightsError::Dtype { path, name, dtype } => InteropError::Dtype { path, name, dtype },
        other => other.into(),
    })?;
    Ok((weights, ignored.into_inner()))
}

/// A `.pt`/`.pth` file written by `torch.save(model.state_dict())` (or a checkpoint holding
/// one under `state_dict` or `model_state_dict`), read without Python by Burn's reader.
fn read_pytorch(path: &Path) -> Result<(Weights, Vec<String>), InteropError> {
    let display = path.display().to_string();
    let open = |key: Option<&str>| match key {
        None => PytorchReader::new(path),
        Some(key) => PytorchReader::with_top_level_key(path, key),
    };
    let reader = [Some("state_dict"), Some("model_state_dict"), None]
        .into_iter()
        .map(open)
        .find(|r| r.as_ref().is_ok_and(|r| !r.is_empty()))
        .unwrap_or_else(|| open(None))
        .map_err(|err| InteropError::Checkpoint {
            path: display.clone(),
            reason: err.to_string(),
        })?;
    let mut weights = Weights::new();
    let mut ignored = Vec::new();
    for name in reader.keys() {
        if !is_parameter(&name) {
            ignored.push(name);
            continue;
        }
        let tensor = reader.get(&name).expect("the name came from the reader");
        if tensor.dtype() != DType::F32 {
            return Err(InteropError::Dtype {
                path: display,
                name,
                dtype: format!("{:?}", tensor.dtype()),
            });
        }
        let bytes = tensor.read().map_err(|source| InteropError::Read {
            path: display.clone(),
            source,
        })?;
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        weights.insert(
            name,
            NamedTensor {
                shape: tensor.shape().to_vec(),
                values,
            },
        );
    }
    Ok((weights, ignored))
}

/// A safetensors file that the equivalent PyTorch module loads with
/// `model.load_state_dict(safetensors.torch.load_file(FILE))`: digits' weights, plus a zero
/// `num_batches_tracked` for each batch norm.
pub fn export_state_dict(plan: &Plan, weights: &Weights) -> Result<Vec<u8>, InteropError> {
    let counters: Vec<(String, i64)> = plan
        .layers()
        .iter()
        .filter_map(|layer| match layer {
            Layer::BatchNorm { name, .. } => Some((format!("{name}.{BATCHES_TRACKED}"), 0)),
            _ => None,
        })
        .collect();
    Ok(weights::to_safetensors_bytes_with_counters(
        weights, &counters,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
