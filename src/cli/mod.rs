//! Command-line parsing, one file per subcommand.

mod bench;
mod data;
mod eval;
mod interop;
mod interrupt;
mod predict;
mod progress;
mod report;
mod serve;
mod show;
mod train;

pub use train::Interrupted;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use digits::data::{DataSource, DatasetName, Fallback, FetchOptions, ResolvedData, Split};
use digits::device::{DeviceChoice, SelectedDevice};

/// Handwritten-digit recognition: the PyTorch MNIST tutorial in Rust, on Burn.
#[derive(Debug, Parser)]
#[command(name = "digits", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download and inspect datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Draw a grid of samples with their labels (the tutorial's 3x3 picture).
    Show(show::ShowArgs),
    /// Train a model (the tutorial's MLP and recipe by default).
    Train(train::TrainArgs),
    /// Measure a trained model on a test set.
    Eval(eval::EvalArgs),
    /// Read the digit (or number) in images: photos, scans, drawings.
    Predict(predict::PredictArgs),
    /// Serve a page to draw digits on, and the prediction API.
    Serve(serve::ServeArgs),
    /// Charts and an HTML page of what a run did.
    Report(report::ReportArgs),
    /// Overlay the curves of several runs, or train variants and compare them.
    Compare(report::CompareArgs),
    /// Time the workloads beside a naive plain-loop baseline and PyTorch.
    Bench(bench::BenchArgs),
    /// Make a run from a PyTorch state dict (.safetensors, .pt, .pth).
    Import(interop::ImportArgs),
    /// Write a run's model as a PyTorch state dict or an ONNX file.
    Export(interop::ExportArgs),
}

/// Runs the command; `Ok(false)` means it finished but some inputs failed (exit code 1).
pub fn run(cli: Cli) -> anyhow::Result<bool> {
    if matches!(
        cli.command,
        Command::Train(_) | Command::Compare(_) | Command::Bench(_)
    ) {
        digits::device::flush_subnormals_to_zero();
    }
    match cli.command {
        Command::Predict(args) => return predict::run(args),
        Command::Data(command) => data::run(command),
        Command::Show(args) => show::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Report(args) => report::report(args),
        Command::Compare(args) => report::compare(args),
        Command::Bench(args) => bench::run(args),
        Command::Import(args) => interop::import(args),
        Command::Export(args) => interop::export(args),
    }?;
    Ok(true)
}

/// The model `--model RUN...` names (several answer together), or the built-in ones.
fn load_predictor(
    models: &[PathBuf],
    device: &burn::tensor::Device,
) -> anyhow::Result<digits::predict::Predictor> {
    if models.is_empty() {
        return Ok(digits::predict::Predictor::built_in(device));
    }
    let runs: Vec<&std::path::Path> = models.iter().map(PathBuf::as_path).collect();
    Ok(digits::predict::Predictor::load(&runs, device)?)
}

/// Parses a whole number of at least `MIN` for a flag that also takes negative values (clap's
/// `allow_negative_numbers`): clap's unsigned parsers answer `-1` with "invalid digit found in
/// string", which hides what is wrong.
fn at_least<const MIN: i128>(text: &str) -> Result<usize, String> {
    let number: i128 = text
        .parse()
        .map_err(|_| format!("expected a whole number, at least {MIN}"))?;
    if number < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    usize::try_from(number).map_err(|_| "is too large".to_string())
}

/// Where data comes from; shared by every command that reads a dataset.
#[derive(Debug, Clone, Args)]
struct DataArgs {
    /// mnist, fashion-mnist or mnist-lite (built in).
    #[arg(long)]
    dataset: Option<DatasetName>,
    /// Folder holding datasets (each in a folder of its name) or directly a dataset's four IDX files.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Never download; use what is on disk (full MNIST falls back to mnist-lite).
    #[arg(long)]
    offline: bool,
    /// Base URL to download from instead of the published mirrors (repeatable, tried in order).
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
    /// Seconds to wait for a connection, or for the next byte of a download.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
}

impl DataArgs {
    fn source(&self, default: DatasetName) -> DataSource {
        DataSource {
            dataset: self.dataset.unwrap_or(default),
            data_dir: self.data_dir.clone(),
            fetch: (!self.offline).then(|| self.fetch_options()),
        }
    }

    fn fetch_options(&self) -> FetchOptions {
        let timeout = Duration::from_secs(self.timeout.max(1));
        FetchOptions {
            mirrors: (!self.mirrors.is_empty()).then(|| self.mirrors.clone()),
            connect_timeout: timeout,
            stall_timeout: timeout,
        }
    }

    /// Finds the files of `splits` (downloading them if allowed), warning on stderr when it
    /// falls back to mnist-lite, which it does only when no `--dataset` was given.
    fn resolve(&self, default: DatasetName, splits: &[Split]) -> anyhow::Result<ResolvedData> {
        let fallback = match self.dataset {
            Some(_) => Fallback::Never,
            None => Fallback::ToLite,
        };
        let resolved = self.source(default).resolve_splits(
            splits,
            fallback,
            &mut progress::DownloadBars::new(),
        )?;
        if let Some(reason) = &resolved.fallback {
            eprintln!(
                "warning: full MNIST is not available: {reason}.\n\
                 warning: using mnist-lite instead: 10,000 real MNIST training digits built into \
                 digits, and the official 10,000-image test set."
            );
        }
        Ok(resolved)
    }
}

/// `--device`; shared by every command that computes.
#[derive(Debug, Clone, Args)]
struct DeviceArgs {
    /// auto (CUDA, else a hardware wgpu adapter, else the CPU), cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

/// Where a command says which device it uses: stdout, or stderr where stdout carries the
/// command's answer, or nowhere where that answer is one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    Stdout,
    Stderr,
    Quiet,
}

impl DeviceArgs {
    /// Opens the device, saying which one and why.
    fn open(&self, announce: Announce) -> anyhow::Result<SelectedDevice> {
        let selected = self.device.select()?;
        let line = format!("Using {} device ({})", selected.name, selected.reason);
        match announce {
            Announce::Stdout => println!("{line}"),
            Announce::Stderr => eprintln!("{line}"),
            Announce::Quiet => {}
        }
        Ok(selected)
    }
}
