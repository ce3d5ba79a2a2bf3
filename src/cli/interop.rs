//! `digits import` and `digits export`: PyTorch state dicts and ONNX graphs in, PyTorch and
//! ONNX files out.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use digits::data::DatasetName;
use digits::files::write_atomically;
use digits::interop::{self, onnx_import};
use digits::model::{Activation, ModelConfig, ModelKind, Weights};
use digits::run::{Provenance, RunConfig, RunDir};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A PyTorch state dict (.safetensors, or .pt/.pth from torch.save), or an ONNX model,
    /// which describes its own network (--arch, --hidden and --activation do not apply).
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
    if args.out.join("config.json").exists() {
        bail!(
            "{} already holds a run; choose another --out",
            args.out.display()
        );
    }
    if onnx_import::is_onnx_file(&args.file) {
        return import_onnx(&args);
    }
    let mut model = args.arch.config();
    match &mut model {
        ModelConfig::Mlp(mlp) => {
            if let Some(hidden) = &args.hidden {
                mlp.hidden = hidden.iter().map(|&w| w as usize).collect();
            }
            mlp.activation = args.activation.unwrap_or(mlp.activation);
        }
        ModelConfig::Cnn(cnn) => {
            if args.hidden.is_some() {
                bail!(
                    "--hidden sets the widths of an MLP; the convolutional models have fixed layers"
                );
            }
            cnn.activation = args.activation.unwrap_or(cnn.activation);
        }
        ModelConfig::Layers(_) => unreachable!("--arch names digits' own architectures"),
    }
    let imported = interop::import_state_dict(&args.file, &model)?;
    if !imported.ignored.is_empty() {
        println!(
            "Ignored {} tensor(s) that are not parameters: {}",
            imported.ignored.len(),
            imported.ignored.join(", ")
        );
    }
    save_import(&args, model, &imported.weights, imported.provenance)
}

/// An ONNX graph as a run: the network it describes, with its weights.
fn import_onnx(args: &ImportArgs) -> anyhow::Result<()> {
    if args.hidden.is_some() || args.activation.is_some() {
        bail!("an ONNX file describes its own network: --hidden and --activation do not apply");
    }
    let imported = interop::import_onnx(&args.file)?;
    let network = imported.network;
    if let Some(n) = network.layers.normalization {
        println!(
            "The graph standardises its input as (pixels - {}) / {}: kept as the model's \
             normalisation",
            n.mean, n.std
        );
    }
    if let Some(softmax) = network.final_softmax {
        println!(
            "Left out the graph's final {softmax}: digits takes the log-softmax of the logits \
             itself, so the predicted digits, probabilities and loss are the same"
        );
    }
    let model = ModelConfig::Layers(network.layers);
    save_import(args, model, &network.weights, imported.provenance)
}

/// The imported run, which records where its weights came from rather than any training.
fn save_import(
    args: &ImportArgs,
    model: ModelConfig,
    weights: &Weights,
    provenance: Provenance,
) -> anyhow::Result<()> {
    let run = RunDir::create(&args.out)?;
    let config = RunConfig {
        digits_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        train: None,
        imported: Some(provenance),
        dataset: args.dataset,
        epochs_done: 0,
        batches_done: 0,
    };
    run.save(&config, weights, None, &[], false)?;
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
