//! Downloading a dataset's files: mirrors tried in order, every file checked against its
//! published digest, written to a temporary file beside its destination and renamed into place
//! only once it is whole and verified, so an interrupted or corrupt download leaves nothing.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::catalog::{DataFile, DatasetName, DigestKind};

/// No MNIST-like file is near this size (the largest is 26 MB); it stops a misbehaving server
/// from filling the disk.
const MAX_DOWNLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Base URLs to try instead of the dataset's published mirrors.
    pub mirrors: Option<Vec<String>>,
    /// Time allowed to resolve a host and open a connection.
    pub connect_timeout: Duration,
    /// A transfer that goes this long without receiving a byte is abandoned as stalled.
    pub stall_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            mirrors: None,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// What a download reports while it runs; the CLI draws progress bars from it.
pub trait FetchProgress {
    /// A transfer of `file` from `url` begins; `total` is its size when the server says it.
    fn started(&mut self, _file: &str, _url: &str, _total: Option<u64>) {}
    /// `bytes` more have arrived.
    fn advanced(&mut self, _bytes: u64) {}
    /// The file arrived whole and verified.
    fn finished(&mut self, _file: &str) {}
    /// This attempt failed; the next mirror will be tried, if any.
    fn failed(&mut self, _url: &str, _reason: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl FetchProgress for Silent {}

/// Why one attempt at one URL failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: the host could not be resolved or reached, or the connection broke or stalled.
    Network(String),
    /// The server answered with an error status.
    Status(u16),
    /// The connection closed before the promised length arrived.
    Truncated { expected: u64, received: u64 },
    /// The server sent more than any dataset file can hold.
    TooLarge,
    /// The bytes arrived but are not the published file.
    DigestMismatch { expected: String, found: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Network(reason) => write!(f, "{reason}"),
            Failure::Status(code) => write!(f, "HTTP status {code}"),
            Failure::Truncated { expected, received } => {
                write!(f, "connection closed after {received} of {expected} bytes")
            }
            Failure::TooLarge => write!(f, "more than {MAX_DOWNLOAD_BYTES} bytes"),
            Failure::DigestMismatch { expected, found } => {
                write!(f, "checksum mismatch: expected {expected}, got {found}")
            }
        }
    }
}

/// One URL tried and why it failed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub url: String,
    pub failure: Failure,
}

/// Every way a download can fail.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "could not download {file}; tried:\n{}\nPut the dataset's four files into {dir} by hand \
         (or point --data-dir at a folder holding them), or use --dataset mnist-lite, which is \
         built in",
        format_attempts(.attempts)
    )]
    AllMirrorsFailed {
        file: String,
        dir: String,
        attempts: Vec<Attempt>,
    },
    #[error("{dataset} is built in and has nothing to download")]
    NothingToDownload { dataset: DatasetName },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl DownloadError {
    /// True when no mirror could deliver the bytes at all, as opposed to delivering wrong ones
    /// or the disk refusing them.
    pub fn is_network(&self) -> bool {
        match self {
            DownloadError::AllMirrorsFailed { attempts, .. } => attempts.iter().all(|a| {
                matches!(
                    a.failure,
                    Failure::Network(_) | Failure::Status(_) | Failure::Truncated { .. }
                )
            }),
            _ => false,
        }
    }
}

fn format_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("  {}: {}", a.url, a.failure))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Downloads every file of `dataset` that `dir` does not already hold verified, from the
/// mirrors in `options` or else the dataset's published ones.
pub fn fetch_dataset(
    dataset: DatasetName,
    dir: &Path,
    options: &FetchOptions,
    progress: &mut dyn FetchProgress,
) -> Result<(), DownloadError> {
    let files = dataset
        .files()
        .ok_or(DownloadError::NothingToDownload { dataset })?;
    let mirrors: Vec<String> = match &options.mirrors {
        Some(mirrors) => mirrors.clone(),
        None => dataset.mirrors().iter().map(|m| m.to_string()).collect(),
    };
    fetch_files(&files.all(), dir, &mirrors, options, progress)
}

/// Downloads each of `files` that `dir` does not already hold verified, trying `mirrors` in
/// order for each.
pub fn fetch_files(
    files: &[DataFile],
    dir: &Path,
    mirrors: &[String],
    options: &FetchOptions,
    progress: &mut dyn FetchProgress,
) -> Result<(), DownloadError> {
    fs::create_dir_all(dir).map_err(|source| DownloadError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let agent = agent(options);
    for file in files {
        if !has_verified(dir, file) {
            fetch_file(&agent, mirrors, file, dir, progress)?;
        }
    }
    Ok(())
}

/// A file counts as present when its unpacked form exists (a user put it there) or its gzipped
/// form matches the published digest (a partial or foreign file is fetched again).
fn has_verified(dir: &Path, file: &DataFile) -> bool {
    if dir.join(file.raw_name()).is_file() {
        return true;
    }
    fs::File::open(dir.join(file.name))
        .ok()
        .and_then(|mut f| hex_digest(file.digest.kind, &mut f).ok())
        .is_some_and(|hex| hex == file.digest.hex)
}

fn agent(options: &FetchOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(options.connect_timeout))
        .timeout_resolve(Some(options.connect_timeout))
        .timeout_per_read(Some(options.stall_timeout))
        .timeout_recv_response(Some(options.stall_timeout))
        .user_agent(concat!("digits/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn fetch_file(
    agent: &ureq::Agent,
    mirrors: &[String],
    file: &DataFile,
    dir: &Path,
    progress: &mut dyn FetchProgress,
) -> Result<(), DownloadError> {
    let destination = dir.join(file.name);
    let mut attempts = Vec::new();
    for mirror in mirrors {
        let url = join_url(mirror, file.name);
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(|source| DownloadError::Write {
                path: dir.display().to_string(),
                source,
            })?;
        match download_to(agent, &url, file, temp.as_file_mut(), progress) {
            Ok(()) => {
                return persist(temp, &destination).map(|()| progress.finished(file.name));
            }
            Err(Outcome::Failed(failure)) => {
                progress.failed(&url, &failure.to_string());
                attempts.push(Attempt { url, failure });
            }
            Err(Outcome::Disk(source)) => {
                return Err(DownloadError::Write {
                    path: temp.path().display().to_string(),
                    source,
                });
            }
        }
    }
    Err(DownloadError::AllMirrorsFailed {
        file: file.name.to_string(),
        dir: dir.display().to_string(),
        attempts,
    })
}

fn join_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

fn persist(temp: tempfile::NamedTempFile, destination: &Path) -> Result<(), DownloadError> {
    let write_error = |source| DownloadError::Write {
        path: destination.display().to_string(),
        source,
    };
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(destination)
        .map_err(|err| write_error(err.error))?;
    Ok(())
}

enum Outcome {
    Failed(Failure),
    Disk(io::Error),
}

fn download_to(
    agent: &ureq::Agent,
    url: &str,
    file: &DataFile,
    out: &mut fs::File,
    progress: &mut dyn FetchProgress,
) -> Result<(), Outcome> {
    let mut response = agent.get(url).call().map_err(|err| {
        Outcome::Failed(match err {
            ureq::Error::StatusCode(code) => Failure::Status(code),
            other => Failure::Network(other.to_string()),
        })
    })?;
    let expected = response.body().content_length();
    progress.started(file.name, url, expected);
    let mut reader = response.body_mut().as_reader().take(MAX_DOWNLOAD_BYTES + 1);
    let mut hasher = Hasher::new(file.digest.kind);
    let mut received = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(Outcome::Failed(match expected {
                    Some(expected) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        Failure::Truncated { expected, received }
                    }
                    _ => Failure::Network(format!("after {received} bytes: {err}")),
                }));
            }
        };
        received += n as u64;
        if received > MAX_DOWNLOAD_BYTES {
            return Err(Outcome::Failed(Failure::TooLarge));
        }
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(Outcome::Disk)?;
        progress.advanced(n as u64);
    }
    if let Some(expected) = expected.filter(|&e| e != received) {
        return Err(Outcome::Failed(Failure::Truncated { expected, received }));
    }
    let found = hasher.finish();
    if found != file.digest.hex {
        return Err(Outcome::Failed(Failure::DigestMismatch {
            expected: file.digest.hex.to_string(),
            found,
        }));
    }
    out.flush().map_err(Outcome::Disk)
}

enum Hasher {
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    fn new(kind: DigestKind) -> Self {
        match kind {
            DigestKind::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestKind::Md5 => Hasher::Md5(Md5::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        let bytes = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The digest of everything `reader` holds, as lowercase hex.
pub(crate) fn hex_digest(kind: DigestKind, reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Hasher::new(kind);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hasher.finish()),
            n => hasher.update(&buffer[..n]),
        }
    }
}
