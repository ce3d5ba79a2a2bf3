//! `digits import` and `digits export`: PyTorch state dicts and ONNX graphs in, PyTorch and
//! ONNX files out.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use digits::data::DatasetName;
use digits::experiment;
use digits::files::write_atomically;
use digits::interop::{self, Network, onnx_import};
use digits::model::{Activation, LayersConfig, ModelConfig, ModelKind, Normalization, Weights};
use digits::run::{Provenance, RunConfig, RunDir};

use super::train::in_flag_terms;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A PyTorch state dict (safetensors, or any file torch.save wrote: .pt, .pth, .pth.tar,
    /// legacy pickles, checkpoint dicts, whole modules) or an ONNX model, which describes its
    /// own network; the format is read from the content.
    file: PathBuf,
    /// The network as layers, e.g. conv6k5,relu,pool,conv16k5,relu,pool,fc120,relu,fc84,relu,fc10
    /// [default: inferred from the tensors' shapes].
    #[arg(long, conflicts_with_all = ["arch", "hidden", "activation"])]
    layers: Option<String>,
    /// One of digits' architectures: mlp, mlp-large, lenet5, cnn or cnn-large [default:
    /// inferred from the tensors' shapes].
    #[arg(long)]
    arch: Option<ModelKind>,
    /// MLP hidden layer widths (with --arch mlp or alone).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    hidden: Option<Vec<u32>>,
    /// relu, sigmoid, tanh or gelu: a state dict cannot say [default: relu].
    #[arg(long)]
    activation: Option<Activation>,
    /// OLD=NEW: rename a tensor, or every tensor under module OLD, before matching (tensors
    /// are matched by position, in the natural order of their names within each layer kind).
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_rename)]
    rename: Vec<(String, String)>,
    /// MEAN,STD the weights were trained on: inputs become (pixels - MEAN) / STD, e.g.
    /// 0.1307,0.3081 for transforms.Normalize((0.1307,), (0.3081,)).
    #[arg(long, value_name = "MEAN,STD", value_parser = parse_normalize)]
    normalize: Option<Normalization>,
    /// The dataset the weights were trained on, used by eval by default.
    #[arg(long, default_value = "mnist")]
    dataset: DatasetName,
    /// The run folder to create.
    #[arg(long, default_value = "runs/imported")]
    out: PathBuf,
}

fn parse_rename(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => Ok((old.into(), new.into())),
        _ => Err(format!("'{text}' is not OLD=NEW")),
    }
}

fn parse_normalize(text: &str) -> Result<Normalization, String> {
    let numbers: Option<Vec<f32>> = text.split(',').map(|v| v.trim().parse().ok()).collect();
    match numbers.as_deref() {
        Some(&[mean, std]) if mean.is_finite() && std.is_finite() && std > 0.0 => {
            Ok(Normalization { mean, std })
        }
        _ => Err(format!(
            "'{text}' is not MEAN,STD (two numbers, STD above 0), e.g. 0.1307,0.3081"
        )),
    }
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
    if onnx_import::is_onnx_file(&args.file) {
        return import_onnx(&args);
    }
    let network = if let Some(text) = &args.layers {
        Network::Given(ModelConfig::Layers(LayersConfig::parse(text)?))
    } else if args.arch.is_some() || args.hidden.is_some() {
        let hidden: Option<Vec<usize>> = args
            .hidden
            .as_ref()
            .map(|widths| widths.iter().map(|&w| w as usize).collect());
        let model = experiment::architecture(
            args.arch.unwrap_or_default(),
            hidden.as_deref(),
            args.activation,
        )
        .map_err(in_flag_terms)?;
        Network::Given(model)
    } else {
        Network::Infer(args.activation.unwrap_or_default())
    };
    let imported = interop::import(&args.file, &network, &args.rename, args.normalize)?;
    if let Some(inferred) = &imported.inferred {
        println!(
            "Inferred the network from the file's tensors: {}",
            inferred.text
        );
        for other in &inferred.alternatives {
            println!("  also fits (--layers chooses): {other}");
        }
        if args.activation.is_none() {
            println!(
                "  (a state dict holds no activation or pooling kind: relu and max pooling \
                 assumed; --activation changes the one, --layers describes any network)"
            );
        }
    }
    if !imported.ignored.is_empty() {
        const SHOWN: usize = 8;
        let mut list = imported.ignored[..imported.ignored.len().min(SHOWN)].join(", ");
        if imported.ignored.len() > SHOWN {
            list.push_str(&format!(" and {} more", imported.ignored.len() - SHOWN));
        }
        println!(
            "Ignored {} tensor(s) that are not parameters: {list}",
            imported.ignored.len(),
        );
    }
    if !imported.provenance.names.is_empty() {
        println!(
            "Matched the file's tensors to the network's by position; config.json keeps the \
             file's names"
        );
    }
    match imported.config.normalization() {
        Some(n) if imported.normalization_from_file => println!(
            "Inputs are normalised as the file's metadata says: (pixels - {}) / {}",
            n.mean, n.std
        ),
        Some(n) => println!("Inputs are normalised: (pixels - {}) / {}", n.mean, n.std),
        None => println!(
            "Note: a state dict cannot say how its inputs were normalised. If the model was \
             trained on normalised images (often Normalize((0.1307,), (0.3081,))), import it \
             with --normalize 0.1307,0.3081, or it will score lower than it should."
        ),
    }
    save_import(
        &args,
        imported.config,
        &imported.weights,
        imported.provenance,
    )
}

/// An ONNX graph as a run: the network it describes, with its weights.
fn import_onnx(args: &ImportArgs) -> anyhow::Result<()> {
    if args.hidden.is_some()
        || args.activation.is_some()
        || args.arch.is_some()
        || args.layers.is_some()
        || !args.rename.is_empty()
    {
        bail!(
            "an ONNX file describes its own network and names: --arch, --layers, --hidden, \
             --activation and --rename do not apply"
        );
    }
    let imported = interop::import_onnx(&args.file)?;
    let mut network = imported.network;
    match (network.layers.normalization, args.normalize) {
        (Some(_), Some(_)) => bail!(
            "the graph standardises its input itself (a leading Sub/Div): --normalize would do \
             it twice"
        ),
        (Some(n), None) => println!(
            "The graph standardises its input as (pixels - {}) / {}: kept as the model's \
             normalisation",
            n.mean, n.std
        ),
        (None, Some(n)) => {
            println!("Inputs are normalised: (pixels - {}) / {}", n.mean, n.std);
            network.layers.normalization = Some(n);
        }
        (None, None) => {}
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
