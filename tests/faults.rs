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

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_last_checkpoint_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    // 2.6 MB holds one checkpoint of the tutorial MLP (1.9 MB: weights, Adam's two moments)
    // but not the 1.25 MB temporary file of the next one beside it.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2600k", "tmpfs"])
        .arg(&disk)
        .output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: mounting a small tmpfs needs root (CAP_SYS_ADMIN), which this run lacks"
        );
        return;
    }
    let _unmount = Mounted(disk.clone());

    let output = common::digits(
        dir.path(),
        &[
            "train",
            "--dataset",
            "mnist-lite",
            "--limit",
            "640",
            "--epochs",
            "3",
            "--out",
            "disk/run",
        ],
    );
    common::assert_clean_failure(&output, "No space left on device");
    assert!(
        common::stderr(&output).contains("cannot write"),
        "{}",
        common::stderr(&output)
    );

    let run = RunDir::open(&disk.join("run")).unwrap();
    assert_eq!(run.config().unwrap().epochs_done, 1);
    run.load_model(&Device::flex()).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(disk.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
