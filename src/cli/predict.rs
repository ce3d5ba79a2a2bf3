//! `digits predict`: read the digits in people's images.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use digits::files::save_png;
use digits::labelled::{IMAGE_EXTENSIONS, is_image};
use digits::predict::{DigitPrediction, Verdict};
use digits::prepare::{self, Prepared};
use serde_json::json;

use super::{Announce, DeviceArgs};

/// No image file people feed digits is near this size; it bounds what stdin can make us hold.
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Image files, folders (every image in them, sorted), or - for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// A run folder [default: the models built into digits]; repeat it to average several
    /// models' probabilities (an ensemble).
    #[arg(long = "model", value_name = "RUN")]
    models: Vec<PathBuf>,
    /// How many of the most probable digits to show (text format).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    top: u8,
    /// text, json or csv.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the 28x28 image each input was prepared into (the view the model reads first)
    /// into this folder.
    #[arg(long, value_name = "DIR")]
    save_preprocessed: Option<PathBuf>,
    /// Read a whole number: the digits left to right.
    #[arg(long)]
    number: bool,
    #[command(flatten)]
    device: DeviceArgs,
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
    /// The file or folder it was read from; `None` for standard input.
    path: Option<PathBuf>,
    bytes: anyhow::Result<Vec<u8>>,
}

/// Returns `Ok(true)` when every input was read, `Ok(false)` when some failed.
pub fn run(args: PredictArgs) -> anyhow::Result<bool> {
    // stdout carries the predictions (CSV or JSON); the device goes to stderr.
    let selected = args.device.open(Announce::Stderr)?;
    let device = selected.device;
    let predictor = super::load_predictor(&args.models, &device)?;
    let inputs = gather(&args.paths)?;
    let mut preprocessed = match &args.save_preprocessed {
        Some(dir) => Some(PreprocessedFolder::new(dir, &inputs)?),
        None => None,
    };
    let mut all_ok = true;
    let mut json_entries = Vec::new();
    if args.format == Format::Csv {
        println!("path,digit,confidence,verdict,error");
    }
    for (index, input) in inputs.into_iter().enumerate() {
        let outcome = input.bytes.and_then(|bytes| {
            let image = prepare::decode(&bytes)?;
            let digits = if args.number {
                prepare::prepare_number(&image)?
            } else {
                vec![prepare::prepare(&image)?]
            };
            if let Some(folder) = &mut preprocessed {
                folder.save(index, &input.name, &digits)?;
            }
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
                    Format::Csv => println!(
                        "{},,,,{}",
                        csv_field(&input.name),
                        csv_field(&format!("{err:#}"))
                    ),
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
                .map(|p| match p.verdict {
                    Verdict::Digit => format!("{} {:.1}%", p.digit, 100.0 * p.confidence),
                    other => format!(
                        "{} {:.1}% {}",
                        p.digit,
                        100.0 * p.confidence,
                        other.as_str()
                    ),
                })
                .collect();
            println!("{name}: {number} ({})", each.join(", "));
        }
        Format::Text => {
            let p = &predictions[0];
            let mut line = match p.verdict {
                Verdict::Digit => format!("{name}: {} ({:.1}%)", p.digit, 100.0 * p.confidence),
                Verdict::Unsure => {
                    let [(first, p1), (second, p2)] = [p.top(2)[0], p.top(2)[1]];
                    format!(
                        "{name}: unsure: {first} ({:.1}%) or {second} ({:.1}%)",
                        100.0 * p1,
                        100.0 * p2
                    )
                }
                Verdict::NotADigit => format!("{name}: not a digit"),
                Verdict::SeveralDigits => {
                    format!("{name}: several digits (read them with --number)")
                }
            };
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
        Format::Csv => {
            // A number is only as trustworthy as its least trustworthy digit.
            let verdict = predictions
                .iter()
                .map(|p| p.verdict)
                .find(|&v| v != Verdict::Digit)
                .unwrap_or(Verdict::Digit);
            println!(
                "{},{number},{weakest:.6},{},",
                csv_field(name),
                verdict.code()
            )
        }
        Format::Json if args.number => json_entries.push(json!({
            "path": name,
            "number": number,
            "confidence": weakest,
            "digits": predictions.iter().map(|p| json!({
                "digit": p.digit,
                "confidence": p.confidence,
                "verdict": p.verdict,
                "probabilities": p.probabilities,
            })).collect::<Vec<_>>(),
        })),
        Format::Json => {
            let p = &predictions[0];
            json_entries.push(json!({
                "path": name,
                "digit": p.digit,
                "confidence": p.confidence,
                "verdict": p.verdict,
                "probabilities": p.probabilities,
            }));
        }
    }
}

/// Quotes a CSV field when it needs it.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Expands folders into their images (sorted) and reads each input; a path that cannot be
/// read, or a folder without images, becomes an input that carries its error, so the others
/// still go on.
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
                path: None,
                bytes: read,
            });
        } else if path.is_dir() {
            let mut images: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .flatten()
                .map(|entry| entry.path())
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if images.is_empty() {
                inputs.push(Input {
                    name: path.display().to_string(),
                    path: Some(path.clone()),
                    bytes: Err(anyhow::anyhow!(
                        "the folder holds no images (.{} files; subfolders are not read)",
                        IMAGE_EXTENSIONS.join(", .")
                    )),
                });
            }
            images.sort();
            inputs.extend(images.iter().map(|p| read_file(p)));
        } else {
            inputs.push(read_file(path));
        }
    }
    Ok(inputs)
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
        path: Some(path.to_path_buf()),
        bytes,
    }
}

/// Where `--save-preprocessed` writes what the model saw. Each input keeps its path below the
/// folders all the inputs share, so `a/0.png` and `b/0.png` stay apart; a name already
/// written in this run (`0.png` beside `0.jpg`) gets a `~2`, `~3`, ... suffix, with a note,
/// rather than overwriting what another input saw.
struct PreprocessedFolder {
    dir: PathBuf,
    /// Each input's path below `dir`, without its extension, in the order of the inputs.
    stems: Vec<PathBuf>,
    written: HashSet<PathBuf>,
}

impl PreprocessedFolder {
    fn new(dir: &Path, inputs: &[Input]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // A path's `..`, `.` and root are left out: what remains names it below `dir`.
        let parts: Vec<Option<Vec<&std::ffi::OsStr>>> = inputs
            .iter()
            .map(|input| {
                input.path.as_deref().map(|path| {
                    path.components()
                        .filter_map(|c| match c {
                            Component::Normal(part) => Some(part),
                            _ => None,
                        })
                        .collect()
                })
            })
            .collect();
        let shared = inputs
            .iter()
            .zip(&parts)
            .filter(|(input, _)| input.bytes.is_ok())
            .filter_map(|(_, parts)| parts.as_deref())
            .map(|parts| &parts[..parts.len().saturating_sub(1)])
            .reduce(|a, b| &a[..a.iter().zip(b).take_while(|(x, y)| x == y).count()])
            .map_or(0, <[_]>::len);
        let stems = parts
            .iter()
            .map(|parts| {
                let mut stem: PathBuf = match parts {
                    Some(parts) => parts.iter().skip(shared).collect(),
                    None => "stdin".into(),
                };
                stem.set_extension("");
                if stem.as_os_str().is_empty() {
                    stem.push("image");
                }
                stem
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            stems,
            written: HashSet::new(),
        })
    }

    /// Saves input `index`'s digits as `STEM.png` (`STEM-1.png`, ... for the digits of a
    /// number).
    fn save(&mut self, index: usize, name: &str, digits: &[Prepared]) -> anyhow::Result<()> {
        for (i, digit) in digits.iter().enumerate() {
            let candidate = |copy: usize| {
                let mut file = self.stems[index].clone().into_os_string();
                if digits.len() > 1 {
                    file.push(format!("-{}", i + 1));
                }
                if copy > 1 {
                    file.push(format!("~{copy}"));
                }
                file.push(".png");
                self.dir.join(file)
            };
            let path = (1..)
                .map(candidate)
                .find(|path| !self.written.contains(path))
                .expect("some suffix is free");
            if path != candidate(1) {
                eprintln!(
                    "note: {name}: {} was already written for another input; saved as {}",
                    candidate(1).display(),
                    path.display()
                );
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            save_png(&digit.to_image().into(), &path)?;
            self.written.insert(path);
        }
        Ok(())
    }
}
