//! Weights in and out: PyTorch state dicts (safetensors, `torch.save` files of any age and
//! extension) and ONNX graphs.
//!
//! digits keeps every model under PyTorch's names and layouts (see [`crate::model`]), so a
//! state dict moves in and out without a conversion table. People's files name their layers
//! as they like, so an import reads the network off the tensors' shapes ([`infer`]) and
//! matches the file's tensors to the network's parameters by position.

pub mod infer;
pub mod onnx;
pub mod onnx_import;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pytorch_reader::{DType, PickleError, PytorchError, PytorchReader};

use crate::data::catalog::DigestKind;
use crate::data::download::hex_digest;
use crate::model::{
    Activation, CnnConfig, Layer, LayersConfig, MlpConfig, ModelConfig, NamedTensor, Normalization,
    Plan, Weights, WeightsError, weights,
};
use crate::run::Provenance;
use infer::{InferError, TensorShape};

/// PyTorch's `BatchNorm2d` counts its training batches in this int64 buffer; digits has no
/// use for it, but `load_state_dict` insists on it.
const BATCHES_TRACKED: &str = "num_batches_tracked";

/// The safetensors metadata keys under which export writes the input normalisation, so that
/// an export -> import round trip keeps it.
const MEAN_KEY: &str = "digits.normalization.mean";
const STD_KEY: &str = "digits.normalization.std";

/// The keys under which training scripts save the state dict inside a checkpoint dict
/// (`torch.save({'epoch': e, 'state_dict': model.state_dict(), ...})`), or prefix its names
/// (`module.` from `nn.DataParallel`), in the order they are tried.
const WRAPPER_KEYS: [&str; 9] = [
    "state_dict",
    "model_state_dict",
    "model_state",
    "model",
    "net",
    "network",
    "module",
    "weights",
    "params",
];

/// Every way an import or export can fail.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PyTorch checkpoint")]
    Checkpoint {
        path: String,
        #[source]
        source: PytorchError,
    },
    #[error(
        "{path} holds a whole model pickled before PyTorch 1.6, which only Python can rebuild; \
         in Python, load it and save its weights: `torch.save(model.state_dict(), 'weights.pt')`"
    )]
    LegacyModule { path: String },
    #[error(
        "{path} is an ONNX graph, not a state dict: `digits import` reads its network from the \
         graph"
    )]
    OnnxGraph { path: String },
    #[error("{path} starts like an ONNX graph but does not read as one, nor as a state dict")]
    DamagedOnnx { path: String },
    #[error(
        "{path}: tensor '{name}' is {dtype}, but digits reads float32 weights (convert with \
         `model.float()` before saving)"
    )]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
    #[error("{path}: safetensors metadata '{key}' is '{value}', not a normalisation")]
    Metadata {
        path: String,
        key: String,
        value: String,
    },
    #[error("--rename {old}=...: {path} has no tensor named {old} or under {old}.")]
    RenameUnused { path: String, old: String },
    #[error("--rename gives two tensors of {path} the name {name}")]
    RenameCollision { path: String, name: String },
    #[error("cannot tell which network {path} is for")]
    Infer {
        path: String,
        #[source]
        source: InferError,
    },
    #[error("{path} does not fit the network ({network}):\n{table}")]
    Misfit {
        path: String,
        network: String,
        table: String,
    },
    #[error("{path} does not fit the architecture")]
    Mismatch {
        path: String,
        #[source]
        source: WeightsError,
    },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Onnx(#[from] onnx_import::OnnxImportError),
}

/// How an import chooses the network the weights are for.
#[derive(Debug, Clone)]
pub enum Network {
    /// Read it off the tensors' shapes, with this activation (which no state dict holds).
    Infer(Activation),
    /// This one (`--arch`, `--hidden`, `--layers`).
    Given(ModelConfig),
}

/// What an import found.
#[derive(Debug)]
pub struct Imported {
    /// The network, with the input normalisation given or read from the file.
    pub config: ModelConfig,
    /// The weights under the network's (digits') names.
    pub weights: Weights,
    /// Tensors that are not parameters (their last name part is not `weight`, `bias`,
    /// `running_mean` or `running_var`), or outside the state dict of a checkpoint: saved
    /// outputs, metrics, optimizer state. Left out, and listed.
    pub ignored: Vec<String>,
    /// The file, its digest, the time of the import and the file's own names.
    pub provenance: Provenance,
    /// The network read off the tensors, when it was inferred.
    pub inferred: Option<Inferred>,
    /// Whether the normalisation came from the file's metadata (a digits export).
    pub normalization_from_file: bool,
}

/// A network read off a file's tensors, in `--layers` text form.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub text: String,
    /// Networks that fit the shapes as well, but pad their convolutions unlike each other.
    pub alternatives: Vec<String>,
}

/// A file's parameters in natural name order, and what else it held.
struct StateDict {
    tensors: Vec<(String, NamedTensor)>,
    ignored: Vec<String>,
    normalization: Option<Normalization>,
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

/// Reads a PyTorch state dict for `config`, matching its tensors to the network's parameters
/// by name, else by position, and checking every shape and dtype.
pub fn import_state_dict(path: &Path, config: &ModelConfig) -> Result<Imported, InteropError> {
    import(path, &Network::Given(config.clone()), &[], None)
}

/// Reads the state dict in `path` (any format [`read_state_dict`] knows) for the network
/// `network` chooses. `renames` (`OLD`, `NEW`) rename a tensor or every tensor under a module
/// before anything else; `normalization`, if given, is the input normalisation the weights
/// were trained with (else the file's metadata says, or none).
pub fn import(
    path: &Path,
    network: &Network,
    renames: &[(String, String)],
    normalization: Option<Normalization>,
) -> Result<Imported, InteropError> {
    let display = path.display().to_string();
    let mut state = read_state_dict(path)?;
    // Every rename applies to the file's own names, all at once, so `A=B` with `B=A` swaps.
    let mut used = vec![false; renames.len()];
    for (name, _) in &mut state.tensors {
        let renamed = renames.iter().enumerate().find_map(|(i, (old, new))| {
            let rest = if name == old {
                String::new()
            } else {
                format!(".{}", name.strip_prefix(&format!("{old}."))?)
            };
            used[i] = true;
            Some(format!("{new}{rest}"))
        });
        if let Some(renamed) = renamed {
            *name = renamed;
        }
    }
    if let Some(i) = used.iter().position(|&u| !u) {
        return Err(InteropError::RenameUnused {
            path: display,
            old: renames[i].0.clone(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((name, _)) = state
        .tensors
        .iter()
        .find(|(name, _)| !seen.insert(name.clone()))
    {
        return Err(InteropError::RenameCollision {
            path: display,
            name: name.clone(),
        });
    }
    state
        .tensors
        .sort_by(|(a, _), (b, _)| infer::natural_order(a, b));
    let shapes: Vec<TensorShape> = state
        .tensors
        .iter()
        .map(|(name, t)| TensorShape {
            name: name.clone(),
            shape: t.shape.clone(),
        })
        .collect();
    let (mut config, inferred) = match network {
        Network::Given(config) => (config.clone(), None),
        Network::Infer(activation) => {
            infer_config(&shapes, *activation).map_err(|source| InteropError::Infer {
                path: display.clone(),
                source,
            })?
        }
    };
    let normalization_from_file = normalization.is_none() && state.normalization.is_some();
    if let Some(normalization) = normalization.or(state.normalization) {
        *config.normalization_mut() = Some(normalization);
    }
    let plan = config.plan().map_err(WeightsError::from)?;
    let pairs = match same_names(&plan, &shapes) {
        Some(pairs) => pairs,
        None => {
            let ordered = infer::file_modules(&shapes)
                .map_or_else(|_| shapes.clone(), |m| infer::network_order(&m, &shapes));
            infer::match_by_position(&plan, &ordered).map_err(|table| InteropError::Misfit {
                path: display.clone(),
                network: config.describe(),
                table,
            })?
        }
    };
    let mut tensors: HashMap<String, NamedTensor> = state.tensors.into_iter().collect();
    let mut weights = Weights::new();
    let mut names = BTreeMap::new();
    for (ours, theirs) in pairs {
        // Names are unique (renames that collide were refused), so each is paired once.
        let Some(tensor) = tensors.remove(&theirs) else {
            return Err(InteropError::RenameCollision {
                path: display,
                name: theirs,
            });
        };
        if ours != theirs {
            names.insert(ours.clone(), theirs);
        }
        weights.insert(ours, tensor);
    }
    let mut ignored = state.ignored;
    ignored.retain(|name| !name.ends_with(BATCHES_TRACKED));
    ignored.sort_by(|a, b| infer::natural_order(a, b));
    // Building the model checks what shapes cannot: that every value is finite.
    let device = burn::tensor::Device::flex();
    crate::model::Model::from_weights(&config, weights.clone(), &device).map_err(|source| {
        InteropError::Mismatch {
            path: display.clone(),
            source,
        }
    })?;
    let mut provenance = provenance(path).map_err(|source| InteropError::Read {
        path: display,
        source,
    })?;
    provenance.names = names;
    Ok(Imported {
        config,
        weights,
        ignored,
        provenance,
        inferred,
        normalization_from_file,
    })
}

/// The pairs (plan name, file name) when the file has exactly the plan's names and shapes:
/// files digits exported, and the tutorial's.
fn same_names(plan: &Plan, file: &[TensorShape]) -> Option<Vec<(String, String)>> {
    let fits = plan.params().count() == file.len()
        && plan
            .params()
            .all(|p| file.iter().any(|t| t.name == p.name && t.shape == p.shape));
    fits.then(|| plan.params().map(|p| (p.name.clone(), p.name)).collect())
}

/// The network in digits' vocabulary that fits the file's tensors (see [`infer::choose`]).
/// When it is one of digits' own (the tutorial's MLP with any widths, LeNet-5, the CNNs), that
/// config, so the run is described and exported as digits' own.
fn infer_config(
    shapes: &[TensorShape],
    activation: Activation,
) -> Result<(ModelConfig, Option<Inferred>), InferError> {
    let modules = infer::file_modules(shapes)?;
    let (text, alternatives) = infer::choose(infer::candidates(&modules, activation)?)?;
    let layers = LayersConfig::parse(&text).expect("candidates are parsed before they are offered");
    let plan = layers
        .plan()
        .expect("candidates are planned before they are offered");
    let hidden: Vec<usize> = plan
        .layers()
        .iter()
        .filter_map(|layer| match layer {
            Layer::Linear { outputs, .. } => Some(*outputs),
            _ => None,
        })
        .collect();
    let mut own = [
        ModelConfig::Mlp(MlpConfig {
            hidden: hidden[..hidden.len() - 1].to_vec(),
            ..MlpConfig::default()
        }),
        ModelConfig::Cnn(CnnConfig::lenet5()),
        ModelConfig::Cnn(CnnConfig::small()),
        ModelConfig::Cnn(CnnConfig::large()),
    ];
    for config in &mut own {
        match config {
            ModelConfig::Mlp(mlp) => mlp.activation = activation,
            ModelConfig::Cnn(cnn) => cnn.activation = activation,
            ModelConfig::Layers(_) => {}
        }
    }
    let config = own
        .into_iter()
        .find(|config| {
            config
                .plan()
                .is_ok_and(|own| infer::same_network(&own, &plan))
        })
        .unwrap_or(ModelConfig::Layers(layers));
    Ok((config, Some(Inferred { text, alternatives })))
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
        names: BTreeMap::new(),
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

/// What a file's first bytes say it is.
#[derive(Debug, PartialEq)]
enum Format {
    /// An 8-byte little-endian header length, then the JSON header's `{`.
    Safetensors,
    /// A protobuf `ModelProto`, whose first field is `ir_version` (field 1, varint: `0x08`).
    Onnx,
    /// Anything else is left to Burn's reader, which knows torch's zip files (`PK`), legacy
    /// pickles, tar files and plain pickles, and says when it is none of them.
    Pytorch,
}

fn sniff(header: &[u8]) -> Format {
    let json_length = header.first_chunk::<8>().map(|b| u64::from_le_bytes(*b));
    if json_length.is_some_and(|len| len < 100_000_000) && header.get(8) == Some(&b'{') {
        Format::Safetensors
    } else if header.first() == Some(&0x08) && header.get(1).is_some_and(|&v| v < 0x80) {
        Format::Onnx
    } else {
        Format::Pytorch
    }
}

/// The parameters of the file in `path`, whatever its format (sniffed from its content, not
/// its extension), and whatever checkpoint dict holds them.
fn read_state_dict(path: &Path) -> Result<StateDict, InteropError> {
    let display = path.display().to_string();
    let read_error = |source| InteropError::Read {
        path: display.clone(),
        source,
    };
    let mut header = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(9).read_to_end(&mut header))
        .map_err(read_error)?;
    let mut state = match sniff(&header) {
        Format::Safetensors => read_safetensors_state_dict(path)?,
        Format::Onnx => {
            let bytes = std::fs::read(path).map_err(read_error)?;
            return Err(match onnx_import::is_onnx(&bytes) {
                true => InteropError::OnnxGraph { path: display },
                false => InteropError::DamagedOnnx { path: display },
            });
        }
        Format::Pytorch => read_pytorch(path)?,
    };
    let (parameters, others): (Vec<_>, Vec<_>) = std::mem::take(&mut state.tensors)
        .into_iter()
        .partition(|(name, _)| is_parameter(name));
    state.tensors = parameters;
    state
        .ignored
        .extend(others.into_iter().map(|(name, _)| name));
    Ok(state)
}

/// The float32 tensors of a safetensors file, and the normalisation its metadata records.
fn read_safetensors_state_dict(path: &Path) -> Result<StateDict, InteropError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InteropError::Read {
        path: display.clone(),
        source,
    })?;
    // Only parameters are read: a tensor of another dtype that is none (a step counter) is
    // left out rather than refused.
    let weights = weights::select_from_safetensors_bytes(&bytes, &display, |name| {
        is_parameter(name).then_some(name)
    })
    .map_err(|err| match err {
        WeightsError::Dtype { path, name, dtype } => InteropError::Dtype { path, name, dtype },
        other => other.into(),
    })?;
    let metadata = safetensors::SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, metadata)| metadata.metadata().clone())
        .unwrap_or_default();
    let number = |key: &str| -> Result<Option<f32>, InteropError> {
        metadata
            .get(key)
            .map(|value| {
                value
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| InteropError::Metadata {
                        path: display.clone(),
                        key: key.into(),
                        value: value.clone(),
                    })
            })
            .transpose()
    };
    let normalization = match (number(MEAN_KEY)?, number(STD_KEY)?) {
        (Some(mean), Some(std)) => Some(Normalization { mean, std }),
        _ => None,
    };
    let mut tensors: Vec<(String, NamedTensor)> = weights.into_iter().collect();
    let all: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .map(|file| file.names().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let ignored = all
        .into_iter()
        .filter(|name| !tensors.iter().any(|(kept, _)| kept == name))
        .collect();
    tensors.sort_by(|(a, _), (b, _)| infer::natural_order(a, b));
    Ok(StateDict {
        tensors,
        ignored,
        normalization,
    })
}

/// A file `torch.save` wrote, of any PyTorch version and extension (`.pt`, `.pth`,
/// `.pth.tar`, `.ckpt`), read without Python by Burn's reader: a state dict, a whole module
/// saved since PyTorch 1.6, or a checkpoint dict holding either under one of
/// [`WRAPPER_KEYS`].
fn read_pytorch(path: &Path) -> Result<StateDict, InteropError> {
    let display = path.display().to_string();
    // Kept until every tensor is read: the reader reads tensors from it lazily.
    let mut repacked = None;
    let opened = match PytorchReader::new(path) {
        Err(PytorchError::Zip(err)) => match without_zip64_trailer(path) {
            Ok(Some(copy)) => {
                let reader = PytorchReader::new(copy.path());
                repacked = Some(copy);
                reader.map_err(|_| PytorchError::Zip(err))
            }
            _ => Err(PytorchError::Zip(err)),
        },
        other => other,
    };
    let reader = opened.map_err(|err| match err {
        PytorchError::Pickle(PickleError::InvalidData(reason))
            if reason.starts_with("storage persistent id has 4 fields") =>
        {
            InteropError::LegacyModule {
                path: display.clone(),
            }
        }
        source => InteropError::Checkpoint {
            path: display.clone(),
            source,
        },
    })?;
    let mut names = reader.keys();
    names.sort_by(|a, b| infer::natural_order(a, b));
    let wrapper = WRAPPER_KEYS.into_iter().find(|key| {
        names.iter().any(|name| {
            name.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('.') && is_parameter(rest))
        })
    });
    let mut tensors = Vec::new();
    let mut ignored = Vec::new();
    for name in names {
        let short = match wrapper {
            Some(key) => name
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('.')),
            None => Some(name.as_str()),
        };
        let Some(short) = short.filter(|short| is_parameter(short)) else {
            ignored.push(name);
            continue;
        };
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
        tensors.push((
            short.to_string(),
            NamedTensor {
                shape: tensor.shape().to_vec(),
                values,
            },
        ));
    }
    drop(repacked);
    Ok(StateDict {
        tensors,
        ignored,
        normalization: None,
    })
}

/// A temporary copy of the zip file `path` without its ZIP64 end records, when it has them
/// but its plain end record needs none: the copy `zip` 9.8 reads right.
///
/// torch (through miniz) ends every file with a ZIP64 end record and locator (76 bytes)
/// between the central directory and the plain end record, even when no field overflows.
/// The `zip` crate then takes the central directory to start 76 bytes before where it does
/// (end record offset minus directory size); when the first directory entry is itself 76
/// bytes long (46 plus a 30-byte name: `STEM/data.pkl` with a 21-character stem), a second
/// entry's signature sits there, the guess is accepted, and every entry is read 76 bytes off
/// ("Invalid Central Directory header"). Without the ZIP64 records the guess is right.
fn without_zip64_trailer(path: &Path) -> std::io::Result<Option<tempfile::NamedTempFile>> {
    const END: &[u8] = b"PK\x05\x06";
    const ZIP64_END: &[u8] = b"PK\x06\x06";
    let bytes = std::fs::read(path)?;
    let Some(end) = bytes
        .len()
        .checked_sub(22)
        .filter(|&end| &bytes[end..end + 4] == END)
    else {
        return Ok(None);
    };
    let field =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (size, offset) = (field(end + 12), field(end + 16));
    let directory_end = offset as usize + size as usize;
    let zip64 = size != u32::MAX
        && offset != u32::MAX
        && directory_end + 4 <= end
        && &bytes[directory_end..directory_end + 4] == ZIP64_END;
    if !zip64 {
        return Ok(None);
    }
    let mut copy = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut copy, &bytes[..directory_end])?;
    std::io::Write::write_all(&mut copy, &bytes[end..])?;
    Ok(Some(copy))
}

/// A safetensors file that the equivalent PyTorch module loads with
/// `model.load_state_dict(safetensors.torch.load_file(FILE))`: digits' weights, plus a zero
/// `num_batches_tracked` for each batch norm, and the input normalisation in the metadata
/// (which `load_file` ignores and a digits import reads back).
pub fn export_state_dict(plan: &Plan, weights: &Weights) -> Result<Vec<u8>, InteropError> {
    let counters: Vec<(String, i64)> = plan
        .layers()
        .iter()
        .filter_map(|layer| match layer {
            Layer::BatchNorm { name, .. } => Some((format!("{name}.{BATCHES_TRACKED}"), 0)),
            _ => None,
        })
        .collect();
    let metadata = plan.normalization().map(|n| {
        HashMap::from([
            (MEAN_KEY.to_string(), n.mean.to_string()),
            (STD_KEY.to_string(), n.std.to_string()),
        ])
    });
    Ok(weights::to_safetensors_bytes_with_metadata(
        weights, &counters, metadata,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes_not_their_extension() {
        assert_eq!(sniff(b"\x40\0\0\0\0\0\0\0{\"w\""), Format::Safetensors);
        assert_eq!(sniff(b"\x08\x07\x12\x07pytorch"), Format::Onnx);
        assert_eq!(sniff(b"PK\x03\x04\x14\0\0\0\0"), Format::Pytorch);
        // A legacy pickle starts with pickle protocol 2.
        assert_eq!(sniff(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9"), Format::Pytorch);
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
