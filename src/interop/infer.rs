//! Which network a state dict is for, read off its tensors' shapes.
//!
//! A state dict holds no architecture, only named tensors; but in digits' vocabulary the
//! shapes say almost everything. A 4-D `[out, in, k, k]` weight is a convolution (with a
//! `[out]` bias or without), a group of four `[c]` tensors with running statistics is a batch
//! norm, a 2-D `[out, in]` weight with its bias is a fully connected layer. What the shapes
//! leave open (each convolution's padding, and whether a 2x2 pooling follows it) is solved
//! from the first fully connected layer's input size, `channels * side * side`, trying the
//! usual choices. When several fit, the way people write networks decides if it leaves one:
//! convolutions all padded alike (all unpadded, or all padded by half the kernel), and, where
//! the names group convolutions into blocks (`conv_block_1.0`, `features.3`), pooling only at
//! the end of a block; the others are listed. What they cannot say at all (the activation, max or average pooling) is
//! assumed, and said.
//!
//! Names give only the order: real files name layers `fc1..fc3`, `0/2/4`, `layer1.0`,
//! `convnet.c1`, so modules are ordered by a natural sort of their names (numbers compared as
//! numbers) within each kind, convolutions before fully connected layers, each batch norm
//! after the convolution it normalises. The file's tensors are then matched to the network's
//! parameters by position, shape-checked.

use std::cmp::Ordering;
use std::fmt::Write as _;

use crate::choice::Choice;
use crate::data::{IMAGE_SIDE, NUM_CLASSES};
use crate::model::{Activation, LayersConfig, Plan};

/// One tensor of a file: its name and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorShape {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A layer of the file, recognised by its tensors; `name` is its module path.
#[derive(Debug, Clone, PartialEq)]
pub enum FileModule {
    Conv {
        name: String,
        outputs: usize,
        inputs: usize,
        kernel: usize,
        bias: bool,
    },
    BatchNorm {
        name: String,
        channels: usize,
    },
    Linear {
        name: String,
        outputs: usize,
        inputs: usize,
    },
}

/// Why no network, or more than one, could be read off a file's tensors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    #[error(
        "'{module}' ({tensors}) is no convolution, batch norm or fully connected layer digits knows"
    )]
    Unrecognised { module: String, tensors: String },
    #[error("the file has no fully connected layer")]
    NoLinear,
    #[error(
        "batch norm '{name}' ({channels} channels) follows no convolution of {channels} channels"
    )]
    BatchNormUnplaced { name: String, channels: usize },
    #[error("'{name}' takes {inputs} inputs, but the layer before it gives {previous}")]
    Chain {
        name: String,
        inputs: usize,
        previous: usize,
    },
    #[error("the last layer '{name}' gives {outputs} outputs, not {NUM_CLASSES} class logits")]
    NotTenClasses { name: String, outputs: usize },
    #[error(
        "'{name}' takes {inputs} inputs, which no choice of padding (0 or half the kernel) and \
         2x2 pooling after each convolution gives; describe the network with --layers"
    )]
    NoFit { name: String, inputs: usize },
    #[error(
        "{} networks fit the file's shapes; choose one with --layers:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    Ambiguous(Vec<String>),
}

/// One part of a name for [`natural_order`]: text, or a number compared as a number.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NamePart<'a> {
    Number(u128),
    Text(&'a str),
}

fn name_parts(name: &str) -> Vec<NamePart<'_>> {
    let mut parts = Vec::new();
    let mut rest = name;
    while let Some(first) = rest.chars().next() {
        let digits = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digits)
            .unwrap_or(rest.len());
        let (part, tail) = rest.split_at(end);
        parts.push(match part.parse() {
            Ok(number) if digits => NamePart::Number(number),
            _ => NamePart::Text(part),
        });
        rest = tail;
    }
    parts
}

/// Orders names as people number layers: `fc2` before `fc10`, `layer1.0` before `layer1.1`.
pub fn natural_order(a: &str, b: &str) -> Ordering {
    name_parts(a).cmp(&name_parts(b)).then_with(|| a.cmp(b))
}

impl FileModule {
    pub fn name(&self) -> &str {
        match self {
            FileModule::Conv { name, .. }
            | FileModule::BatchNorm { name, .. }
            | FileModule::Linear { name, .. } => name,
        }
    }

    /// Its tensors' last name parts, in the order digits' plan lists a layer's parameters.
    fn tensor_suffixes(&self) -> &'static [&'static str] {
        match self {
            FileModule::Conv { bias: true, .. } | FileModule::Linear { .. } => &["weight", "bias"],
            FileModule::Conv { bias: false, .. } => &["weight"],
            FileModule::BatchNorm { .. } => &["weight", "bias", "running_mean", "running_var"],
        }
    }

    /// Recognises the module `name` from its tensors (last name part and shape).
    fn recognise(name: &str, tensors: &[(&str, &[usize])]) -> Result<Self, InferError> {
        let mut sorted: Vec<(&str, &[usize])> = tensors.to_vec();
        sorted.sort();
        let shape = |suffix: &str| sorted.iter().find(|(s, _)| *s == suffix).map(|(_, s)| *s);
        let suffixes: Vec<&str> = sorted.iter().map(|(s, _)| *s).collect();
        let recognised = match (suffixes.as_slice(), shape("weight")) {
            (["bias", "weight"] | ["weight"], Some(&[outputs, inputs, k1, k2]))
                if k1 == k2 && shape("bias").is_none_or(|b| b == [outputs]) =>
            {
                Some(FileModule::Conv {
                    name: name.into(),
                    outputs,
                    inputs,
                    kernel: k1,
                    bias: suffixes.len() == 2,
                })
            }
            (["bias", "weight"], Some(&[outputs, inputs]))
                if shape("bias") == Some(&[outputs][..]) =>
            {
                Some(FileModule::Linear {
                    name: name.into(),
                    outputs,
                    inputs,
                })
            }
            (["bias", "running_mean", "running_var", "weight"], Some(&[channels]))
                if sorted.iter().all(|(_, s)| *s == [channels]) =>
            {
                Some(FileModule::BatchNorm {
                    name: name.into(),
                    channels,
                })
            }
            _ => None,
        };
        recognised.ok_or_else(|| InferError::Unrecognised {
            module: name.into(),
            tensors: sorted
                .iter()
                .map(|(suffix, shape)| format!("{suffix} {shape:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// A module's name, with the suffix (`weight`, `bias`, ...) and shape of each of its tensors.
type ModuleTensors<'a> = (&'a str, Vec<(&'a str, &'a [usize])>);

/// The file's layers in network order: convolutions (each followed by its batch norm, if
/// any), then fully connected layers, each kind in the natural order of its names.
pub fn file_modules(tensors: &[TensorShape]) -> Result<Vec<FileModule>, InferError> {
    let mut by_module: Vec<ModuleTensors> = Vec::new();
    for tensor in tensors {
        let (module, suffix) = tensor
            .name
            .rsplit_once('.')
            .unwrap_or(("", tensor.name.as_str()));
        match by_module.iter_mut().find(|(name, _)| *name == module) {
            Some((_, group)) => group.push((suffix, tensor.shape.as_slice())),
            None => by_module.push((module, vec![(suffix, tensor.shape.as_slice())])),
        }
    }
    by_module.sort_by(|(a, _), (b, _)| natural_order(a, b));
    let modules = by_module
        .iter()
        .map(|(name, group)| FileModule::recognise(name, group))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut convs, mut norms, mut linears) = (Vec::new(), Vec::new(), Vec::new());
    for module in modules {
        match module {
            FileModule::Conv { .. } => convs.push(module),
            FileModule::BatchNorm { .. } => norms.push(module),
            FileModule::Linear { .. } => linears.push(module),
        }
    }
    let mut ordered = Vec::with_capacity(convs.len() + norms.len() + linears.len());
    let mut norms = norms.into_iter().peekable();
    let every_conv_normalised = norms.len() == convs.len();
    for conv in convs {
        let FileModule::Conv { outputs, .. } = conv else {
            unreachable!("only convolutions were gathered here")
        };
        ordered.push(conv);
        // With one batch norm per convolution they pair up in order; with fewer, each goes
        // after the next convolution of its width.
        if let Some(norm) = norms.next_if(|norm| {
            every_conv_normalised
                || matches!(norm, FileModule::BatchNorm { channels, .. } if *channels == outputs)
        }) {
            ordered.push(norm);
        }
    }
    if let Some(FileModule::BatchNorm { name, channels }) = norms.next() {
        return Err(InferError::BatchNormUnplaced { name, channels });
    }
    ordered.extend(linears);
    Ok(ordered)
}

/// The file's tensors in the order of [`file_modules`], each layer's in plan order: what a
/// plan's parameters are matched against by position.
pub fn network_order(modules: &[FileModule], tensors: &[TensorShape]) -> Vec<TensorShape> {
    modules
        .iter()
        .flat_map(|module| {
            module.tensor_suffixes().iter().filter_map(move |suffix| {
                let name = match module.name() {
                    "" => (*suffix).to_string(),
                    prefix => format!("{prefix}.{suffix}"),
                };
                tensors.iter().find(|t| t.name == name).cloned()
            })
        })
        .collect()
}

/// A network that fits a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// In the short text form of [`LayersConfig::parse`].
    pub text: String,
    /// Whether its convolutions are all padded alike.
    pub uniform_padding: bool,
    /// Whether it pools only after the last convolution of a block of the file's names (true
    /// when the names make no blocks).
    pub pools_end_blocks: bool,
}

/// The network to import, and the others that also fit: the only candidate, or else the only
/// one left by preferring, in turn, convolutions padded alike and pooling at block ends (each
/// preference applied when some candidate has it).
pub fn choose(candidates: Vec<Candidate>) -> Result<(String, Vec<String>), InferError> {
    let preferences: [fn(&Candidate) -> bool; 2] = [|c| c.uniform_padding, |c| c.pools_end_blocks];
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    for preferred in preferences {
        if left.len() > 1 && left.iter().any(|&i| preferred(&candidates[i])) {
            left.retain(|&i| preferred(&candidates[i]));
        }
    }
    let [chosen] = left[..] else {
        return Err(InferError::Ambiguous(
            candidates.into_iter().map(|c| c.text).collect(),
        ));
    };
    let mut texts: Vec<String> = candidates.into_iter().map(|c| c.text).collect();
    let chosen = texts.remove(chosen);
    Ok((chosen, texts))
}

/// Every network in digits' vocabulary that fits `modules` (from [`file_modules`]), with
/// `activation` after each convolution (and its batch norm) and between fully connected
/// layers, and max pooling.
pub fn candidates(
    modules: &[FileModule],
    activation: Activation,
) -> Result<Vec<Candidate>, InferError> {
    let convs: Vec<&FileModule> = modules
        .iter()
        .filter(|m| matches!(m, FileModule::Conv { .. }))
        .collect();
    let linears: Vec<(&str, usize, usize)> = modules
        .iter()
        .filter_map(|m| match m {
            FileModule::Linear {
                name,
                outputs,
                inputs,
            } => Some((name.as_str(), *outputs, *inputs)),
            _ => None,
        })
        .collect();
    let mut channels = 1;
    for conv in &convs {
        if let FileModule::Conv {
            name,
            inputs,
            outputs,
            ..
        } = conv
        {
            if *inputs != channels {
                return Err(InferError::Chain {
                    name: name.clone(),
                    inputs: *inputs,
                    previous: channels,
                });
            }
            channels = *outputs;
        }
    }
    let Some(&(first_name, _, first_inputs)) = linears.first() else {
        return Err(InferError::NoLinear);
    };
    for pair in linears.windows(2) {
        let ((_, previous, _), (name, _, inputs)) = (pair[0], pair[1]);
        if inputs != previous {
            return Err(InferError::Chain {
                name: name.into(),
                inputs,
                previous,
            });
        }
    }
    let &(last_name, last_outputs, _) = linears.last().expect("there is a first");
    if last_outputs != NUM_CLASSES {
        return Err(InferError::NotTenClasses {
            name: last_name.into(),
            outputs: last_outputs,
        });
    }
    let activation = activation.name();
    let mut dense: Vec<String> = Vec::new();
    for (i, (_, outputs, _)) in linears.iter().enumerate() {
        if i > 0 {
            dense.push(activation.into());
        }
        dense.push(format!("fc{outputs}"));
    }
    let dense = dense.join(",");
    let mut found = Vec::new();
    // Whether each convolution ends a block: the next one has another parent module.
    let parents: Vec<&str> = convs
        .iter()
        .map(|conv| {
            conv.name()
                .rsplit_once('.')
                .map_or("", |(parent, _)| parent)
        })
        .collect();
    let ends_block: Vec<bool> = (0..parents.len())
        .map(|i| parents.get(i + 1) != Some(&parents[i]))
        .collect();
    let blocks = parents.windows(2).any(|pair| pair[0] != pair[1]);
    let mut conv_text = Vec::new();
    let mut choices = Vec::new();
    choose_convs(
        modules,
        (IMAGE_SIDE, channels, first_inputs),
        activation,
        (&mut conv_text, &mut choices),
        &mut |convs: &[String], choices: &[PaddedPooled]| {
            let text = convs
                .iter()
                .map(String::as_str)
                .chain([dense.as_str()])
                .collect::<Vec<_>>()
                .join(",");
            // The plan builder has the last word on what fits a 28x28 image.
            if LayersConfig::parse(&text).is_ok_and(|c| c.plan().is_ok()) {
                found.push(Candidate {
                    text,
                    uniform_padding: choices.windows(2).all(|pair| pair[0].0 == pair[1].0),
                    pools_end_blocks: !blocks
                        || choices
                            .iter()
                            .zip(&ends_block)
                            .all(|(&(_, pooled), &ends)| !pooled || ends),
                });
            }
        },
    );
    if found.is_empty() {
        return Err(InferError::NoFit {
            name: first_name.into(),
            inputs: first_inputs,
        });
    }
    Ok(found)
}

/// Per convolution of a choice: whether it is padded, and whether it is pooled.
type PaddedPooled = (bool, bool);

/// Walks every choice of padding and pooling for the convolutions and batch norms at the
/// front of `modules`, from maps of `side` and `channels`, calling `found` with the layer
/// items (and, per convolution, whether it is padded and pooled) of each choice that leaves
/// `channels * side * side == features`.
fn choose_convs(
    modules: &[FileModule],
    (side, channels, features): (usize, usize, usize),
    activation: &str,
    (items, choices): (&mut Vec<String>, &mut Vec<PaddedPooled>),
    found: &mut dyn FnMut(&[String], &[PaddedPooled]),
) {
    let (conv, rest) = match modules.split_first() {
        Some((conv @ FileModule::Conv { .. }, rest)) => (conv, rest),
        _ => {
            if channels * side * side == features {
                found(items, choices);
            }
            return;
        }
    };
    let FileModule::Conv {
        outputs,
        kernel,
        bias,
        ..
    } = conv
    else {
        unreachable!("matched above")
    };
    let (normalised, rest) = match rest.split_first() {
        Some((FileModule::BatchNorm { .. }, after)) => (true, after),
        _ => (false, rest),
    };
    let mut paddings = vec![0, kernel / 2];
    paddings.dedup();
    for padding in paddings {
        let Some(convolved) = (side + 2 * padding + 1)
            .checked_sub(*kernel)
            .filter(|&s| s > 0)
        else {
            continue;
        };
        for pooled in [false, true] {
            let after = if pooled { convolved / 2 } else { convolved };
            if after == 0 {
                continue;
            }
            let before = items.len();
            let mut item = format!("conv{outputs}k{kernel}");
            if padding > 0 {
                write!(item, "p{padding}").expect("writing to a String");
            }
            if !bias {
                item.push_str("nobias");
            }
            items.push(item);
            if normalised {
                items.push("bn".into());
            }
            items.push(activation.into());
            if pooled {
                items.push("pool".into());
            }
            choices.push((padding > 0, pooled));
            choose_convs(
                rest,
                (after, *outputs, features),
                activation,
                (&mut *items, &mut *choices),
                found,
            );
            choices.pop();
            items.truncate(before);
        }
    }
}

/// Whether two plans are the same network but for layer names and dropout (which no state
/// dict holds): an inferred network that is one of digits' own is imported as that one.
pub fn same_network(a: &Plan, b: &Plan) -> bool {
    use crate::model::Layer;
    let unnamed = |plan: &Plan| -> Vec<Layer> {
        plan.layers()
            .iter()
            .filter(|layer| !matches!(layer, Layer::Dropout(_)))
            .map(|layer| {
                let mut layer = layer.clone();
                match &mut layer {
                    Layer::Conv { name, .. }
                    | Layer::BatchNorm { name, .. }
                    | Layer::Linear { name, .. } => name.clear(),
                    _ => {}
                }
                layer
            })
            .collect()
    };
    a.normalization() == b.normalization() && unnamed(a) == unnamed(b)
}

/// The file's tensors (in network order) side by side with the parameters `plan` expects,
/// when they do not match one to one: `Err` holds the two-column table.
pub fn match_by_position(
    plan: &Plan,
    file: &[TensorShape],
) -> Result<Vec<(String, String)>, String> {
    let expected: Vec<TensorShape> = plan
        .params()
        .map(|p| TensorShape {
            name: p.name,
            shape: p.shape,
        })
        .collect();
    let fits =
        expected.len() == file.len() && expected.iter().zip(file).all(|(e, f)| e.shape == f.shape);
    if fits {
        return Ok(expected
            .into_iter()
            .zip(file)
            .map(|(e, f)| (e.name, f.name.clone()))
            .collect());
    }
    let cell =
        |t: Option<&TensorShape>| t.map_or(String::new(), |t| format!("{} {:?}", t.name, t.shape));
    let rows: Vec<(String, String, bool)> = (0..expected.len().max(file.len()))
        .map(|i| {
            let (f, e) = (file.get(i), expected.get(i));
            let differs = f.map(|f| &f.shape) != e.map(|e| &e.shape);
            (cell(f), cell(e), differs)
        })
        .collect();
    let width = rows
        .iter()
        .map(|(f, _, _)| f.chars().count())
        .chain(["in the file".len()])
        .max()
        .unwrap_or(0);
    let mut table = format!("  {:width$}    the network expects\n", "in the file");
    for (f, e, differs) in rows {
        let mark = if differs { "≠" } else { " " };
        writeln!(table, "  {f:width$}  {mark} {e}").expect("writing to a String");
    }
    Err(table.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(list: &[(&str, &[usize])]) -> Vec<TensorShape> {
        list.iter()
            .map(|(name, shape)| TensorShape {
                name: name.to_string(),
                shape: shape.to_vec(),
            })
            .collect()
    }

    fn infer(list: &[(&str, &[usize])]) -> Result<Vec<String>, InferError> {
        let found = candidates(&file_modules(&tensors(list))?, Activation::Relu)?;
        Ok(found.into_iter().map(|c| c.text).collect())
    }

    #[test]
    fn names_sort_with_their_numbers_as_numbers() {
        let mut names = vec![
            "fc10",
            "fc2",
            "layer1.10",
            "layer1.2",
            "0",
            "convnet.c3",
            "convnet.c1",
        ];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            [
                "0",
                "convnet.c1",
                "convnet.c3",
                "fc2",
                "fc10",
                "layer1.2",
                "layer1.10"
            ]
        );
    }

    #[test]
    fn an_mlp_of_any_names_is_inferred() {
        // `nn.Sequential` numbers its layers: 2 comes before 10.
        let sequential = [
            ("10.bias", &[10][..]),
            ("2.weight", &[256, 784]),
            ("10.weight", &[10, 256]),
            ("2.bias", &[256]),
        ];
        assert_eq!(infer(&sequential).unwrap(), vec!["fc256,relu,fc10"]);
        let unfinished = [("0.weight", &[256, 784][..]), ("0.bias", &[256])];
        assert_eq!(
            infer(&unfinished),
            Err(InferError::NotTenClasses {
                name: "0".into(),
                outputs: 256
            })
        );
    }

    #[test]
    fn padding_and_pooling_are_solved_from_the_first_dense_layer() {
        // LeNet without padding: 28 -> 24 -> 12 -> 8 -> 4.
        let lenet = [
            ("conv1.weight", &[6, 1, 5, 5][..]),
            ("conv1.bias", &[6]),
            ("conv2.weight", &[16, 6, 5, 5]),
            ("conv2.bias", &[16]),
            ("fc1.weight", &[120, 256]),
            ("fc1.bias", &[120]),
            ("fc2.weight", &[10, 120]),
            ("fc2.bias", &[10]),
        ];
        assert_eq!(
            infer(&lenet).unwrap(),
            vec!["conv6k5,relu,pool,conv16k5,relu,pool,fc120,relu,fc10"]
        );
        // pytorch/examples: two 3x3 convolutions, one pooling, 9216 = 64 * 12 * 12.
        let examples = [
            ("conv1.weight", &[32, 1, 3, 3][..]),
            ("conv1.bias", &[32]),
            ("conv2.weight", &[64, 32, 3, 3]),
            ("conv2.bias", &[64]),
            ("fc1.weight", &[128, 9216]),
            ("fc1.bias", &[128]),
            ("fc2.weight", &[10, 128]),
            ("fc2.bias", &[10]),
        ];
        // 28 -> 28 -> 14 -> 12 fits too, with the first convolution padded and not the second.
        let found = candidates(
            &file_modules(&tensors(&examples)).unwrap(),
            Activation::Relu,
        );
        assert_eq!(
            choose(found.unwrap()).unwrap(),
            (
                "conv32k3,relu,conv64k3,relu,pool,fc128,relu,fc10".to_string(),
                vec!["conv32k3p1,relu,pool,conv64k3,relu,fc128,relu,fc10".to_string()]
            )
        );
    }

    #[test]
    fn batch_norm_goes_after_its_convolution_whatever_the_names_say() {
        let file = tensors(&[
            ("bn1.weight", &[4]),
            ("bn1.bias", &[4]),
            ("bn1.running_mean", &[4]),
            ("bn1.running_var", &[4]),
            ("conv1.weight", &[4, 1, 3, 3]),
            ("fc.weight", &[10, 4 * 14 * 14]),
            ("fc.bias", &[10]),
        ]);
        let modules = file_modules(&file).unwrap();
        assert_eq!(modules[0].name(), "conv1");
        assert_eq!(modules[1].name(), "bn1");
        let found = candidates(&modules, Activation::Tanh).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].text, "conv4k3p1nobias,bn,tanh,pool,fc10");
        let order: Vec<String> = network_order(&modules, &file)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(
            order,
            [
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "fc.weight",
                "fc.bias"
            ]
        );
    }

    #[test]
    fn several_fits_of_mixed_padding_are_listed_and_no_fit_is_said() {
        // 8 * 12 * 12: 28 -> 26 -> 24 -> 12, or 28 -> 28 -> 14 -> 12.
        let two_ways = [
            ("c.weight", &[8, 1, 3, 3][..]),
            ("c2.weight", &[8, 8, 3, 3]),
            ("f.weight", &[10, 8 * 12 * 12]),
            ("f.bias", &[10]),
        ];
        let both = [
            "conv8k3nobias,relu,conv8k3nobias,relu,pool,fc10",
            "conv8k3p1nobias,relu,pool,conv8k3nobias,relu,fc10",
        ];
        assert_eq!(infer(&two_ways).unwrap(), both);
        let mixed = |text: &str| Candidate {
            text: text.into(),
            uniform_padding: false,
            pools_end_blocks: true,
        };
        assert_eq!(
            choose(both.iter().map(|t| mixed(t)).collect()),
            Err(InferError::Ambiguous(both.map(String::from).to_vec()))
        );
        let odd = [
            ("c.weight", &[8, 1, 3, 3][..]),
            ("f.weight", &[10, 1000]),
            ("f.bias", &[10]),
        ];
        assert_eq!(
            infer(&odd),
            Err(InferError::NoFit {
                name: "f".into(),
                inputs: 1000
            })
        );
        let three_d = [("x.weight", &[2, 3, 4][..])];
        assert!(matches!(
            infer(&three_d),
            Err(InferError::Unrecognised { .. })
        ));
    }

    #[test]
    fn pooling_goes_at_the_end_of_the_blocks_the_names_make() {
        // TinyVGG: two blocks of two padded 3x3 convolutions, 28 -> 14 -> 7; pooling after
        // any two of the four convolutions fits, and so does one pooling after the first of
        // four unpadded ones (28 -> 26 -> 13 -> 11 -> 9 -> 7).
        let tiny_vgg = [
            ("conv_block_1.0.weight", &[10, 1, 3, 3][..]),
            ("conv_block_1.0.bias", &[10]),
            ("conv_block_1.2.weight", &[10, 10, 3, 3]),
            ("conv_block_1.2.bias", &[10]),
            ("conv_block_2.0.weight", &[10, 10, 3, 3]),
            ("conv_block_2.0.bias", &[10]),
            ("conv_block_2.2.weight", &[10, 10, 3, 3]),
            ("conv_block_2.2.bias", &[10]),
            ("classifier.1.weight", &[10, 490]),
            ("classifier.1.bias", &[10]),
        ];
        let found = candidates(
            &file_modules(&tensors(&tiny_vgg)).unwrap(),
            Activation::Relu,
        );
        let (chosen, others) = choose(found.unwrap()).unwrap();
        assert_eq!(
            chosen,
            "conv10k3p1,relu,conv10k3p1,relu,pool,conv10k3p1,relu,conv10k3p1,relu,pool,fc10"
        );
        assert_eq!(others.len(), 6);
    }

    #[test]
    fn a_misfit_lists_the_file_beside_the_network() {
        let plan = LayersConfig::parse("fc128,relu,fc10")
            .unwrap()
            .plan()
            .unwrap();
        let file = tensors(&[
            ("fc1.weight", &[256, 784]),
            ("fc1.bias", &[256]),
            ("fc2.weight", &[10, 256]),
            ("fc2.bias", &[10]),
        ]);
        let table = match_by_position(&plan, &file).unwrap_err();
        assert!(
            table.contains("fc1.weight [256, 784]  ≠ fc1.weight [128, 784]"),
            "{table}"
        );
        assert!(
            table.lines().any(|line| line.contains("fc2.bias [10]")
                && line.contains("output.bias [10]")
                && !line.contains('≠')),
            "{table}"
        );
        let fitting = LayersConfig::parse("fc256,relu,fc10")
            .unwrap()
            .plan()
            .unwrap();
        let pairs = match_by_position(&fitting, &file).unwrap();
        assert_eq!(
            pairs[2],
            ("output.weight".to_string(), "fc2.weight".to_string())
        );
    }
}
