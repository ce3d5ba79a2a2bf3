//! ONNX export: the model as an ONNX graph (opset 13) that onnxruntime and other runtimes run.
//!
//! The protobuf is written by hand: an ONNX model needs only a handful of message types, and
//! their wire format (varints and length-prefixed fields) is a few lines, where a protobuf
//! code generator would need `protoc` at build time. Field numbers are those of `onnx.proto`.
//!
//! The graph takes `images` `[N, 1, 28, 28]` (pixels in [0, 1]) and gives `logits` `[N, 10]`;
//! the model's input normalisation is part of it, dropout is not (inference only).

use crate::model::plan::BATCH_NORM_EPSILON;
use crate::model::{Activation, Layer, Plan, Pooling, Weights};

const OPSET: i64 = 13;
/// ONNX IR version 7 goes with opset 13.
const IR_VERSION: i64 = 7;
const FLOAT: i64 = 1;

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn int(&mut self, field: u32, value: i64) {
        self.tag(field, 0);
        self.varint(value as u64);
    }

    fn float(&mut self, field: u32, value: f32) {
        self.tag(field, 5);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn message(&mut self, field: u32, message: Message) {
        self.bytes(field, &message.0);
    }
}

/// A node attribute.
enum Attribute {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// The graph under construction: nodes in order and the constant tensors they use.
#[derive(Default)]
struct Graph {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    next_value: usize,
}

impl Graph {
    /// A node with a fresh output name; returns that name.
    fn node(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attribute)]) -> String {
        self.next_value += 1;
        let output = format!("{}_{}", op.to_ascii_lowercase(), self.next_value);
        let mut node = Message::default();
        for input in inputs {
            node.string(1, input);
        }
        node.string(2, &output);
        node.string(3, &output);
        node.string(4, op);
        for (name, value) in attributes {
            let mut attribute = Message::default();
            attribute.string(1, name);
            match value {
                Attribute::Float(f) => {
                    attribute.float(2, *f);
                    attribute.int(20, 1);
                }
                Attribute::Int(i) => {
                    attribute.int(3, *i);
                    attribute.int(20, 2);
                }
                Attribute::Ints(values) => {
                    for v in values {
                        attribute.int(8, *v);
                    }
                    attribute.int(20, 7);
                }
            }
            node.message(5, attribute);
        }
        self.nodes.push(node);
        output
    }

    /// A float constant named `name`.
    fn constant(&mut self, name: &str, shape: &[usize], values: &[f32]) -> String {
        let mut tensor = Message::default();
        for &d in shape {
            tensor.int(1, d as i64);
        }
        tensor.int(2, FLOAT);
        tensor.string(8, name);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensor.bytes(9, &raw);
        self.initializers.push(tensor);
        name.to_string()
    }

    /// The weight `name` of `weights` as a constant.
    fn weight(&mut self, weights: &Weights, name: &str) -> String {
        let tensor = &weights[name];
        self.constant(name, &tensor.shape, &tensor.values)
    }

    fn activation(&mut self, activation: Activation, x: &str) -> String {
        match activation {
            Activation::Relu => self.node("Relu", &[x], &[]),
            Activation::Sigmoid => self.node("Sigmoid", &[x], &[]),
            Activation::Tanh => self.node("Tanh", &[x], &[]),
            // Opset 13 has no Gelu: x * (1 + erf(x / sqrt 2)) / 2, PyTorch's exact form.
            Activation::Gelu => {
                let root2 = self.constant(
                    &format!("gelu_{}.sqrt2", self.next_value),
                    &[],
                    &[std::f32::consts::SQRT_2],
                );
                let one = self.constant(&format!("gelu_{}.one", self.next_value), &[], &[1.0]);
                let half = self.constant(&format!("gelu_{}.half", self.next_value), &[], &[0.5]);
                let scaled = self.node("Div", &[x, &root2], &[]);
                let erf = self.node("Erf", &[&scaled], &[]);
                let shifted = self.node("Add", &[&erf, &one], &[]);
                let gate = self.node("Mul", &[&shifted, &half], &[]);
                self.node("Mul", &[x, &gate], &[])
            }
        }
    }
}

/// A value's type: float, with these dimensions (a name is a symbolic one).
fn value_info(name: &str, dims: &[Result<i64, &str>]) -> Message {
    let mut shape = Message::default();
    for dim in dims {
        let mut d = Message::default();
        match dim {
            Ok(size) => d.int(1, *size),
            Err(symbol) => d.string(2, symbol),
        }
        shape.message(1, d);
    }
    let mut tensor_type = Message::default();
    tensor_type.int(1, FLOAT);
    tensor_type.message(2, shape);
    let mut type_proto = Message::default();
    type_proto.message(1, tensor_type);
    let mut info = Message::default();
    info.string(1, name);
    info.message(2, type_proto);
    info
}

/// The ONNX model of `plan` with `weights` (which must fit it, as a loaded run's do).
pub fn export(plan: &Plan, weights: &Weights) -> Vec<u8> {
    let mut graph = Graph::default();
    let mut x = "images".to_string();
    if let Some(n) = plan.normalization() {
        let mean = graph.constant("normalization.mean", &[], &[n.mean]);
        let std = graph.constant("normalization.std", &[], &[n.std]);
        x = graph.node("Sub", &[&x, &mean], &[]);
        x = graph.node("Div", &[&x, &std], &[]);
    }
    for layer in plan.layers() {
        let params: Vec<String> = layer
            .params()
            .iter()
            .map(|spec| graph.weight(weights, &spec.name))
            .collect();
        let inputs: Vec<&str> = std::iter::once(x.as_str())
            .chain(params.iter().map(String::as_str))
            .collect();
        x = match layer {
            Layer::Conv {
                kernel, padding, ..
            } => {
                let (k, p) = (*kernel as i64, *padding as i64);
                graph.node(
                    "Conv",
                    &inputs,
                    &[
                        ("kernel_shape", Attribute::Ints(vec![k, k])),
                        ("pads", Attribute::Ints(vec![p, p, p, p])),
                        ("strides", Attribute::Ints(vec![1, 1])),
                    ],
                )
            }
            Layer::BatchNorm { .. } => graph.node(
                "BatchNormalization",
                &inputs,
                &[("epsilon", Attribute::Float(BATCH_NORM_EPSILON as f32))],
            ),
            Layer::Activation(activation) => graph.activation(*activation, &x),
            Layer::Pool(pooling) => {
                let op = match pooling {
                    Pooling::Max => "MaxPool",
                    Pooling::Average => "AveragePool",
                };
                graph.node(
                    op,
                    &inputs,
                    &[
                        ("kernel_shape", Attribute::Ints(vec![2, 2])),
                        ("strides", Attribute::Ints(vec![2, 2])),
                    ],
                )
            }
            Layer::Flatten => graph.node("Flatten", &inputs, &[("axis", Attribute::Int(1))]),
            Layer::Dropout(_) => continue,
            Layer::Linear { .. } => graph.node("Gemm", &inputs, &[("transB", Attribute::Int(1))]),
        };
    }
    // Name the last value `logits` with an Identity, so the output name is stable.
    let mut last = Message::default();
    last.string(1, &x);
    last.string(2, "logits");
    last.string(3, "logits");
    last.string(4, "Identity");
    graph.nodes.push(last);

    let mut graph_proto = Message::default();
    for node in graph.nodes {
        graph_proto.message(1, node);
    }
    graph_proto.string(2, "digits");
    for tensor in graph.initializers {
        graph_proto.message(5, tensor);
    }
    graph_proto.message(11, value_info("images", &[Err("N"), Ok(1), Ok(28), Ok(28)]));
    graph_proto.message(12, value_info("logits", &[Err("N"), Ok(10)]));

    let mut model = Message::default();
    model.int(1, IR_VERSION);
    model.string(2, "digits");
    model.string(3, env!("CARGO_PKG_VERSION"));
    model.message(7, graph_proto);
    let mut opset = Message::default();
    opset.string(1, "");
    opset.int(2, OPSET);
    model.message(8, opset);
    model.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut m = Message::default();
        m.varint(1);
        m.varint(300);
        m.varint(u64::MAX);
        assert_eq!(&m.0[..3], &[0x01, 0xAC, 0x02]);
        assert_eq!(m.0.len(), 3 + 10);
    }

    #[test]
    fn the_model_names_its_opset_input_and_output() {
        let plan = ModelConfig::default().plan().unwrap();
        let bytes = export(&plan, &plan.initial_weights(0));
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "images",
            "logits",
            "Gemm",
            "Relu",
            "Flatten",
            "hidden1.weight",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        // The model's weights are all inside: 156,090 floats.
        assert!(bytes.len() > 156_090 * 4);
    }
}
