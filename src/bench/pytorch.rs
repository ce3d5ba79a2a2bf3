//! Running `bench/pytorch_baseline.py` (compiled into digits) on the same images, when
//! Python has PyTorch.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::data::{Dataset, Split};

const SCRIPT: &str = include_str!("../../bench/pytorch_baseline.py");

/// PyTorch's figures (see the script's docstring): each the median of its runs of the
/// workload beside digits', except `one_image_ms`, one request (itself a median of 200 calls).
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[error("the PyTorch baseline said nothing for {0} s, and was stopped")]
    Silent(f64),
}

/// Whether `python` can import torch.
pub fn available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A workload the baseline times, named as the script and [`PytorchFigures`] name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Seconds per 60,000-image tutorial epoch, PyTorch's default number of threads.
    TutorialEpoch,
    /// The same on one thread.
    TutorialEpochOneThread,
    /// Images per second training the `cnn`.
    CnnTraining,
    /// Images per second through the tutorial MLP, batch 1000.
    MlpInference,
    /// Images per second through the `cnn`, batch 1000.
    CnnInference,
    /// Milliseconds for one image through the MLP.
    OneImage,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::TutorialEpoch => "tutorial_epoch_s",
            Self::TutorialEpochOneThread => "tutorial_epoch_s_1_thread",
            Self::CnnTraining => "cnn_train_images_per_s",
            Self::MlpInference => "mlp_inference_images_per_s",
            Self::CnnInference => "cnn_inference_images_per_s",
            Self::OneImage => "one_image_ms",
        }
    }

    /// Whether a bigger figure is the faster (a rate) rather than the slower (a time).
    pub fn higher_is_faster(self) -> bool {
        matches!(
            self,
            Self::CnnTraining | Self::MlpInference | Self::CnnInference
        )
    }
}

/// The script running as a worker: one timed run of a workload per request, so that
/// `digits bench` can alternate its own runs with PyTorch's and both meet the machine at the
/// same moments (a shared host's speed drifts by a third within minutes).
pub struct Baseline {
    child: Child,
    requests: ChildStdin,
    /// The worker's lines, read on a thread of their own so that waiting for one can time out.
    answers: Receiver<String>,
    /// How long an answer may take before the worker is taken for hung.
    deadline: Duration,
    /// Holds the script, its data and its error output until the worker is gone.
    dir: TempDir,
    pub torch_version: String,
    pub default_threads: usize,
}

/// The script's first line.
#[derive(Deserialize)]
struct Greeting {
    torch_version: String,
    default_threads: usize,
}

/// The script's answer to one request.
#[derive(Deserialize)]
struct Answer {
    workload: String,
    value: f64,
}

impl Baseline {
    /// Starts the worker on the built-in training images, `images` of them per tutorial epoch
    /// timing (at most 4,096 per `cnn` one), and waits until it has loaded them. A worker
    /// silent for longer than `deadline` (loading, or timing one run) is stopped.
    pub fn start(python: &str, images: usize, deadline: Duration) -> Result<Self, PytorchError> {
        let dir = tempfile::tempdir().map_err(PytorchError::Files)?;
        let data = Dataset::lite(Split::Train);
        let pixels: Vec<u8> = (0..data.len())
            .flat_map(|i| data.image(i).to_vec())
            .collect();
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes);
        write("pytorch_baseline.py", SCRIPT.as_bytes()).map_err(PytorchError::Files)?;
        write("images.u8", &pixels).map_err(PytorchError::Files)?;
        write("labels.u8", data.labels()).map_err(PytorchError::Files)?;
        let errors = File::create(dir.path().join("stderr.txt")).map_err(PytorchError::Files)?;
        let mut child = Command::new(python)
            .arg(dir.path().join("pytorch_baseline.py"))
            .arg("--images")
            .arg(dir.path().join("images.u8"))
            .arg("--labels")
            .arg(dir.path().join("labels.u8"))
            .args(["--count", &images.to_string(), "--worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(errors)
            .spawn()
            .map_err(|source| PytorchError::Spawn {
                python: python.to_string(),
                source,
            })?;
        let (Some(requests), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PytorchError::Failed("its pipes did not open".to_string()));
        };
        let (lines, answers_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(answers).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut baseline = Self {
            child,
            requests,
            answers: answers_rx,
            deadline,
            dir,
            torch_version: String::new(),
            default_threads: 0,
        };
        let greeting: Greeting = baseline.read_line()?;
        baseline.torch_version = greeting.torch_version;
        baseline.default_threads = greeting.default_threads;
        Ok(baseline)
    }

    /// One timed run of `workload` (the first of each kind after an untimed warm-up).
    pub fn time(&mut self, workload: Workload) -> Result<f64, PytorchError> {
        if writeln!(self.requests, "{}", workload.name())
            .and_then(|()| self.requests.flush())
            .is_err()
        {
            return Err(self.failure());
        }
        let answer: Answer = self.read_line()?;
        if answer.workload != workload.name() || !(answer.value.is_finite() && answer.value > 0.0) {
            return Err(PytorchError::Output(format!(
                "{} for {}",
                answer.value, answer.workload
            )));
        }
        Ok(answer.value)
    }

    fn read_line<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, PytorchError> {
        match self.answers.recv_timeout(self.deadline) {
            Ok(line) => serde_json::from_str(line.trim())
                .map_err(|_| PytorchError::Output(line.trim().to_string())),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(PytorchError::Silent(self.deadline.as_secs_f64()))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.failure()),
        }
    }

    /// Why the worker stopped answering: the end of what it wrote to stderr.
    fn failure(&mut self) -> PytorchError {
        // Its stderr is complete only once it has exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let errors =
            std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default();
        let last: Vec<&str> = errors.trim().lines().rev().take(5).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        PytorchError::Failed(if last.is_empty() {
            "it exited without a word".to_string()
        } else {
            last.join("\n")
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_worker_that_stops_answering_is_stopped_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let python = dir.path().join("python");
        let script = r#"#!/bin/sh
echo '{"torch_version": "9.9-fake", "default_threads": 2}'
while read workload; do
  [ "$workload" = cnn_train_images_per_s ] && sleep 60
  echo "{\"workload\": \"$workload\", \"value\": 1.5}"
done
"#;
        std::fs::write(&python, script).unwrap();
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        let python = python.to_str().unwrap();
        let mut baseline = Baseline::start(python, 64, Duration::from_millis(500)).unwrap();
        assert_eq!(baseline.time(Workload::OneImage).unwrap(), 1.5);
        let asked = Instant::now();
        let err = baseline.time(Workload::CnnTraining).unwrap_err();
        assert!(matches!(err, PytorchError::Silent(_)), "{err}");
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
        assert!(
            baseline.child.try_wait().unwrap().is_some(),
            "the worker was stopped"
        );
    }
}
