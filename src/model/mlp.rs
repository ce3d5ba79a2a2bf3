//! The tutorial's network: a multilayer perceptron, 784 -> 128 -> 400 -> 10 by default.

use serde::{Deserialize, Serialize};

use super::layers::Normalization;
use super::plan::{Activation, Plan, PlanBuilder, PlanError};
use crate::data::NUM_CLASSES;

/// The shape of an MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Widths of the hidden layers, named `hidden1`, `hidden2`, ... as in the tutorial.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    /// Dropout probability on the input of every layer after the first (0: none).
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

impl Default for MlpConfig {
    /// The tutorial's: two hidden layers of 128 and 400 units with ReLU.
    fn default() -> Self {
        Self {
            hidden: vec![128, 400],
            activation: Activation::Relu,
            dropout: 0.0,
            normalization: None,
        }
    }
}

impl MlpConfig {
    /// The `mlp-large` model: two hidden layers of 800 with dropout, the classic MLP baseline
    /// (Simard et al. 2003 reached 98.4% with 800 hidden units).
    pub fn large() -> Self {
        Self {
            hidden: vec![800, 800],
            dropout: 0.5,
            ..Self::default()
        }
    }

    /// The layers, named as in the tutorial (`hidden1`, `hidden2`, ..., `output`).
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let mut plan = PlanBuilder::new(self.normalization).flatten()?;
        for (i, &width) in self.hidden.iter().enumerate() {
            plan = plan
                .linear(&format!("hidden{}", i + 1), width)?
                .activation(self.activation)
                .dropout(self.dropout)?;
        }
        plan.linear("output", NUM_CLASSES)?.finish()
    }
}
