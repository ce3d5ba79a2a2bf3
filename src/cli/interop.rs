//! `digits import` and `digits export`: PyTorch state dicts in, PyTorch and ONNX files out.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use digits::data::DatasetName;
use digits::experiment;
use digits::files::write_atomically;
use digits::interop;
use digits::model::{Activation, ModelKind};
use digits::run::{RunConfig, RunDir};

use super::train::in_flag_terms;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A PyTorch state dict: .safetensors, or .pt/.pth from torch.save.
    file: PathBuf,
    /// The architecture the weights are for: mlp, mlp-large, lenet5, cnn or cnn-large.
    #[arg(long, default_value = "mlp")]
    arch: ModelKind,
    /// MLP hidden layer widths [default: the architecture's, 128,400 for mlp].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    hidden: Option<Vec<u32>>,
    /// relu or sigmoid [default: relu].
    #[arg(long)]
    activation: Option<Activation>,
    /// The dataset the weights were trained on, used by eval by default.
    #[arg(long, default_value = "mnist")]
    dataset: DatasetName,
    /// The run folder to create.
    #[arg(long, default_value = "runs/imported")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// safetensors with PyTorch's names and layout, for `load_state_dict`.
    Pytorch,
    /// An ONNX graph (opset 13).
    Onnx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder to export.
    run: PathBuf,
    /// pytorch or onnx.
    #[arg(long)]
    format: ExportFormat,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    if RunDir::holds_run(&args.out) {
        bail!(
            "{} already holds a run; choose another --out",
            args.out.display()
        );
    }
    let hidden: Option<Vec<usize>> = args
        .hidden
        .as_ref()
        .map(|widths| widths.iter().map(|&w| w as usize).collect());
    let model = experiment::architecture(args.arch, hidden.as_deref(), args.activation)
        .map_err(in_flag_terms)?;
    let imported = interop::import_state_dict(&args.file, &model)?;
    if !imported.ignored.is_empty() {
        println!(
            "Ignored {} tensor(s) that are not parameters: {}",
            imported.ignored.len(),
            imported.ignored.join(", ")
        );
    }
    let run = RunDir::create(&args.out)?;
    let config = RunConfig {
        digits_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        train: None,
        imported: Some(imported.provenance),
        dataset: args.dataset,
        epochs_done: 0,
        batches_done: 0,
    };
    run.save(&config, &imported.weights, None, &[], false)?;
    println!(
        "Imported {} ({}) into {}",
        args.file.display(),
        config.model.describe(),
        args.out.display()
    );
    Ok(())
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let run = RunDir::open(&args.run)?;
    let (config, model) = run.load_model(&burn::tensor::Device::flex())?;
    let weights = model.weights();
    let bytes = match args.format {
        ExportFormat::Pytorch => interop::export_state_dict(model.plan(), &weights)?,
        ExportFormat::Onnx => interop::onnx::export(model.plan(), &weights),
    };
    write_atomically(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("Wrote {} ({} bytes)", args.out.display(), bytes.len());
    if let (ExportFormat::Pytorch, Some(n)) = (args.format, config.model.normalization()) {
        println!(
            "Note: this model standardises its input: feed it (pixels - {}) / {}",
            n.mean, n.std
        );
    }
    Ok(())
}
