//! A network written out layer by layer: for networks that are neither the tutorial's MLP nor
//! one of digits' CNNs, as an imported file or `--layers` describes them.
//!
//! The short text form names one layer per comma-separated item:
//!
//! | item | layer | PyTorch |
//! | --- | --- | --- |
//! | `conv6k5p2` | 6 channels, 5x5 kernel, padding 2 (`p` optional: none) | `nn.Conv2d(in, 6, 5, padding=2)` |
//! | `conv6k5nobias` | the same without bias | `bias=False` |
//! | `bn` | batch norm of the channels before | `nn.BatchNorm2d` |
//! | `relu`, `sigmoid`, `tanh`, `gelu` | an activation | |
//! | `pool` or `maxpool`, `avgpool` | 2x2 pooling, stride 2 | `nn.MaxPool2d(2)`, `nn.AvgPool2d(2)` |
//! | `flatten` | feature maps to features (added before the first `fc` if absent) | `x.flatten(1)` |
//! | `dropout0.25` | dropout | `nn.Dropout(0.25)` |
//! | `fc120` | a fully connected layer of 120 units | `nn.Linear(in, 120)` |
//!
//! Layers are named as digits names its own: `conv1`, `bn1`, ... and `fc1`, ..., with the last
//! fully connected layer `output`; an import keeps these names and records the file's.

use serde::{Deserialize, Serialize};

use super::layers::Normalization;
use super::plan::{Activation, Plan, PlanBuilder, PlanError, Pooling};

/// One layer of a [`LayersConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layer", rename_all = "kebab-case")]
pub enum LayerConfig {
    Conv {
        name: String,
        channels: usize,
        kernel: usize,
        #[serde(default)]
        padding: usize,
        bias: bool,
    },
    BatchNorm {
        name: String,
    },
    Activation {
        activation: Activation,
    },
    Pool {
        pooling: Pooling,
    },
    Flatten,
    Dropout {
        p: f64,
    },
    Linear {
        name: String,
        units: usize,
    },
}

/// Layers in order, from one 28x28 channel to ten logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayersConfig {
    pub layers: Vec<LayerConfig>,
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

/// Why a `--layers` text does not describe layers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayersTextError {
    #[error(
        "'{item}' is not a layer: expected convCkK[pP][nobias], bn, relu, sigmoid, tanh, gelu, pool, maxpool, avgpool, flatten, dropoutP or fcN"
    )]
    Unknown { item: String },
    #[error("the layer list is empty")]
    Empty,
}

impl LayersConfig {
    /// Reads the short text form (see the module docs), e.g.
    /// `conv6k5p2,relu,pool,conv16k5,relu,pool,fc120,relu,fc84,relu,fc10`.
    pub fn parse(text: &str) -> Result<Self, LayersTextError> {
        let items: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect();
        if items.is_empty() {
            return Err(LayersTextError::Empty);
        }
        let mut layers = Vec::new();
        for item in items {
            let unknown = || LayersTextError::Unknown { item: item.into() };
            let layer = match item {
                "bn" => LayerConfig::BatchNorm {
                    name: String::new(),
                },
                "pool" | "maxpool" => LayerConfig::Pool {
                    pooling: Pooling::Max,
                },
                "avgpool" => LayerConfig::Pool {
                    pooling: Pooling::Average,
                },
                "flatten" => LayerConfig::Flatten,
                _ => {
                    if let Ok(activation) = item.parse() {
                        LayerConfig::Activation { activation }
                    } else if let Some(p) = item.strip_prefix("dropout") {
                        LayerConfig::Dropout {
                            p: p.parse().map_err(|_| unknown())?,
                        }
                    } else if let Some(units) = item.strip_prefix("fc") {
                        let units = units.parse().map_err(|_| unknown())?;
                        if !layers.iter().any(|l| matches!(l, LayerConfig::Flatten)) {
                            layers.push(LayerConfig::Flatten);
                        }
                        LayerConfig::Linear {
                            name: String::new(),
                            units,
                        }
                    } else if let Some(conv) = item.strip_prefix("conv") {
                        parse_conv(conv).ok_or_else(unknown)?
                    } else {
                        return Err(unknown());
                    }
                }
            };
            layers.push(layer);
        }
        let mut config = Self {
            layers,
            normalization: None,
        };
        config.name_layers();
        Ok(config)
    }

    /// Names the layers as digits names its own: `conv1`, `bn1`, ... and `fc1`, ..., the last
    /// fully connected layer `output`.
    pub fn name_layers(&mut self) {
        let linear_count = self
            .layers
            .iter()
            .filter(|layer| matches!(layer, LayerConfig::Linear { .. }))
            .count();
        let (mut convs, mut norms, mut linears) = (0, 0, 0);
        for layer in &mut self.layers {
            match layer {
                LayerConfig::Conv { name, .. } => {
                    convs += 1;
                    *name = format!("conv{convs}");
                }
                LayerConfig::BatchNorm { name } => {
                    norms += 1;
                    *name = format!("bn{norms}");
                }
                LayerConfig::Linear { name, .. } => {
                    linears += 1;
                    *name = match linears == linear_count {
                        true => "output".into(),
                        false => format!("fc{linears}"),
                    };
                }
                LayerConfig::Activation { .. }
                | LayerConfig::Pool { .. }
                | LayerConfig::Flatten
                | LayerConfig::Dropout { .. } => {}
            }
        }
    }

    /// The name of `layer` (conv, batch norm, linear), whose tensors are `NAME.weight`, ....
    pub fn name_of(layer: &LayerConfig) -> Option<&str> {
        match layer {
            LayerConfig::Conv { name, .. }
            | LayerConfig::BatchNorm { name }
            | LayerConfig::Linear { name, .. } => Some(name),
            LayerConfig::Activation { .. }
            | LayerConfig::Pool { .. }
            | LayerConfig::Flatten
            | LayerConfig::Dropout { .. } => None,
        }
    }

    /// The layers as a plan, checked to fit a 28x28 image and to end in ten logits.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let mut plan = PlanBuilder::new(self.normalization);
        for layer in &self.layers {
            plan = match layer {
                LayerConfig::Conv {
                    name,
                    channels,
                    kernel,
                    padding,
                    bias,
                } => plan.conv(name, *channels, *kernel, *padding, *bias)?,
                LayerConfig::BatchNorm { name } => plan.batch_norm(name)?,
                LayerConfig::Activation { activation } => plan.activation(*activation),
                LayerConfig::Pool { pooling } => plan.pool(*pooling)?,
                LayerConfig::Flatten => plan.flatten()?,
                LayerConfig::Dropout { p } => plan.dropout(*p)?,
                LayerConfig::Linear { name, units } => plan.linear(name, *units)?,
            };
        }
        plan.finish()
    }
}

/// `6k5p2`, `6k5`, `6k5p2nobias` (after `conv`), unnamed.
fn parse_conv(text: &str) -> Option<LayerConfig> {
    let (text, bias) = match text.strip_suffix("nobias") {
        Some(rest) => (rest, false),
        None => (text, true),
    };
    let (channels, rest) = text.split_once('k')?;
    let (kernel, padding) = match rest.split_once('p') {
        Some((kernel, padding)) => (kernel, padding.parse().ok()?),
        None => (rest, 0),
    };
    Some(LayerConfig::Conv {
        name: String::new(),
        channels: channels.parse().ok()?,
        kernel: kernel.parse().ok()?,
        padding,
        bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CnnConfig, ModelConfig};

    #[test]
    fn lenet5_written_out_is_the_built_in_lenet5() {
        let written =
            LayersConfig::parse("conv6k5p2,relu,pool,conv16k5,relu,pool,fc120,relu,fc84,relu,fc10")
                .unwrap();
        assert_eq!(written.plan(), CnnConfig::lenet5().plan());
        let config = ModelConfig::Layers(written);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), config);
        assert_eq!(config.describe(), "cnn conv6k5p-conv16k5p fc120 fc84 relu");
    }

    #[test]
    fn every_item_of_the_text_form_reads() {
        let layers =
            LayersConfig::parse("conv8k3p1nobias, bn, gelu, avgpool, flatten, dropout0.5, fc10")
                .unwrap()
                .layers;
        assert_eq!(
            layers,
            vec![
                LayerConfig::Conv {
                    name: "conv1".into(),
                    channels: 8,
                    kernel: 3,
                    padding: 1,
                    bias: false
                },
                LayerConfig::BatchNorm { name: "bn1".into() },
                LayerConfig::Activation {
                    activation: Activation::Gelu
                },
                LayerConfig::Pool {
                    pooling: Pooling::Average
                },
                LayerConfig::Flatten,
                LayerConfig::Dropout { p: 0.5 },
                LayerConfig::Linear {
                    name: "output".into(),
                    units: 10
                },
            ]
        );
    }

    #[test]
    fn text_that_is_no_layer_list_is_refused_by_item() {
        for (text, item) in [
            ("conv6,fc10", "conv6"),
            ("fc10,softmax", "softmax"),
            ("fcx", "fcx"),
        ] {
            assert_eq!(
                LayersConfig::parse(text),
                Err(LayersTextError::Unknown { item: item.into() })
            );
        }
        assert_eq!(LayersConfig::parse(" , "), Err(LayersTextError::Empty));
        let twelve = LayersConfig::parse("fc12").unwrap().plan();
        assert!(matches!(twelve, Err(PlanError::NotTenLogits { .. })));
    }
}
