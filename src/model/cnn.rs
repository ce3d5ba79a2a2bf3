//! Convolutional networks: LeNet-5 and a modern small CNN, both described by one config.
//!
//! Tensor names follow the PyTorch module a reader would write for the same network
//! (`conv1`, `bn1`, `fc1`, ..., `output`), in PyTorch's layouts, so a state dict moves between
//! the two without renaming:
//!
//! ```python
//! # digits' `cnn` model in PyTorch
//! class Cnn(nn.Module):
//!     def __init__(self):
//!         super().__init__()
//!         self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False); self.bn1 = nn.BatchNorm2d(32)
//!         self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False); self.bn2 = nn.BatchNorm2d(64)
//!         self.fc1 = nn.Linear(64 * 7 * 7, 128); self.output = nn.Linear(128, 10)
//!         self.dropout = nn.Dropout(0.25)
//!     def forward(self, x):
//!         x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
//!         x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
//!         x = F.relu(self.fc1(self.dropout(x.flatten(1))))
//!         return self.output(self.dropout(x))
//! ```

use serde::{Deserialize, Deserializer, Serialize};

use super::layers::Normalization;
use super::plan::{Activation, Plan, PlanBuilder, PlanError, Pooling};
use crate::data::NUM_CLASSES;

/// One convolution: `channels` square `kernel`s, zero `padding` on each side, stride 1,
/// followed by batch norm (if the network has it), the activation and, if `pool`, a 2x2
/// pooling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvLayer {
    pub channels: usize,
    pub kernel: usize,
    pub padding: usize,
    /// Saved as `"max"`, `"average"` or `null`; configs written before average pooling
    /// existed say `true` (max) or `false`.
    #[serde(deserialize_with = "pooling_or_flag")]
    pub pool: Option<Pooling>,
}

/// Reads `pool` in either form.
fn pooling_or_flag<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Pooling>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Flag(bool),
        Kind(Option<Pooling>),
    }
    Ok(match Saved::deserialize(deserializer)? {
        Saved::Flag(true) => Some(Pooling::Max),
        Saved::Flag(false) => None,
        Saved::Kind(kind) => kind,
    })
}

/// The shape of a convolutional network: convolutions, then fully connected layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    pub conv: Vec<ConvLayer>,
    /// Batch norm after every convolution (whose bias it makes redundant, so they have none).
    pub batch_norm: bool,
    /// Widths of the fully connected hidden layers, named `fc1`, `fc2`, ...
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Dropout probability on the input of every fully connected layer (0: none).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

impl CnnConfig {
    /// LeNet-5 (LeCun et al. 1998) as it is usually written today: ReLU and max pooling
    /// instead of scaled tanh and trainable subsampling, 28x28 input padded to 32x32 by the
    /// first convolution. 61,706 parameters.
    pub fn lenet5() -> Self {
        let conv = |channels, padding| ConvLayer {
            channels,
            kernel: 5,
            padding,
            pool: Some(Pooling::Max),
        };
        Self {
            conv: vec![conv(6, 2), conv(16, 0)],
            batch_norm: false,
            hidden: vec![120, 84],
            activation: Activation::Relu,
            dropout: 0.0,
            normalization: None,
        }
    }

    /// The `cnn` model: two blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling
    /// (32 and 64 channels), a 128-unit layer, dropout. Chosen for the 2-core laptop: the
    /// usual second convolution per block triples the time per image (measured: 155 against
    /// 730 images/s training on 2 cores) for a few hundredths of a point.
    pub fn small() -> Self {
        let conv = |channels| ConvLayer {
            channels,
            kernel: 3,
            padding: 1,
            pool: Some(Pooling::Max),
        };
        Self {
            conv: vec![conv(32), conv(64)],
            batch_norm: true,
            hidden: vec![128],
            activation: Activation::Relu,
            dropout: 0.25,
            normalization: None,
        }
    }

    /// The `cnn-large` model: the VGG pattern, two 3x3 convolutions per block (32 then 64
    /// channels) with batch norm, a 256-unit layer and dropout 0.4. For Fashion-MNIST, where
    /// `cnn` stops near 92%: clothes need depth that digits do not. About 4.5 times `cnn`'s
    /// arithmetic per image; twice these widths cost 4 times more for under a point at five
    /// epochs (92.4% against 91.3% on Fashion-MNIST, measured on a GPU).
    pub fn large() -> Self {
        let conv = |channels, pool: bool| ConvLayer {
            channels,
            kernel: 3,
            padding: 1,
            pool: pool.then_some(Pooling::Max),
        };
        Self {
            conv: vec![
                conv(32, false),
                conv(32, true),
                conv(64, false),
                conv(64, true),
            ],
            batch_norm: true,
            hidden: vec![256],
            activation: Activation::Relu,
            dropout: 0.4,
            normalization: None,
        }
    }

    /// The layers: `conv1`, `bn1`, ... then `fc1`, ..., `output`, as in the module docs.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let mut plan = PlanBuilder::new(self.normalization);
        for (i, layer) in self.conv.iter().enumerate() {
            // Batch norm's shift makes a convolution's bias redundant.
            plan = plan.conv(
                &format!("conv{}", i + 1),
                layer.channels,
                layer.kernel,
                layer.padding,
                !self.batch_norm,
            )?;
            if self.batch_norm {
                plan = plan.batch_norm(&format!("bn{}", i + 1))?;
            }
            plan = plan.activation(self.activation);
            if let Some(pooling) = layer.pool {
                plan = plan.pool(pooling)?;
            }
        }
        plan = plan.flatten()?.dropout(self.dropout)?;
        for (i, &width) in self.hidden.iter().enumerate() {
            plan = plan
                .linear(&format!("fc{}", i + 1), width)?
                .activation(self.activation)
                .dropout(self.dropout)?;
        }
        plan.linear("output", NUM_CLASSES)?.finish()
    }
}
