//! `digits predict`: read the digits in people's images.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use digits::device::DeviceChoice;
use digits::files::save_png;
use digits::predict::DigitPrediction;
use digits::prepare::{self, Prepared};
use serde_json::json;

/// No image file people feed digits is near this size; it bounds what stdin can make us hold.
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Image files, folders (every image in them, sorted), or - for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// A run folder [default: the model built into digits]; repeat it to average several
    /// models' probabilities (an ensemble).
    #[arg(long = "model", value_name = "RUN")]
    models: Vec<PathBuf>,
    /// How many of the most probable digits to show (text format).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    top: u8,
    /// text, json or csv.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the 28x28 image the model saw for each input into this folder.
    #[arg(long, value_name = "DIR")]
    save_preprocessed: Option<PathBuf>,
    /// Read a whole number: the digits left to right.
    #[arg(long)]
    number: bool,
    /// auto (CUDA, else a hardware wgpu adapter, else the CPU), cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Csv,
}

/// One input: where it came from and its bytes.
struct Input {
    name: String,
    stem: String,
    bytes: anyhow::Result<Vec<u8>>,
}

/// Returns `Ok(true)` when every input was read, `Ok(false)` when some failed.
pub fn run(args: PredictArgs) -> anyhow::Result<bool> {
    let selected = args.device.select()?;
    // stdout carries the predictions (CSV or JSON); the device goes to stderr.
    eprintln!("Using {} device ({})", selected.name, selected.reason);
    let device = selected.device;
    let predictor = super::load_predictor(&args.models, &device)?;
    if let Some(dir) = &args.save_preprocessed {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let inputs = gather(&args.paths)?;
    let mut all_ok = true;
    let mut json_entries = Vec::new();
    if args.format == Format::Csv {
        println!("path,digit,confidence");
    }
    for input in inputs {
        let outcome = input.bytes.and_then(|bytes| {
            let image = prepare::decode(&bytes)?;
            let digits = if args.number {
                prepare::prepare_number(&image)?
            } else {
                vec![prepare::prepare(&image)?]
            };
            save_preprocessed(args.save_preprocessed.as_deref(), &input.stem, &digits)?;
            Ok(predictor.predict(&digits))
        });
        match outcome {
            Ok(predictions) => {
                render(&args, &input.name, &predictions, &mut json_entries);
            }
            Err(err) => {
                all_ok = false;
                eprintln!("error: {}: {err:#}", input.name);
                match args.format {
                    Format::Text => {}
                    Format::Csv => println!("{},,", csv_field(&input.name)),
                    Format::Json => {
                        json_entries.push(json!({"path": input.name, "error": format!("{err:#}")}))
                    }
                }
            }
        }
    }
    if args.format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_entries).expect("JSON values serialise")
        );
    }
    Ok(all_ok)
}

fn render(
    args: &PredictArgs,
    name: &str,
    predictions: &[DigitPrediction],
    json_entries: &mut Vec<serde_json::Value>,
) {
    let number: String = predictions.iter().map(|p| p.digit.to_string()).collect();
    let weakest = predictions
        .iter()
        .map(|p| p.confidence)
        .fold(1.0f32, f32::min);
    match args.format {
        Format::Text if args.number => {
            let each: Vec<String> = predictions
                .iter()
                .map(|p| format!("{} {:.1}%", p.digit, 100.0 * p.confidence))
                .collect();
            println!("{name}: {number} ({})", each.join(", "));
        }
        Format::Text => {
            let p = &predictions[0];
            let mut line = format!("{name}: {} ({:.1}%)", p.digit, 100.0 * p.confidence);
            if args.top > 1 {
                let top: Vec<String> = p
                    .top(usize::from(args.top))
                    .iter()
                    .map(|(d, c)| format!("{d} {:.1}%", 100.0 * c))
                    .collect();
                line.push_str(&format!("  top {}: {}", args.top, top.join(", ")));
            }
            println!("{line}");
        }
        Format::Csv => println!("{},{number},{weakest:.6}", csv_field(name)),
        Format::Json if args.number => json_entries.push(json!({
            "path": name,
            "number": number,
            "confidence": weakest,
            "digits": predictions.iter().map(|p| json!({
                "digit": p.digit,
                "confidence": p.confidence,
                "probabilities": p.probabilities,
            })).collect::<Vec<_>>(),
        })),
        Format::Json => {
            let p = &predictions[0];
            json_entries.push(json!({
                "path": name,
                "digit": p.digit,
                "confidence": p.confidence,
                "probabilities": p.probabilities,
            }));
        }
    }
}

/// Quotes a CSV field when it needs it.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Expands folders into their images (sorted) and reads each input; a path that cannot be
/// read becomes an input that carries its error, so the others still go on.
fn gather(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            let read = std::io::stdin()
                .take(MAX_INPUT_BYTES)
                .read_to_end(&mut bytes)
                .map(|_| bytes)
                .context("cannot read standard input");
            inputs.push(Input {
                name: "-".into(),
                stem: "stdin".into(),
                bytes: read,
            });
        } else if path.is_dir() {
            let mut images: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .flatten()
                .map(|entry| entry.path())
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            images.sort();
            inputs.extend(images.iter().map(|p| read_file(p)));
        } else {
            inputs.push(read_file(path));
        }
    }
    Ok(inputs)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_file(path: &Path) -> Input {
    let bytes = std::fs::File::open(path)
        .and_then(|file| {
            let mut bytes = Vec::new();
            file.take(MAX_INPUT_BYTES).read_to_end(&mut bytes)?;
            Ok(bytes)
        })
        .with_context(|| format!("cannot read {}", path.display()));
    Input {
        name: path.display().to_string(),
        stem: path
            .file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().into_owned()),
        bytes,
    }
}

/// Saves what the model saw as `STEM.png` (`STEM-1.png`, ... for the digits of a number).
fn save_preprocessed(dir: Option<&Path>, stem: &str, digits: &[Prepared]) -> anyhow::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    for (i, digit) in digits.iter().enumerate() {
        let name = match digits.len() {
            1 => format!("{stem}.png"),
            _ => format!("{stem}-{}.png", i + 1),
        };
        save_png(&digit.to_image().into(), &dir.join(name))?;
    }
    Ok(())
}
