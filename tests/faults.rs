//! Faults from outside: the process killed outright while it trains and saves.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use burn::tensor::Device;
use digits::run::RunDir;

#[test]
fn kill_9_at_twenty_moments_of_training_always_leaves_a_run_that_loads_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny epochs, so checkpoints are written many times a second and the kills land before,
    // during and after saves.
    let first = [
        "train",
        "--dataset",
        "mnist-lite",
        "--limit",
        "320",
        "--epochs",
        "10000",
    ];
    let again = ["train", "--resume", "run", "--limit", "320"];
    let mut delay_ms: u64 = 150;
    let mut epochs_seen = 0;
    for round in 0..20 {
        let args: Vec<&str> = if round == 0 || !dir.path().join("run/config.json").exists() {
            first.iter().chain(&["--out", "run"]).copied().collect()
        } else {
            again.to_vec()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_digits"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A fixed pseudo-random sequence of delays between 150 ms and 1.4 s.
        delay_ms = 150 + (delay_ms * 7919 + 104_729) % 1250;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let path = dir.path().join("run");
        if !path.join("config.json").exists() {
            // Killed before the first checkpoint: nothing claims to be a run.
            continue;
        }
        let run = RunDir::open(&path).unwrap();
        let config = run.config().unwrap();
        let (_, model) = run
            .load_model(&Device::flex())
            .unwrap_or_else(|err| panic!("round {round}: {err:#}"));
        drop(model);
        let metrics = run.metrics().unwrap();
        assert!(
            metrics.len() >= config.epochs_done,
            "round {round}: {} epochs recorded, {} claimed",
            metrics.len(),
            config.epochs_done
        );
        assert!(
            config.epochs_done >= epochs_seen,
            "round {round}: went backwards"
        );
        epochs_seen = config.epochs_done;
        assert!(run.optimizer_state().unwrap().is_some());
        let leftovers: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with('.') || name.ends_with(".tmp"))
            .collect();
        // A temporary file from an interrupted write may remain; it is never read.
        assert!(leftovers.len() <= 1, "round {round}: {leftovers:?}");
    }
    assert!(epochs_seen > 0, "no checkpoint was ever written");
}
