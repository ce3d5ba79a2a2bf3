//! ONNX import: a graph of the layers digits has, read back into a [`LayersConfig`] and
//! weights under PyTorch's names and layouts.
//!
//! The protobuf is read by hand, as [`super::onnx`] writes it: an import needs a handful of
//! message types (model, graph, node, attribute, tensor, value info), and their wire format is
//! a few lines, where a protobuf crate would need code generation and several more crates to
//! build. Field numbers are those of `onnx.proto`.
//!
//! The graph must be one chain of layers from a `[N, 1, 28, 28]`, `[N, 28, 28]` or `[N, 784]`
//! image input to the output: anything else is refused, naming the operators or the node that
//! does not fit.

use std::collections::HashMap;

use crate::model::plan::BATCH_NORM_EPSILON;
use crate::model::{
    Activation, LayerConfig, LayersConfig, NamedTensor, Normalization, PlanError, Pooling, Weights,
    WeightsError, weights,
};

/// The oldest opset read: the one PyTorch's exporter offers first, and the first where
/// BatchNormalization, Flatten and Reshape take their present form.
const MIN_OPSET: i64 = 9;
const FLOAT: i64 = 1;
const INT32: i64 = 6;
const INT64: i64 = 7;
/// A dimension of a Shape that digits does not work out: any Reshape to it is refused.
const UNKNOWN_DIMENSION: i64 = i64::MIN;

/// The operators a graph may hold; ops outside this list are named in the refusal.
const SUPPORTED_OPS: [&str; 24] = [
    "Constant",
    "Identity",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Concat",
    "Sub",
    "Div",
    "Conv",
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "MaxPool",
    "AveragePool",
    "Flatten",
    "Reshape",
    "Dropout",
    "Gemm",
    "MatMul",
    "Add",
    "Softmax",
    "LogSoftmax",
];

/// Why an ONNX file is not a network digits can run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxImportError {
    #[error("{origin} is not an ONNX model: {reason}")]
    Malformed { origin: String, reason: String },
    #[error(
        "{origin} uses ONNX opset {opset}; digits reads opset {MIN_OPSET} and later (upgrade it \
         with onnx.version_converter)"
    )]
    Opset { origin: String, opset: i64 },
    #[error(
        "{origin} uses operators digits has no layer for: {}; digits reads Conv, Gemm, MatMul + \
         Add, Relu, Sigmoid, Tanh, Gelu, MaxPool, AveragePool, BatchNormalization, Flatten, \
         Reshape (its shape a constant, or the batch size by Shape, Gather, Unsqueeze and \
         Concat), Dropout, a final Softmax or LogSoftmax, and a Sub and Div of the input",
        ops.join(", ")
    )]
    UnsupportedOps { origin: String, ops: Vec<String> },
    #[error("{origin}: node '{node}' ({op}) {reason}")]
    Node {
        origin: String,
        node: String,
        op: String,
        reason: String,
    },
    #[error("{origin}: {reason}")]
    Graph { origin: String, reason: String },
    #[error("{origin}: tensor '{name}' is {data_type}, but digits reads float32 weights")]
    DataType {
        origin: String,
        name: String,
        data_type: String,
    },
    #[error("{origin} does not describe a network digits can run")]
    Plan {
        origin: String,
        #[source]
        source: PlanError,
    },
    #[error("{origin}: the weights do not fit the layers the graph describes")]
    Weights {
        origin: String,
        #[source]
        source: WeightsError,
    },
}

/// A network read from an ONNX file.
#[derive(Debug)]
pub struct OnnxNetwork {
    /// The layers and input normalisation, named as digits names its own layers.
    pub layers: LayersConfig,
    pub weights: Weights,
    /// `Softmax` or `LogSoftmax` when the graph ended in one: left out, since digits takes
    /// the log-softmax of the logits itself (so the winning digit, the probabilities and the
    /// cross-entropy are the same).
    pub final_softmax: Option<&'static str>,
}

// --- The protobuf wire format -------------------------------------------------------------

/// One field of a protobuf message (fixed 64-bit fields are skipped: ONNX uses them only for
/// doubles, which digits does not read).
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or("the data ends inside a number")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number longer than 10 bytes".into())
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], String> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|&end| end <= bytes.len())
        .ok_or("a field runs past the end of its message")?;
    let slice = &bytes[*pos..end];
    *pos = end;
    Ok(slice)
}

/// The fields of one message, in order.
fn fields(bytes: &[u8]) -> Result<Vec<(u32, Field<'_>)>, String> {
    let mut pos = 0;
    let mut fields = Vec::new();
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or("a field numbered 0 or too high")?;
        let field = match key & 7 {
            0 => Field::Varint(varint(bytes, &mut pos)?),
            1 => take(bytes, &mut pos, 8).map(|_| Field::Fixed64)?,
            2 => {
                let len = varint(bytes, &mut pos)?;
                Field::Bytes(take(bytes, &mut pos, len)?)
            }
            5 => {
                let raw = take(bytes, &mut pos, 4)?;
                Field::Fixed32(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
            }
            other => return Err(format!("wire type {other}, which ONNX does not use")),
        };
        fields.push((number, field));
    }
    Ok(fields)
}

impl<'a> Field<'a> {
    fn int(self) -> Result<i64, String> {
        match self {
            Field::Varint(v) => Ok(v as i64),
            _ => Err("an integer field holds something else".into()),
        }
    }

    fn bytes(self) -> Result<&'a [u8], String> {
        match self {
            Field::Bytes(b) => Ok(b),
            _ => Err("a message or string field holds something else".into()),
        }
    }

    fn string(self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }

    fn float(self) -> Result<f32, String> {
        match self {
            Field::Fixed32(bits) => Ok(f32::from_bits(bits)),
            _ => Err("a float field holds something else".into()),
        }
    }

    /// One or, packed, several values of a repeated integer field.
    fn ints(self, into: &mut Vec<i64>) -> Result<(), String> {
        match self {
            Field::Bytes(packed) => {
                let mut pos = 0;
                while pos < packed.len() {
                    into.push(varint(packed, &mut pos)? as i64);
                }
            }
            single => into.push(single.int()?),
        }
        Ok(())
    }

    /// One or, packed, several values of a repeated float field.
    fn floats(self, into: &mut Vec<f32>) -> Result<(), String> {
        match self {
            Field::Bytes(packed) if packed.len() % 4 == 0 => into.extend(le_f32s(packed)),
            Field::Bytes(_) => return Err("packed floats of a length not a multiple of 4".into()),
            single => into.push(single.float()?),
        }
        Ok(())
    }
}

fn le_f32s(raw: &[u8]) -> impl Iterator<Item = f32> + '_ {
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A tensor's values: floats for weights, integers for shapes.
#[derive(Debug, Clone, PartialEq)]
enum Data {
    Float(Vec<f32>),
    Int(Vec<i64>),
    /// Another element type, by its ONNX number.
    Other(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    name: String,
    dims: Vec<i64>,
    data: Data,
}

fn tensor(bytes: &[u8]) -> Result<Tensor, String> {
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0);
    let (mut floats, mut ints, mut raw) = (Vec::new(), Vec::new(), None);
    for (number, field) in fields(bytes)? {
        match number {
            1 => field.ints(&mut dims)?,
            2 => data_type = field.int()?,
            4 => field.floats(&mut floats)?,
            5 | 7 => field.ints(&mut ints)?,
            8 => name = field.string()?,
            9 => raw = Some(field.bytes()?),
            14 if field.int()? == 1 => {
                return Err(format!(
                    "tensor '{name}' is kept in an external file; digits reads self-contained \
                     ONNX files (save with onnx.save(model, f, save_as_external_data=False))"
                ));
            }
            _ => {}
        }
    }
    let data = match (data_type, raw) {
        (FLOAT, Some(raw)) => Data::Float(le_f32s(raw).collect()),
        (FLOAT, None) => Data::Float(floats),
        (INT64, Some(raw)) => Data::Int(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect(),
        ),
        (INT32, Some(raw)) => Data::Int(
            raw.chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes(b.try_into().expect("chunks of 4"))))
                .collect(),
        ),
        (INT64 | INT32, None) => Data::Int(ints),
        (other, _) => Data::Other(other),
    };
    let expected = dims.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    let len = match &data {
        Data::Float(v) => Some(v.len()),
        Data::Int(v) => Some(v.len()),
        Data::Other(_) => None,
    };
    match (expected, len) {
        (Some(expected), Some(len)) if expected != len => Err(format!(
            "tensor '{name}' of shape {dims:?} holds {len} values"
        )),
        (None, _) => Err(format!("tensor '{name}' has shape {dims:?}")),
        _ => Ok(Tensor { name, dims, data }),
    }
}

#[derive(Debug, Default)]
struct Attribute {
    name: String,
    f: Option<f32>,
    i: Option<i64>,
    s: Option<String>,
    t: Option<Tensor>,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

fn attribute(bytes: &[u8]) -> Result<Attribute, String> {
    let mut attribute = Attribute::default();
    for (number, field) in fields(bytes)? {
        match number {
            1 => attribute.name = field.string()?,
            2 => attribute.f = Some(field.float()?),
            3 => attribute.i = Some(field.int()?),
            4 => attribute.s = Some(field.string()?),
            5 => attribute.t = Some(tensor(field.bytes()?)?),
            7 => field.floats(&mut attribute.floats)?,
            8 => field.ints(&mut attribute.ints)?,
            _ => {}
        }
    }
    Ok(attribute)
}

#[derive(Debug, Default)]
struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    name: String,
    op: String,
    domain: String,
    attributes: Vec<Attribute>,
}

fn node(bytes: &[u8]) -> Result<Node, String> {
    let mut node = Node::default();
    for (number, field) in fields(bytes)? {
        match number {
            1 => node.inputs.push(field.string()?),
            2 => node.outputs.push(field.string()?),
            3 => node.name = field.string()?,
            4 => node.op = field.string()?,
            5 => node.attributes.push(attribute(field.bytes()?)?),
            7 => node.domain = field.string()?,
            _ => {}
        }
    }
    Ok(node)
}

/// One dimension of a declared shape: a size, or `None` for a symbolic or unknown one.
type Dim = Option<i64>;

/// A graph input or output: its name, and its shape if declared.
#[derive(Debug)]
struct ValueInfo {
    name: String,
    dims: Option<Vec<Dim>>,
}

fn value_info(bytes: &[u8]) -> Result<ValueInfo, String> {
    let mut info = ValueInfo {
        name: String::new(),
        dims: None,
    };
    let only = |bytes, wanted| -> Result<Vec<Field<'_>>, String> {
        Ok(fields(bytes)?
            .into_iter()
            .filter(|&(number, _)| number == wanted)
            .map(|(_, field)| field)
            .collect())
    };
    for (number, field) in fields(bytes)? {
        match number {
            1 => info.name = field.string()?,
            // TypeProto.tensor_type, then TypeProto.Tensor.shape, then its dims.
            2 => {
                for tensor_type in only(field.bytes()?, 1)? {
                    for shape in only(tensor_type.bytes()?, 2)? {
                        let mut dims = Vec::new();
                        for dim in only(shape.bytes()?, 1)? {
                            dims.push(
                                only(dim.bytes()?, 1)?
                                    .first()
                                    .map(|d| d.int())
                                    .transpose()?,
                            );
                        }
                        info.dims = Some(dims);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<Node>,
    initializers: Vec<Tensor>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
}

/// The default-domain opset and the graph of a ModelProto.
fn model(bytes: &[u8]) -> Result<(Option<i64>, Graph), String> {
    let (mut opset, mut graph) = (None, None);
    for (number, field) in fields(bytes)? {
        match number {
            7 => {
                let mut g = Graph::default();
                for (number, field) in fields(field.bytes()?)? {
                    match number {
                        1 => g.nodes.push(node(field.bytes()?)?),
                        5 => g.initializers.push(tensor(field.bytes()?)?),
                        11 => g.inputs.push(value_info(field.bytes()?)?),
                        12 => g.outputs.push(value_info(field.bytes()?)?),
                        _ => {}
                    }
                }
                graph = Some(g);
            }
            8 => {
                let (mut domain, mut version) = (String::new(), 0);
                for (number, field) in fields(field.bytes()?)? {
                    match number {
                        1 => domain = field.string()?,
                        2 => version = field.int()?,
                        _ => {}
                    }
                }
                if domain.is_empty() || domain == "ai.onnx" {
                    opset = Some(version);
                }
            }
            _ => {}
        }
    }
    Ok((opset, graph.ok_or("it holds no graph")?))
}

/// Whether `path` is an ONNX file: named `.onnx`, or with content that [`is_onnx`]. A file
/// that cannot be read is not, so that the import that follows says why.
pub fn is_onnx_file(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        || std::fs::read(path).is_ok_and(|bytes| is_onnx(&bytes))
}

/// Whether `bytes` look like an ONNX model: a protobuf message whose fields all read and that
/// holds a graph. Safetensors, zip and pickle files fail on their first bytes.
pub fn is_onnx(bytes: &[u8]) -> bool {
    fields(bytes).is_ok_and(|fields| {
        fields
            .iter()
            .any(|&(number, field)| number == 7 && matches!(field, Field::Bytes(_)))
    })
}

// --- From the graph to layers ---------------------------------------------------------------

/// A layer read from the graph, with its tensors by PyTorch suffix (`weight`, `bias`, ...). It
/// is named once the whole graph is read, since the last fully connected layer is `output`.
type FoundLayer = (LayerConfig, Vec<(&'static str, NamedTensor)>);

/// The walk along the chain of nodes from the image input to the output.
struct Walk<'a> {
    origin: &'a str,
    opset: i64,
    /// Initializers and Constant outputs, by name.
    constants: HashMap<String, Tensor>,
    /// The value the next layer must take: the output of the chain so far.
    current: String,
    /// The batch size the input declares, if fixed, which a Reshape may name.
    batch: Option<i64>,
    flat: bool,
    layers: Vec<FoundLayer>,
    mean: Option<f32>,
    std: Option<f32>,
    /// Set right after a MatMul: an Add of a constant then is its bias.
    awaiting_bias: bool,
    final_softmax: Option<&'static str>,
}

/// Reads the ONNX model in `bytes` (named `origin` in messages) as layers and weights.
pub fn read(bytes: &[u8], origin: &str) -> Result<OnnxNetwork, OnnxImportError> {
    let malformed = |reason| OnnxImportError::Malformed {
        origin: origin.into(),
        reason,
    };
    let (opset, graph) = model(bytes).map_err(malformed)?;
    let opset = opset.ok_or_else(|| malformed("it declares no ONNX opset".into()))?;
    if opset < MIN_OPSET {
        return Err(OnnxImportError::Opset {
            origin: origin.into(),
            opset,
        });
    }
    let mut unsupported: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| {
            !matches!(n.domain.as_str(), "" | "ai.onnx") || !SUPPORTED_OPS.contains(&n.op.as_str())
        })
        .map(|n| match n.domain.as_str() {
            "" | "ai.onnx" => n.op.clone(),
            domain => format!("{domain}.{}", n.op),
        })
        .collect();
    unsupported.sort();
    unsupported.dedup();
    if !unsupported.is_empty() {
        return Err(OnnxImportError::UnsupportedOps {
            origin: origin.into(),
            ops: unsupported,
        });
    }
    let graph_error = |reason: String| OnnxImportError::Graph {
        origin: origin.into(),
        reason,
    };
    let constants: HashMap<String, Tensor> = graph
        .initializers
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    // Before IR version 4 the weights were graph inputs too; the image is the input that is not.
    let images: Vec<&ValueInfo> = graph
        .inputs
        .iter()
        .filter(|input| !constants.contains_key(&input.name))
        .collect();
    let [input] = images.as_slice() else {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        return Err(graph_error(format!(
            "digits reads graphs with one input, the images; this one has {names:?}"
        )));
    };
    let (batch, flat) = match input.dims.as_deref() {
        // Without a channel axis, only a Flatten or Reshape can come first, which gives the
        // same 784 features as from [N, 1, 28, 28].
        Some([batch, Some(1), Some(28), Some(28)] | [batch, Some(28), Some(28)]) => (*batch, false),
        Some([batch, Some(784)]) => (*batch, true),
        dims => {
            return Err(graph_error(format!(
                "input '{}' has shape {}; digits reads images of shape [N, 1, 28, 28], \
                 [N, 28, 28] or [N, 784]",
                input.name,
                show_dims(dims)
            )));
        }
    };
    let [output] = graph.outputs.as_slice() else {
        return Err(graph_error(format!(
            "digits reads graphs with one output, the logits; this one has {}",
            graph.outputs.len()
        )));
    };
    let mut walk = Walk {
        origin,
        opset,
        constants,
        current: input.name.clone(),
        batch,
        flat,
        layers: Vec::new(),
        mean: None,
        std: None,
        awaiting_bias: false,
        final_softmax: None,
    };
    if flat {
        walk.layers.push((LayerConfig::Flatten, Vec::new()));
    }
    for node in &graph.nodes {
        walk.node(node)?;
    }
    if walk.current != output.name {
        return Err(graph_error(format!(
            "the output '{}' is not the end of the chain of layers from the input (which ends \
             at '{}')",
            output.name, walk.current
        )));
    }
    walk.finish()
}

fn show_dims(dims: Option<&[Dim]>) -> String {
    let Some(dims) = dims else {
        return "undeclared".into();
    };
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

impl Node {
    fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attribute(name).and_then(|a| a.i).unwrap_or(default)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attribute(name).and_then(|a| a.f).unwrap_or(default)
    }

    fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attribute(name).map(|a| a.ints.as_slice())
    }
}

impl Walk<'_> {
    fn refuse(&self, node: &Node, reason: impl Into<String>) -> OnnxImportError {
        OnnxImportError::Node {
            origin: self.origin.into(),
            node: if node.name.is_empty() {
                node.outputs.first().cloned().unwrap_or_default()
            } else {
                node.name.clone()
            },
            op: node.op.clone(),
            reason: reason.into(),
        }
    }

    /// The constant `name`, as floats.
    fn floats(&self, node: &Node, name: &str) -> Result<(&[i64], &[f32]), OnnxImportError> {
        let tensor = self
            .constants
            .get(name)
            .ok_or_else(|| self.refuse(node, format!("takes '{name}', which is not a constant")))?;
        match &tensor.data {
            Data::Float(values) => Ok((&tensor.dims, values)),
            Data::Int(_) => Err(self.data_type(name, "an integer tensor")),
            Data::Other(number) => Err(self.data_type(name, &format!("of ONNX type {number}"))),
        }
    }

    fn data_type(&self, name: &str, data_type: &str) -> OnnxImportError {
        OnnxImportError::DataType {
            origin: self.origin.into(),
            name: name.into(),
            data_type: data_type.into(),
        }
    }

    /// The `index`th input as a weight tensor of `rank` dimensions, under PyTorch's shape.
    fn weight(
        &self,
        node: &Node,
        index: usize,
        rank: usize,
    ) -> Result<NamedTensor, OnnxImportError> {
        let name = node
            .inputs
            .get(index)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| self.refuse(node, format!("lacks input {}", index + 1)))?;
        let (dims, values) = self.floats(node, name)?;
        if dims.len() != rank {
            return Err(self.refuse(
                node,
                format!("takes '{name}' of shape {dims:?}, not of rank {rank}"),
            ));
        }
        Ok(NamedTensor {
            shape: dims.iter().map(|&d| d as usize).collect(),
            values: values.to_vec(),
        })
    }

    /// A single number: a normalisation's mean or standard deviation.
    fn scalar(&self, node: &Node, name: &str) -> Result<f32, OnnxImportError> {
        match self.floats(node, name)? {
            (_, [value]) => Ok(*value),
            (dims, _) => Err(self.refuse(
                node,
                format!(
                    "takes '{name}' of shape {dims:?}; digits standardises the input by one \
                     mean and one standard deviation"
                ),
            )),
        }
    }

    fn push(&mut self, layer: LayerConfig, tensors: Vec<(&'static str, NamedTensor)>) {
        self.layers.push((layer, tensors));
    }

    fn node(&mut self, node: &Node) -> Result<(), OnnxImportError> {
        let output = node.outputs.first().cloned().unwrap_or_default();
        if node.op == "Constant" {
            let tensor = self.constant_value(node)?;
            self.constants.insert(output, tensor);
            return Ok(());
        }
        let takes_current = |i: usize| node.inputs.get(i) == Some(&self.current);
        if matches!(
            node.op.as_str(),
            "Shape" | "Gather" | "Unsqueeze" | "Concat"
        ) {
            let tensor = self.shape_arithmetic(node, takes_current(0))?;
            self.constants.insert(output, tensor);
            return Ok(());
        }
        if node.op == "Identity" && !takes_current(0) {
            let aliased = node
                .inputs
                .first()
                .and_then(|i| self.constants.get(i))
                .cloned();
            let tensor = aliased
                .ok_or_else(|| self.refuse(node, "does not continue the chain of layers"))?;
            self.constants.insert(output, tensor);
            return Ok(());
        }
        // Add takes the layer's output as either operand.
        let other = match (node.op.as_str(), takes_current(0), takes_current(1)) {
            (_, true, _) => node.inputs.get(1).cloned(),
            ("Add", false, true) => node.inputs.first().cloned(),
            _ => {
                return Err(self.refuse(
                    node,
                    format!(
                        "does not take '{}', the output of the layers before it: digits reads \
                         one chain of layers",
                        self.current
                    ),
                ));
            }
        };
        if let Some(softmax) = self.final_softmax {
            return Err(self.refuse(
                node,
                format!("follows a {softmax}, which digits reads only at the end"),
            ));
        }
        let awaiting_bias = std::mem::take(&mut self.awaiting_bias);
        let only_flatten_before = self.layers.iter().all(|(l, _)| *l == LayerConfig::Flatten);
        match node.op.as_str() {
            "Identity" => {}
            "Sub" | "Div" if !only_flatten_before => {
                return Err(self.refuse(
                    node,
                    "comes after a layer; digits reads a Sub and Div only as the input's \
                     standardisation",
                ));
            }
            "Sub" if self.mean.is_some() => {
                return Err(self.refuse(node, "subtracts from the input a second time"));
            }
            "Div" if self.std.is_some() => {
                return Err(self.refuse(node, "divides the input a second time"));
            }
            "Sub" => {
                let mean = self.scalar(node, &other.unwrap_or_default())?;
                // (x / std - m) is (x - m * std) / std.
                self.mean = Some(mean * self.std.unwrap_or(1.0));
            }
            "Div" => self.std = Some(self.scalar(node, &other.unwrap_or_default())?),
            "Conv" => self.conv(node)?,
            "BatchNormalization" => self.batch_norm(node)?,
            "Relu" => self.activation(Activation::Relu),
            "Sigmoid" => self.activation(Activation::Sigmoid),
            "Tanh" => self.activation(Activation::Tanh),
            "Gelu" => match node.attribute("approximate").and_then(|a| a.s.as_deref()) {
                None | Some("none") => self.activation(Activation::Gelu),
                Some(other) => {
                    return Err(self.refuse(
                        node,
                        format!("approximates ({other}); digits' GELU is the exact one"),
                    ));
                }
            },
            "MaxPool" => self.pool(node, Pooling::Max)?,
            "AveragePool" => self.pool(node, Pooling::Average)?,
            "Flatten" => {
                if node.int("axis", 1) != 1 {
                    return Err(self.refuse(node, "flattens from an axis other than 1"));
                }
                self.flatten();
            }
            "Reshape" => self.reshape(node, &other.unwrap_or_default())?,
            "Dropout" => self.dropout(node)?,
            "Gemm" => self.gemm(node)?,
            "MatMul" => {
                let weight = self.weight(node, 1, 2)?;
                let outputs = weight.shape[1];
                self.linear(transposed(weight), zeros(outputs));
                self.awaiting_bias = true;
            }
            "Add" => {
                let bias = other.unwrap_or_default();
                let (_, values) = self.floats(node, &bias)?;
                let values = values.to_vec();
                match self.layers.last_mut() {
                    Some((LayerConfig::Linear { units, .. }, tensors))
                        if awaiting_bias && values.len() == *units =>
                    {
                        tensors[1].1.values = values;
                    }
                    _ => {
                        return Err(self.refuse(
                            node,
                            "is not the bias of a MatMul; digits reads an Add only there",
                        ));
                    }
                }
            }
            "Softmax" | "LogSoftmax" => {
                if !matches!(
                    node.int("axis", if self.opset < 13 { 1 } else { -1 }),
                    1 | -1
                ) {
                    return Err(self.refuse(node, "is not over the classes (axis 1)"));
                }
                self.final_softmax = Some(if node.op == "Softmax" {
                    "Softmax"
                } else {
                    "LogSoftmax"
                });
            }
            op => unreachable!("{op} passed the check of supported operators"),
        }
        self.current = output;
        Ok(())
    }

    /// The nodes that compute a Reshape's target from the batch size, as
    /// `x.view(x.size(0), -1)` exports: Shape of the layers' output, whose first dimension
    /// becomes 0 ("keep this dimension" to Reshape) and the others unknown; Gather, Unsqueeze
    /// and Concat of such integer constants. A shape with an unknown dimension left in it
    /// is refused by the Reshape.
    fn shape_arithmetic(&self, node: &Node, of_layers: bool) -> Result<Tensor, OnnxImportError> {
        let name = node.outputs.first().cloned().unwrap_or_default();
        let ints = |i: usize| match node.inputs.get(i).and_then(|n| self.constants.get(n)) {
            Some(Tensor {
                dims,
                data: Data::Int(values),
                ..
            }) if dims.len() <= 1 => Some(values.clone()),
            _ => None,
        };
        let refuse = || {
            self.refuse(
                node,
                "is not arithmetic on the batch size; digits reads Shape, Gather, Unsqueeze and \
                 Concat only to compute a Reshape's target",
            )
        };
        let (dims, values) = match node.op.as_str() {
            "Shape" if of_layers && node.attribute("start").is_none() => {
                let rank = if self.flat { 2 } else { 4 };
                let mut values = vec![UNKNOWN_DIMENSION; rank];
                values[0] = 0;
                (vec![rank as i64], values)
            }
            "Gather" if node.int("axis", 0) == 0 => {
                let (data, indices) = ints(0).zip(ints(1)).ok_or_else(refuse)?;
                let scalar = self.constants[&node.inputs[1]].dims.is_empty();
                let picked = indices
                    .iter()
                    .map(|&i| {
                        data.get(usize::try_from(i.rem_euclid(data.len().max(1) as i64)).ok()?)
                            .copied()
                    })
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(refuse)?;
                let dims = if scalar {
                    vec![]
                } else {
                    vec![picked.len() as i64]
                };
                (dims, picked)
            }
            "Unsqueeze" => {
                let values = ints(0).ok_or_else(refuse)?;
                (vec![values.len() as i64], values)
            }
            "Concat" => {
                let parts: Option<Vec<Vec<i64>>> = (0..node.inputs.len()).map(ints).collect();
                let values = parts.ok_or_else(refuse)?.concat();
                (vec![values.len() as i64], values)
            }
            _ => return Err(refuse()),
        };
        Ok(Tensor {
            name,
            dims,
            data: Data::Int(values),
        })
    }

    /// A Constant node's value: a tensor, or one of the typed forms of opset 12 and later.
    fn constant_value(&self, node: &Node) -> Result<Tensor, OnnxImportError> {
        let name = node.outputs.first().cloned().unwrap_or_default();
        let from = |attribute: &Attribute| {
            let (dims, data) = match attribute.name.as_str() {
                "value" => return attribute.t.clone(),
                "value_float" => (vec![], Data::Float(vec![attribute.f?])),
                "value_int" => (vec![], Data::Int(vec![attribute.i?])),
                "value_floats" => (
                    vec![attribute.floats.len() as i64],
                    Data::Float(attribute.floats.clone()),
                ),
                "value_ints" => (
                    vec![attribute.ints.len() as i64],
                    Data::Int(attribute.ints.clone()),
                ),
                _ => return None,
            };
            Some(Tensor {
                name: name.clone(),
                dims,
                data,
            })
        };
        node.attributes.iter().find_map(from).ok_or_else(|| {
            self.refuse(
                node,
                "holds no value digits reads (a tensor, floats or integers)",
            )
        })
    }

    fn activation(&mut self, activation: Activation) {
        self.push(LayerConfig::Activation { activation }, Vec::new());
    }

    fn flatten(&mut self) {
        if !self.flat {
            self.flat = true;
            self.push(LayerConfig::Flatten, Vec::new());
        }
    }

    /// Attributes that must be all ones (strides, dilations) when present.
    fn ones(&self, node: &Node, names: &[&str]) -> Result<(), OnnxImportError> {
        for name in names {
            if let Some(values) = node.ints(name).filter(|v| v.iter().any(|&v| v != 1)) {
                return Err(self.refuse(
                    node,
                    format!("has {name} {values:?}; digits' layers have {name} 1"),
                ));
            }
        }
        Ok(())
    }

    fn conv(&mut self, node: &Node) -> Result<(), OnnxImportError> {
        let weight = self.weight(node, 1, 4)?;
        let [channels, _, kernel, width] = weight.shape[..] else {
            unreachable!("rank 4")
        };
        if kernel != width {
            return Err(self.refuse(
                node,
                format!("has a {kernel}x{width} kernel; digits' convolutions are square"),
            ));
        }
        self.ones(node, &["strides", "dilations"])?;
        if node.int("group", 1) != 1 {
            return Err(self.refuse(node, "is grouped; digits' convolutions take every channel"));
        }
        let pads = node.ints("pads").unwrap_or(&[]);
        let padding = match node.attribute("auto_pad").and_then(|a| a.s.as_deref()) {
            Some("SAME_UPPER" | "SAME_LOWER") if kernel % 2 == 1 => (kernel - 1) / 2,
            None | Some("NOTSET" | "VALID") if pads.iter().all(|&p| p == pads[0]) => {
                pads.first().map_or(0, |&p| p as usize)
            }
            _ => {
                return Err(self.refuse(
                    node,
                    format!("pads {pads:?}; digits pads all four sides alike"),
                ));
            }
        };
        let mut tensors = vec![("weight", weight)];
        let bias = node.inputs.get(2).is_some_and(|b| !b.is_empty());
        if bias {
            tensors.push(("bias", self.weight(node, 2, 1)?));
        }
        let name = String::new();
        self.push(
            LayerConfig::Conv {
                name,
                channels,
                kernel,
                padding,
                bias,
            },
            tensors,
        );
        Ok(())
    }

    /// Batch norm in inference form. ONNX files carry their own epsilon; one other than
    /// PyTorch's default is folded into the running variance, which is exact.
    fn batch_norm(&mut self, node: &Node) -> Result<(), OnnxImportError> {
        if node.int("training_mode", 0) != 0
            || node.int("spatial", 1) != 1
            || node.outputs.len() > 1
        {
            return Err(self.refuse(node, "is in training mode or not per channel"));
        }
        let [scale, shift, mean, variance] = [1, 2, 3, 4].map(|i| self.weight(node, i, 1));
        let mut variance = variance?;
        let epsilon = node.float("epsilon", BATCH_NORM_EPSILON as f32);
        if epsilon != BATCH_NORM_EPSILON as f32 {
            for v in &mut variance.values {
                *v = (f64::from(*v) + f64::from(epsilon) - BATCH_NORM_EPSILON) as f32;
            }
        }
        let tensors = vec![
            ("weight", scale?),
            ("bias", shift?),
            ("running_mean", mean?),
            ("running_var", variance),
        ];
        self.push(
            LayerConfig::BatchNorm {
                name: String::new(),
            },
            tensors,
        );
        Ok(())
    }

    fn pool(&mut self, node: &Node, pooling: Pooling) -> Result<(), OnnxImportError> {
        let unpadded = node.ints("pads").is_none_or(|p| p.iter().all(|&p| p == 0))
            && node
                .attribute("auto_pad")
                .and_then(|a| a.s.as_deref())
                .is_none_or(|s| s == "NOTSET" || s == "VALID");
        if node.ints("kernel_shape") != Some(&[2, 2])
            || node.ints("strides") != Some(&[2, 2])
            || !unpadded
            || node.int("ceil_mode", 0) != 0
        {
            return Err(self.refuse(
                node,
                "is not a 2x2 pooling with stride 2 and no padding, the only pooling digits has",
            ));
        }
        self.ones(node, &["dilations"])?;
        self.push(LayerConfig::Pool { pooling }, Vec::new());
        Ok(())
    }

    /// A reshape to `[batch, features]` is a flatten: the batch as -1, 0 (kept) or the fixed
    /// size the input declares. The features are checked by the next layer's weights.
    fn reshape(&mut self, node: &Node, shape: &str) -> Result<(), OnnxImportError> {
        let target =
            match self.constants.get(shape).map(|t| &t.data) {
                Some(Data::Int(values)) => values.clone(),
                _ => return Err(self.refuse(
                    node,
                    format!(
                        "takes its shape from '{shape}', which is not a constant list of integers"
                    ),
                )),
            };
        let batch_kept = |b: i64| b == -1 || b == 0 || Some(b) == self.batch;
        match target[..] {
            [b, f] if batch_kept(b) && (f > 0 || (f == -1 && b != -1)) => {
                self.flatten();
                Ok(())
            }
            _ => Err(self.refuse(
                node,
                format!("reshapes to {target:?}; digits reads a reshape to [batch, features] only"),
            )),
        }
    }

    fn dropout(&mut self, node: &Node) -> Result<(), OnnxImportError> {
        let ratio = if self.opset < 12 {
            node.float("ratio", 0.5)
        } else {
            match node.inputs.get(1).filter(|r| !r.is_empty()) {
                Some(ratio) => self.scalar(node, ratio)?,
                None => 0.5,
            }
        };
        if ratio > 0.0 {
            // The decimal the file's float stands for (0.3, not 0.30000001192092896), as the
            // config shows it: the shortest one that reads back as the same float.
            let p = ratio.to_string().parse().unwrap_or(f64::from(ratio));
            self.push(LayerConfig::Dropout { p }, Vec::new());
        }
        Ok(())
    }

    /// `Y = A B + C`: PyTorch's Linear with transB = 1; a weight stored `[in, out]` otherwise.
    fn gemm(&mut self, node: &Node) -> Result<(), OnnxImportError> {
        if node.int("transA", 0) != 0
            || node.float("alpha", 1.0) != 1.0
            || node.float("beta", 1.0) != 1.0
        {
            return Err(self.refuse(
                node,
                "transposes its input or scales; digits reads Gemm as a Linear layer (transA \
                 0, alpha and beta 1)",
            ));
        }
        let weight = self.weight(node, 1, 2)?;
        let weight = if node.int("transB", 0) == 1 {
            weight
        } else {
            transposed(weight)
        };
        let outputs = weight.shape[0];
        let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
            None => zeros(outputs),
            Some(name) => match self.floats(node, name)? {
                (_, values) if values.len() == outputs => NamedTensor {
                    shape: vec![outputs],
                    values: values.to_vec(),
                },
                (dims, _) => {
                    return Err(self.refuse(
                        node,
                        format!("has a bias of shape {dims:?} for {outputs} units"),
                    ));
                }
            },
        };
        self.linear(weight, bias);
        Ok(())
    }

    fn linear(&mut self, weight: NamedTensor, bias: NamedTensor) {
        let units = weight.shape[0];
        self.push(
            LayerConfig::Linear {
                name: String::new(),
                units,
            },
            vec![("weight", weight), ("bias", bias)],
        );
    }

    /// Names the layers as digits does (`conv1`, `bn1`, `fc1`, ..., the last linear one
    /// `output`), and checks the weights against the plan they make.
    fn finish(self) -> Result<OnnxNetwork, OnnxImportError> {
        let (layers, tensors): (Vec<_>, Vec<_>) = self.layers.into_iter().unzip();
        let mut named = LayersConfig {
            layers,
            normalization: None,
        };
        named.name_layers();
        let mut weights = Weights::new();
        for (layer, tensors) in named.layers.iter().zip(tensors) {
            let name = LayersConfig::name_of(layer).unwrap_or_default();
            for (suffix, tensor) in tensors {
                weights.insert(format!("{name}.{suffix}"), tensor);
            }
        }
        let layers = named.layers;
        let normalization = (self.mean.is_some() || self.std.is_some()).then(|| Normalization {
            mean: self.mean.unwrap_or(0.0),
            std: self.std.unwrap_or(1.0),
        });
        let layers = LayersConfig {
            layers,
            normalization,
        };
        let plan = layers.plan().map_err(|source| OnnxImportError::Plan {
            origin: self.origin.into(),
            source,
        })?;
        // Checked as a model takes them: shapes, and values that are finite.
        let mut checked = Weights::new();
        for spec in plan.params() {
            let values =
                weights::take(&mut weights, &spec.name, &spec.shape).map_err(|source| {
                    OnnxImportError::Weights {
                        origin: self.origin.into(),
                        source,
                    }
                })?;
            checked.insert(
                spec.name,
                NamedTensor {
                    shape: spec.shape,
                    values,
                },
            );
        }
        Ok(OnnxNetwork {
            layers,
            weights: checked,
            final_softmax: self.final_softmax,
        })
    }
}

/// A `[rows, cols]` matrix as `[cols, rows]`.
fn transposed(matrix: NamedTensor) -> NamedTensor {
    let [rows, cols] = matrix.shape[..] else {
        unreachable!("a matrix")
    };
    let values = (0..cols)
        .flat_map(|c| (0..rows).map(move |r| (r, c)))
        .map(|(r, c)| matrix.values[r * cols + c])
        .collect();
    NamedTensor {
        shape: vec![cols, rows],
        values,
    }
}

fn zeros(len: usize) -> NamedTensor {
    NamedTensor {
        shape: vec![len],
        values: vec![0.0; len],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interop::onnx::export;
    use crate::model::{CnnConfig, Layer, MlpConfig, ModelConfig, ModelKind, Plan};

    /// The plan's layers without their names, and without dropout (which export leaves out).
    fn unnamed(plan: &Plan) -> Vec<Layer> {
        plan.layers()
            .iter()
            .filter(|layer| !matches!(layer, Layer::Dropout(_)))
            .cloned()
            .map(|mut layer| {
                if let Layer::Conv { name, .. }
                | Layer::BatchNorm { name, .. }
                | Layer::Linear { name, .. } = &mut layer
                {
                    name.clear();
                }
                layer
            })
            .collect()
    }

    #[test]
    fn digits_own_exports_read_back_as_the_same_plan_and_weights() {
        let mut normalized_cnn = CnnConfig::small();
        normalized_cnn.normalization = Some(Normalization {
            mean: 0.1307,
            std: 0.3081,
        });
        let tanh_mlp = MlpConfig {
            hidden: vec![24],
            activation: Activation::Tanh,
            ..MlpConfig::default()
        };
        let mut sigmoid_lenet = CnnConfig::lenet5();
        sigmoid_lenet.activation = Activation::Sigmoid;
        sigmoid_lenet.conv[1].pool = Some(Pooling::Average);
        for config in [
            ModelConfig::Cnn(normalized_cnn),
            ModelConfig::Mlp(tanh_mlp),
            ModelConfig::Cnn(sigmoid_lenet),
            ModelKind::CnnLarge.config(),
        ] {
            let plan = config.plan().unwrap();
            let weights = plan.initial_weights(5);
            let read = read(&export(&plan, &weights), "exported.onnx").unwrap();
            let read_plan = read.layers.plan().unwrap();
            assert_eq!(unnamed(&read_plan), unnamed(&plan), "{}", config.describe());
            assert_eq!(read_plan.normalization(), plan.normalization());
            assert_eq!(read.final_softmax, None);
            let pairs: Vec<_> = plan.params().zip(read_plan.params()).collect();
            assert_eq!(pairs.len(), weights.len());
            for (ours, theirs) in pairs {
                assert_eq!(
                    weights[&ours.name], read.weights[&theirs.name],
                    "{}",
                    ours.name
                );
            }
        }
    }

    #[test]
    fn layers_are_named_as_digits_names_its_own() {
        let plan = CnnConfig::small().plan().unwrap();
        let read = read(&export(&plan, &plan.initial_weights(1)), "cnn.onnx").unwrap();
        let names: Vec<String> = read.weights.keys().cloned().collect();
        let mut expected: Vec<String> = plan.params().map(|p| p.name).collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn operators_without_a_layer_are_refused_by_name() {
        let gelu = MlpConfig {
            activation: Activation::Gelu,
            ..MlpConfig::default()
        };
        let plan = ModelConfig::Mlp(gelu).plan().unwrap();
        let error = read(&export(&plan, &plan.initial_weights(0)), "gelu.onnx").unwrap_err();
        assert!(
            matches!(&error, OnnxImportError::UnsupportedOps { ops, .. } if ops == &["Erf", "Mul"]),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("gelu.onnx uses operators digits has no layer for: Erf, Mul;")
        );
    }

    #[test]
    fn damaged_files_are_refused_without_a_panic() {
        let mut config = CnnConfig::lenet5();
        config.conv[0].channels = 1;
        config.conv[1].channels = 1;
        config.hidden = vec![2];
        let plan = ModelConfig::Cnn(config).plan().unwrap();
        let bytes = export(&plan, &plan.initial_weights(0));
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut], "cut.onnx").is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                // Any result will do, as long as there is one.
                let _ = read(&damaged, "damaged.onnx");
            }
        }
    }

    #[test]
    fn repeated_fields_read_packed_and_unpacked() {
        // dims 2 and 3 unpacked (field 1, varints), then int64_data 300 and -1 packed (field 7).
        let mut bytes = vec![0x08, 2, 0x08, 3, 0x10, INT64 as u8, 0x3a];
        let packed = [0xac, 0x02]
            .iter()
            .chain(&[0xff; 9])
            .chain(&[0x01])
            .copied();
        let packed: Vec<u8> = packed.collect();
        bytes.push(packed.len() as u8);
        bytes.extend(packed);
        bytes.extend([0x42, 1, b's']);
        let error = tensor(&bytes).unwrap_err();
        assert_eq!(error, "tensor 's' of shape [2, 3] holds 2 values");
        bytes[3] = 1;
        let read = tensor(&bytes).unwrap();
        assert_eq!(
            read,
            Tensor {
                name: "s".into(),
                dims: vec![2, 1],
                data: Data::Int(vec![300, -1])
            }
        );
    }

    #[test]
    fn bytes_that_are_not_onnx_are_told_apart_and_refused() {
        let plan = ModelConfig::default().plan().unwrap();
        let onnx = export(&plan, &plan.initial_weights(0));
        assert!(is_onnx(&onnx));
        let safetensors = crate::model::weights::to_safetensors_bytes_with_counters(
            &plan.initial_weights(0),
            &[],
        )
        .unwrap();
        for other in [&safetensors[..], b"PK\x03\x04zip", b"\x80\x02}q\x00.", b""] {
            assert!(!is_onnx(other));
        }
        let truncated = read(&onnx[..onnx.len() / 2], "half.onnx").unwrap_err();
        assert!(
            matches!(truncated, OnnxImportError::Malformed { .. }),
            "{truncated}"
        );
        assert_eq!(
            read(b"PK\x03\x04", "model.zip").unwrap_err().to_string(),
            "model.zip is not an ONNX model: a field numbered 0 or too high"
        );
    }
}
