//! Downloads against a local server on 127.0.0.1 that serves good, truncated, stalled, wrong
//! and missing files: every failure is a clear error, leaves no file behind, and the next run
//! recovers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{Behaviour, Server};
use digits::data::catalog::{DataFile, DatasetName};
use digits::data::download::{self, Failure, Silent};
use digits::data::{DataError, DataSource, DownloadError, FetchOptions, Split};

const MNIST_TEST_IMAGES: &[u8] = include_bytes!("../assets/mnist-lite/t10k-images-idx3-ubyte.gz");
const MNIST_TEST_LABELS: &[u8] = include_bytes!("../assets/mnist-lite/t10k-labels-idx1-ubyte.gz");
const MNIST_TRAIN_LABELS: &[u8] = include_bytes!("fixtures/mnist/train-labels-idx1-ubyte.gz");

fn options(mirrors: &[String]) -> FetchOptions {
    FetchOptions {
        mirrors: Some(mirrors.to_vec()),
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(1),
    }
}

/// Every file in `dir`: what a failed download must not add to.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The published MNIST files available offline (all but the training images), with their
/// catalogue entries: real bytes that match the published SHA-256 digests.
fn mnist_files() -> Vec<(DataFile, Vec<u8>)> {
    let files = DatasetName::Mnist.files().unwrap();
    vec![
        (files.train_labels, MNIST_TRAIN_LABELS.to_vec()),
        (files.test_images, MNIST_TEST_IMAGES.to_vec()),
        (files.test_labels, MNIST_TEST_LABELS.to_vec()),
    ]
}

fn catalogue(files: &[(DataFile, Vec<u8>)]) -> Vec<DataFile> {
    files.iter().map(|(f, _)| *f).collect()
}

fn all_failures(err: &DownloadError) -> Vec<Failure> {
    match err {
        DownloadError::AllMirrorsFailed { attempts, .. } => {
            attempts.iter().map(|a| a.failure.clone()).collect()
        }
        other => panic!("expected AllMirrorsFailed, got {other}"),
    }
}

#[test]
fn mirrors_are_tried_in_order_until_one_delivers_verified_files() {
    let files = mnist_files();
    let server = Server::start();
    let (broken, truncating, good) = (
        server.mirror("broken"),
        server.mirror("truncating"),
        server.mirror("good"),
    );
    for (file, bytes) in &files {
        server.route(&format!("broken/{}", file.name), Behaviour::Status(500));
        server.route(
            &format!("truncating/{}", file.name),
            Behaviour::Truncate(bytes.clone(), bytes.len() / 3),
        );
        server.route(
            &format!("good/{}", file.name),
            Behaviour::Serve(bytes.clone()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mirrors = [broken, truncating, good];
    download::fetch_files(
        &catalogue(&files),
        dir.path(),
        &mirrors,
        &options(&[]),
        &mut Silent,
    )
    .unwrap();
    let mut expected: Vec<String> = files.iter().map(|(f, _)| f.name.to_string()).collect();
    expected.sort();
    assert_eq!(files_in(dir.path()), expected);
    for (file, bytes) in &files {
        assert_eq!(&std::fs::read(dir.path().join(file.name)).unwrap(), bytes);
    }
    let first = files[0].0.name;
    assert_eq!(
        server.hits()[..3],
        [
            format!("broken/{first}"),
            format!("truncating/{first}"),
            format!("good/{first}")
        ]
    );

    // A second fetch finds every file verified and asks the server for nothing.
    let before = server.hits().len();
    download::fetch_files(
        &catalogue(&files),
        dir.path(),
        &mirrors,
        &options(&[]),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(server.hits().len(), before);
}

#[test]
fn a_file_that_fails_its_checksum_is_refused_and_not_kept() {
    let server = Server::start();
    let mirror = server.mirror("m");
    let mut wrong = MNIST_TEST_LABELS.to_vec();
    wrong[100] ^= 1;
    server.route("m/train-images-idx3-ubyte.gz", Behaviour::Serve(wrong));
    let dir = tempfile::tempdir().unwrap();
    let err = download::fetch_dataset(
        DatasetName::Mnist,
        dir.path(),
        &options(&[mirror]),
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(
        all_failures(&err)[..],
        [Failure::DigestMismatch { .. }]
    ));
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(
        !err.is_network(),
        "a wrong file must not pass for an unreachable mirror"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn truncated_stalled_and_missing_files_fail_with_every_attempt_listed() {
    let server = Server::start();
    let body = MNIST_TEST_IMAGES[..200_000].to_vec();
    server.route(
        "cut/train-images-idx3-ubyte.gz",
        Behaviour::Truncate(body.clone(), 5_000),
    );
    server.route(
        "slow/train-images-idx3-ubyte.gz",
        Behaviour::Stall(body, 5_000, Duration::from_secs(4)),
    );
    let mirrors = [
        server.mirror("cut"),
        server.mirror("slow"),
        server.mirror("absent"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = download::fetch_dataset(
        DatasetName::Mnist,
        dir.path(),
        &options(&mirrors),
        &mut Silent,
    )
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a stall must be cut short by the stall timeout"
    );
    let failures = all_failures(&err);
    assert!(
        matches!(
            failures[0],
            Failure::Truncated {
                expected: 200_000,
                received: 5_000
            }
        ),
        "{failures:?}"
    );
    assert!(matches!(failures[1], Failure::Network(_)), "{failures:?}");
    assert_eq!(failures[2], Failure::Status(404));
    assert!(err.is_network());
    let message = err.to_string();
    for mirror in &mirrors {
        assert!(
            message.contains(&format!("{mirror}train-images-idx3-ubyte.gz")),
            "{message}"
        );
    }
    assert!(
        message.contains("mnist-lite"),
        "the message says how to go on: {message}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn an_interrupted_fetch_keeps_verified_files_and_the_next_run_completes_it() {
    let files = mnist_files();
    let server = Server::start();
    let mirror = [server.mirror("m")];
    let ((first, first_bytes), (second, second_bytes)) = (&files[0], &files[1]);
    server.route(
        &format!("m/{}", first.name),
        Behaviour::Serve(first_bytes.clone()),
    );
    server.route(
        &format!("m/{}", second.name),
        Behaviour::Truncate(second_bytes.clone(), 1000),
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(
        download::fetch_files(
            &catalogue(&files),
            dir.path(),
            &mirror,
            &options(&[]),
            &mut Silent
        )
        .is_err()
    );
    assert_eq!(files_in(dir.path()), vec![first.name.to_string()]);

    for (file, bytes) in &files {
        server.route(&format!("m/{}", file.name), Behaviour::Serve(bytes.clone()));
    }
    download::fetch_files(
        &catalogue(&files),
        dir.path(),
        &mirror,
        &options(&[]),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(files_in(dir.path()).len(), 3);
    let fetched_first = server
        .hits()
        .iter()
        .filter(|h| h.ends_with(first.name))
        .count();
    assert_eq!(fetched_first, 1, "verified files are not fetched again");
}

#[test]
fn unreachable_full_mnist_falls_back_to_the_built_in_set_but_a_wrong_file_does_not() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let source = DataSource {
        dataset: DatasetName::Mnist,
        data_dir: dir.path().to_path_buf(),
        fetch: Some(options(&[server.mirror("nothing-here")])),
    };
    let resolved = source.resolve(&mut Silent).unwrap();
    assert_eq!(resolved.dataset, DatasetName::MnistLite);
    assert!(
        resolved
            .fallback
            .as_deref()
            .unwrap()
            .contains("no mirror could be reached")
    );
    assert_eq!(resolved.load(Split::Train).unwrap().len(), 10_000);

    let offline = DataSource {
        fetch: None,
        ..source.clone()
    };
    assert!(
        offline
            .resolve(&mut Silent)
            .unwrap()
            .fallback
            .unwrap()
            .contains("downloading is off")
    );

    server.route(
        "bad/train-images-idx3-ubyte.gz",
        Behaviour::Serve(b"not mnist".to_vec()),
    );
    let tampered = DataSource {
        fetch: Some(options(&[server.mirror("bad")])),
        ..source
    };
    let err = tampered.resolve(&mut Silent).unwrap_err();
    assert!(matches!(err, DataError::Download(_)), "{err}");
}

#[test]
fn fashion_mnist_missing_offline_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let source = DataSource {
        dataset: DatasetName::FashionMnist,
        data_dir: dir.path().to_path_buf(),
        fetch: None,
    };
    let err = source.resolve(&mut Silent).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("digits data fetch --dataset fashion-mnist"),
        "{message}"
    );
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
}

#[test]
fn the_cli_fetches_from_a_given_mirror_around_a_file_already_unpacked() {
    let files = mnist_files();
    let server = Server::start();
    for (file, bytes) in &files {
        server.route(&format!("m/{}", file.name), Behaviour::Serve(bytes.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    // The one file not available offline, as a user who unpacked it by hand would have it.
    let mnist_dir = dir.path().join("data/mnist");
    std::fs::create_dir_all(&mnist_dir).unwrap();
    std::fs::write(mnist_dir.join("train-images-idx3-ubyte"), b"kept as it is").unwrap();
    let output = common::digits(
        dir.path(),
        &["data", "fetch", "--mirror", &server.mirror("m")],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert!(
        common::stdout(&output).contains("mnist is ready in ./data/mnist"),
        "{}",
        common::stdout(&output)
    );
    assert_eq!(files_in(&mnist_dir).len(), 4);
    assert!(server.hits().iter().all(|h| !h.contains("train-images")));
}

#[test]
fn the_cli_reports_unreachable_mirrors_and_exits_non_zero() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let output = common::digits(
        dir.path(),
        &["data", "fetch", "--mirror", &server.mirror("none")],
    );
    common::assert_clean_failure(&output, "could not download train-images-idx3-ubyte.gz");
    assert!(common::stderr(&output).contains("HTTP status 404"));
}
