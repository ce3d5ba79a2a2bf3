//! Faults from outside: the process killed outright while it trains and saves.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use burn::tensor::Device;
use digits::run::RunDir;

/// The temporary files in `run`: a write in progress, or one abandoned by a kill.
fn temporary_files(run: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(run)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until a checkpoint is being written in `run` (a temporary file other than the
/// abandoned `stale` ones exists there), for at most `limit`; returns whether one was seen.
fn wait_for_a_save(run: &std::path::Path, stale: &[String], limit: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if temporary_files(run)
            .iter()
            .any(|name| !stale.contains(name))
        {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

#[test]
fn kill_9_during_twenty_checkpoint_saves_always_leaves_a_run_that_loads_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run");
    // Tiny epochs, so checkpoints are written several times a second.
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
    let mut epochs_seen = 0;
    let mut caught_saving = 0;
    for round in 0..20 {
        let args: Vec<&str> = if !path.join("config.json").exists() {
            first.iter().chain(&["--out", "run"]).copied().collect()
        } else {
            again.to_vec()
        };
        let stale = temporary_files(&path);
        let mut child = Command::new(env!("CARGO_BIN_EXE_digits"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let a varying number of saves pass, then kill in the middle of one.
        std::thread::sleep(Duration::from_millis(50 + 37 * round));
        if wait_for_a_save(&path, &stale, Duration::from_secs(10)) {
            caught_saving += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        if !path.join("config.json").exists() {
            // Killed during the very first save: nothing claims to be a run yet.
            continue;
        }
        let run = RunDir::open(&path).unwrap();
        let config = run.config().unwrap();
        run.load_model(&Device::flex())
            .unwrap_or_else(|err| panic!("round {round}: {err:#}"));
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
    }
    assert!(epochs_seen > 0, "no checkpoint was ever written");
    // A run left to finish clears the temporary files the kills abandoned.
    let finished = common::digits(
        dir.path(),
        &[
            "train", "--resume", "run", "--limit", "320", "--epochs", "1",
        ],
    );
    assert!(finished.status.success(), "{}", common::stderr(&finished));
    assert_eq!(temporary_files(&path), Vec::<String>::new());
    eprintln!("{caught_saving} of 20 kills landed while a checkpoint file was being written");
    // Most kills land while a file is being written (a few may miss the short window).
    assert!(
        caught_saving >= 15,
        "only {caught_saving} of 20 kills landed during a save"
    );
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
