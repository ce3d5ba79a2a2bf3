//! Running `bench/pytorch_baseline.py` (compiled into digits) on the same images, when
//! Python has PyTorch.

use std::io::Write;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};

const SCRIPT: &str = include_str!("../../bench/pytorch_baseline.py");

/// What the script measured (see its docstring).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PytorchFigures {
    pub torch_version: String,
    pub default_threads: usize,
    pub tutorial_epoch_s: f64,
    pub tutorial_epoch_s_1_thread: f64,
    pub cnn_train_images_per_s: f64,
    pub mlp_inference_images_per_s: f64,
    pub cnn_inference_images_per_s: f64,
    pub one_image_ms: f64,
}

/// Every way running the baseline can fail once PyTorch is known to be there.
#[derive(Debug, thiserror::Error)]
pub enum PytorchError {
    #[error("cannot prepare the PyTorch baseline's files")]
    Files(#[source] std::io::Error),
    #[error("cannot run {python}")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the PyTorch baseline failed: {0}")]
    Failed(String),
    #[error("the PyTorch baseline printed something unexpected: {0}")]
    Output(String),
}

/// Whether `python` can import torch.
pub fn available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs the baseline on `images` images per tutorial epoch timing, `repeat` times each.
pub fn run(python: &str, images: usize, repeat: usize) -> Result<PytorchFigures, PytorchError> {
    let dir = tempfile::tempdir().map_err(PytorchError::Files)?;
    let data = Dataset::lite(Split::Train);
    let pixels: Vec<u8> = (0..data.len())
        .flat_map(|i| data.image(i).to_vec())
        .collect();
    let write = |name: &str, bytes: &[u8]| {
        std::fs::File::create(dir.path().join(name)).and_then(|mut f| f.write_all(bytes))
    };
    write("pytorch_baseline.py", SCRIPT.as_bytes()).map_err(PytorchError::Files)?;
    write("images.u8", &pixels).map_err(PytorchError::Files)?;
    write("labels.u8", data.labels()).map_err(PytorchError::Files)?;
    let output = Command::new(python)
        .arg(dir.path().join("pytorch_baseline.py"))
        .arg("--images")
        .arg(dir.path().join("images.u8"))
        .arg("--labels")
        .arg(dir.path().join("labels.u8"))
        .args([
            "--count",
            &images.to_string(),
            "--repeat",
            &repeat.to_string(),
            "--json",
        ])
        .output()
        .map_err(|source| PytorchError::Spawn {
            python: python.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(PytorchError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).map_err(|_| PytorchError::Output(stdout.to_string()))
}
