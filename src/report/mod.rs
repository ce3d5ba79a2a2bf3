//! Reports: what a run did, as charts, a grid of its worst mistakes and one HTML page; and
//! several runs compared in one chart.

pub mod charts;
mod html;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use serde_json::Value;

pub use charts::LabelledHistory;

use crate::data::Dataset;
use crate::eval::Evaluation;
use crate::files::{WriteError, encode_png, write_atomically};
use crate::run::RunConfig;
use crate::show::{self, Sample};
use crate::train::EpochMetrics;

/// How many of the surest mistakes the report shows.
pub const MISTAKES_SHOWN: usize = 16;

/// Every way making a report can fail.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("drawing a chart failed: {0}")]
    Chart(String),
    #[error("the run has no recorded epochs to chart")]
    NoHistory,
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What a report is made from.
pub struct ReportInputs<'a> {
    pub name: &'a str,
    pub config: &'a RunConfig,
    pub history: &'a [EpochMetrics],
    pub evaluation: &'a Evaluation,
    pub test: &'a Dataset,
}

/// A report's pictures as PNG bytes, in the order the page shows them.
struct Pngs {
    loss: Vec<u8>,
    accuracy: Vec<u8>,
    confusion: Vec<u8>,
    mistakes: Vec<u8>,
}

/// The files a report writes, under the output folder.
pub const LOSS_PNG: &str = "loss.png";
pub const ACCURACY_PNG: &str = "accuracy.png";
pub const CONFUSION_PNG: &str = "confusion.png";
pub const MISTAKES_PNG: &str = "mistakes.png";
pub const REPORT_HTML: &str = "report.html";

/// Writes the four PNGs and `report.html` (which embeds them, so it can be mailed alone)
/// into `out`; returns the paths written.
pub fn write_report(inputs: &ReportInputs, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    if inputs.history.is_empty() {
        return Err(ReportError::NoHistory);
    }
    std::fs::create_dir_all(out).map_err(|source| WriteError {
        path: out.display().to_string(),
        source,
    })?;
    let png = |image: DynamicImage| encode_png(&image);
    let pngs = Pngs {
        loss: png(charts::loss_chart(inputs.history)?.into()),
        accuracy: png(charts::accuracy_chart(inputs.history)?.into()),
        confusion: png(charts::confusion_chart(
            &inputs.evaluation.confusion,
            inputs.test.class_names(),
        )?
        .into()),
        mistakes: png(mistakes_grid(inputs.evaluation, inputs.test).into()),
    };
    let mut written = Vec::new();
    for (name, bytes) in [
        (LOSS_PNG, &pngs.loss),
        (ACCURACY_PNG, &pngs.accuracy),
        (CONFUSION_PNG, &pngs.confusion),
        (MISTAKES_PNG, &pngs.mistakes),
    ] {
        written.push(write(&out.join(name), bytes)?);
    }
    let page = html::page(inputs, &pngs);
    written.push(write(&out.join(REPORT_HTML), page.as_bytes())?);
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    write_atomically(path, bytes).map_err(|source| WriteError {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// The test images the model was surest of and wrong about, titled `true->predicted conf%`.
pub fn mistakes_grid(evaluation: &Evaluation, test: &Dataset) -> GrayImage {
    let samples: Vec<Sample> = evaluation
        .most_confident_mistakes(test.labels(), MISTAKES_SHOWN)
        .iter()
        .map(|m| Sample {
            index: m.index,
            pixels: test.image(m.index),
            title: format!("{}->{} {:.0}%", m.truth, m.predicted, 100.0 * m.confidence),
        })
        .collect();
    show::grid(&samples, 4)
}

/// Names each run by what sets its config apart from the others' (`activation=sigmoid`), or
/// by its name in `names` (its folder's) when the configs do not differ; runs whose configs
/// differ from the others' in the same way get their names added, so no two share a label.
pub fn difference_labels(configs: &[RunConfig], names: &[String]) -> Vec<String> {
    let flat: Vec<BTreeMap<String, String>> = configs.iter().map(flatten_config).collect();
    let keys: Vec<&String> = flat
        .first()
        .map(|first| {
            first
                .keys()
                .filter(|key| flat.iter().any(|f| f.get(*key) != first.get(*key)))
                .collect()
        })
        .unwrap_or_default();
    let labels: Vec<String> = flat
        .iter()
        .zip(names)
        .map(|(f, name)| {
            if keys.is_empty() {
                return name.clone();
            }
            keys.iter()
                .map(|k| format!("{k}={}", f.get(*k).map_or("-", String::as_str)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    labels
        .iter()
        .zip(names)
        .map(|(label, name)| {
            if label != name && labels.iter().filter(|l| *l == label).count() > 1 {
                format!("{label} ({name})")
            } else {
                label.clone()
            }
        })
        .collect()
}

/// `{"train": {"lr": 0.01}}` becomes `lr -> 0.01`, keeping the last path segment, which is
/// what people call a setting; progress-like fields are left out, since they are not choices.
fn flatten_config(config: &RunConfig) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(k, v, out)),
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            Value::Array(items) => {
                let joined: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                out.insert(prefix.to_string(), joined.join(","));
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(config).expect("configs serialise"),
        &mut out,
    );
    // Progress and the version are not choices; an import's digest and date say no more
    // than its file does.
    for key in ["digits_version", "epochs_done", "epochs", "sha256", "date"] {
        out.remove(key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetName;
    use crate::model::{Activation, MlpConfig, ModelConfig};
    use crate::train::{OptimizerKind, TrainConfig};

    fn config(activation: Activation, optimizer: OptimizerKind, epochs_done: usize) -> RunConfig {
        RunConfig {
            digits_version: "0".into(),
            model: ModelConfig::Mlp(MlpConfig {
                hidden: vec![128, 400],
                activation,
                ..MlpConfig::default()
            }),
            train: Some(TrainConfig {
                optimizer: optimizer.into(),
                ..TrainConfig::default()
            }),
            imported: None,
            dataset: DatasetName::MnistLite,
            epochs_done,
            batches_done: 0,
        }
    }

    #[test]
    fn runs_are_labelled_by_what_differs() {
        let configs = [
            config(Activation::Relu, OptimizerKind::Adam, 10),
            config(Activation::Sigmoid, OptimizerKind::Adam, 3),
        ];
        let names = ["a".to_string(), "b".to_string()];
        assert_eq!(
            difference_labels(&configs, &names),
            ["activation=relu", "activation=sigmoid"]
        );
        let same = [configs[0].clone(), configs[0].clone()];
        assert_eq!(difference_labels(&same, &names), names);
        let twins = [configs[0].clone(), configs[0].clone(), configs[1].clone()];
        let three = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(
            difference_labels(&twins, &three),
            [
                "activation=relu (a)",
                "activation=relu (b)",
                "activation=sigmoid"
            ]
        );
        let both = [
            config(Activation::Relu, OptimizerKind::Adam, 1),
            config(Activation::Sigmoid, OptimizerKind::Sgd, 1),
        ];
        assert_eq!(
            difference_labels(&both, &names)[1],
            "activation=sigmoid, optimizer=sgd"
        );
    }
}
