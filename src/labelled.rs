//! Scoring a model on a folder of people's own images, each with its label.
//!
//! The MNIST test set says how a model reads MNIST; what a user wants to know is how it reads
//! *their* digits: phone photos, scans and drawings, through the same [`prepare`] and
//! [`Predictor`] as `digits predict`. A labelled folder says each image's digit in one of three
//! ways, tried in this order:
//! 1. a `labels.csv` at its root whose header names a `path` and a `label` column (paths
//!    relative to the folder; a `style` column, if present, is reported on as well);
//! 2. one sub-folder per digit, `0/` to `9/`;
//! 3. files whose names start with their digit and nothing else before a separator: `7.png`,
//!    `7_b.jpg`, `7-2.png`, `7 (3).jpeg`.
//!
//! Results are grouped by source folder (the first component of each path) because people's
//! images come in batches that share a pen, a paper and a camera, and one bad batch hides
//! behind a good average.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::NUM_CLASSES;
use crate::predict::{DigitPrediction, Predictor, Verdict};
use crate::prepare;

/// The file that lists a folder's images and labels.
pub const LABELS_FILE: &str = "labels.csv";
/// The file extensions of the image formats digits reads, which is how a folder's images are
/// told from its other files.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// One image and the digit it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    /// Relative to the folder.
    pub path: PathBuf,
    pub label: u8,
    /// How it was made (photo, scan, drawn, ...), when `labels.csv` says.
    pub style: Option<String>,
}

impl LabelledImage {
    /// The source folder: the first component of the path, or `.` for files at the root.
    pub fn group(&self) -> String {
        let mut components = self.path.components();
        match (components.next(), components.next()) {
            (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
            _ => ".".into(),
        }
    }
}

/// Every way reading a labelled folder can fail.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: the header must name a 'path' and a 'label' column (it has: {header})")]
    MissingColumn { path: PathBuf, header: String },
    #[error("{path}, line {line}: the label '{label}' is not a digit from 0 to 9")]
    BadLabel {
        path: PathBuf,
        line: u64,
        label: String,
    },
    #[error("{path}, line {line}: the path '{image}' must be relative and stay inside the folder")]
    PathOutside {
        path: PathBuf,
        line: u64,
        image: String,
    },
    #[error(
        "{0} holds no labelled images: give it a labels.csv (columns path,label), sub-folders \
         0 to 9, or image files named after their digit (7.png, 7_b.jpg)"
    )]
    NoImages(PathBuf),
}

/// The labelled images of `dir`, in a stable order.
pub fn read_folder(dir: &Path) -> Result<Vec<LabelledImage>, LabelsError> {
    let csv_path = dir.join(LABELS_FILE);
    let images = if csv_path.is_file() {
        read_labels_csv(&csv_path)?
    } else {
        let mut images = labelled_by_sub_folder(dir)?;
        if images.is_empty() {
            images = labelled_by_name(dir)?;
        }
        images.sort_by(|a, b| a.path.cmp(&b.path));
        images
    };
    if images.is_empty() {
        return Err(LabelsError::NoImages(dir.to_path_buf()));
    }
    Ok(images)
}

fn read_labels_csv(csv_path: &Path) -> Result<Vec<LabelledImage>, LabelsError> {
    let csv_error = |source| LabelsError::Csv {
        path: csv_path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(csv_path).map_err(csv_error)?;
    let header = reader.headers().map_err(csv_error)?.clone();
    // Spreadsheets save UTF-8 CSV files with a byte-order mark before the first name.
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().trim_start_matches('\u{feff}') == name)
    };
    let (Some(path_column), Some(label_column)) = (column("path"), column("label")) else {
        return Err(LabelsError::MissingColumn {
            path: csv_path.to_path_buf(),
            header: header.iter().collect::<Vec<_>>().join(","),
        });
    };
    let style_column = column("style");
    let mut images = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let label = field(label_column);
        let label = parse_digit(label).ok_or_else(|| LabelsError::BadLabel {
            path: csv_path.to_path_buf(),
            line,
            label: label.to_string(),
        })?;
        let image = PathBuf::from(field(path_column));
        let inside = image
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || image.as_os_str().is_empty() {
            return Err(LabelsError::PathOutside {
                path: csv_path.to_path_buf(),
                line,
                image: field(path_column).to_string(),
            });
        }
        images.push(LabelledImage {
            path: image,
            label,
            style: style_column
                .map(field)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        });
    }
    Ok(images)
}

fn parse_digit(text: &str) -> Option<u8> {
    text.parse::<u8>()
        .ok()
        .filter(|&d| usize::from(d) < NUM_CLASSES)
}

/// Images in sub-folders named `0` to `9`.
fn labelled_by_sub_folder(dir: &Path) -> Result<Vec<LabelledImage>, LabelsError> {
    let mut images = Vec::new();
    for digit in 0..NUM_CLASSES as u8 {
        let sub = dir.join(digit.to_string());
        if !sub.is_dir() {
            continue;
        }
        images.extend(image_files(&sub)?.into_iter().map(|name| LabelledImage {
            path: PathBuf::from(digit.to_string()).join(name),
            label: digit,
            style: None,
        }));
    }
    Ok(images)
}

/// Images at the root whose names start with their digit: `7.png`, `7_b.jpg`, `7 (2).png`.
fn labelled_by_name(dir: &Path) -> Result<Vec<LabelledImage>, LabelsError> {
    Ok(image_files(dir)?
        .into_iter()
        .filter_map(|name| {
            let stem = Path::new(&name).file_stem()?.to_str()?.to_string();
            let mut chars = stem.chars();
            let label = chars.next()?.to_digit(10)? as u8;
            let rest_starts_apart = chars.next().is_none_or(|c| !c.is_alphanumeric());
            rest_starts_apart.then(|| LabelledImage {
                path: PathBuf::from(name),
                label,
                style: None,
            })
        })
        .collect())
}

/// The names of the image files directly in `dir`.
fn image_files(dir: &Path) -> Result<Vec<String>, LabelsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LabelsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.is_file() && is_image(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

/// Whether a path's extension is one of the image formats digits reads.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What the model made of one labelled image.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub image: LabelledImage,
    /// The answer, or why the image could not be read (unreadable file, no digit found).
    pub answer: Result<DigitPrediction, String>,
}

impl Outcome {
    /// Read, and read as its label (whatever the verdict).
    pub fn correct(&self) -> bool {
        self.answer
            .as_ref()
            .is_ok_and(|a| a.digit == self.image.label)
    }
}

/// How a model read a labelled folder.
#[derive(Debug, Clone)]
pub struct Scorecard {
    pub outcomes: Vec<Outcome>,
}

/// Counts for one group of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub images: usize,
    pub correct: usize,
    /// Answered `unsure` or `not a digit`, or not read at all.
    pub withheld: usize,
}

impl Tally {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

impl Scorecard {
    pub fn total(&self) -> Tally {
        self.tally_by(|_| String::new())
            .into_values()
            .next()
            .unwrap_or_default()
    }

    /// Counts per source folder, sorted by name.
    pub fn by_group(&self) -> BTreeMap<String, Tally> {
        self.tally_by(|o| o.image.group())
    }

    /// Counts per style (`labels.csv`'s `style` column); empty when no image has one.
    pub fn by_style(&self) -> BTreeMap<String, Tally> {
        if self.outcomes.iter().all(|o| o.image.style.is_none()) {
            return BTreeMap::new();
        }
        self.tally_by(|o| o.image.style.clone().unwrap_or_else(|| "-".into()))
    }

    fn tally_by(&self, key: impl Fn(&Outcome) -> String) -> BTreeMap<String, Tally> {
        let mut tallies = BTreeMap::<String, Tally>::new();
        for outcome in &self.outcomes {
            let tally = tallies.entry(key(outcome)).or_default();
            tally.images += 1;
            tally.correct += usize::from(outcome.correct());
            tally.withheld += usize::from(
                outcome
                    .answer
                    .as_ref()
                    .map_or(true, |a| a.verdict != Verdict::Digit),
            );
        }
        tallies
    }

    /// `confusion[label][answer]` over the images that were read.
    pub fn confusion(&self) -> [[usize; NUM_CLASSES]; NUM_CLASSES] {
        let mut confusion = [[0; NUM_CLASSES]; NUM_CLASSES];
        for outcome in &self.outcomes {
            if let Ok(answer) = &outcome.answer {
                confusion[usize::from(outcome.image.label)][usize::from(answer.digit)] += 1;
            }
        }
        confusion
    }

    /// The images read wrongly or not at all, surest mistakes first.
    pub fn mistakes(&self) -> Vec<&Outcome> {
        let mut mistakes: Vec<&Outcome> = self.outcomes.iter().filter(|o| !o.correct()).collect();
        let confidence = |o: &Outcome| o.answer.as_ref().map_or(-1.0, |a| a.confidence);
        mistakes.sort_by(|a, b| confidence(b).total_cmp(&confidence(a)));
        mistakes
    }
}

/// Reads every image of `images` (paths relative to `dir`) as `digits predict` would.
pub fn score(predictor: &Predictor, dir: &Path, images: Vec<LabelledImage>) -> Scorecard {
    let prepared: Vec<Result<prepare::Prepared, String>> = images
        .par_iter()
        .map(|image| {
            let path = dir.join(&image.path);
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read: {e}"))?;
            let decoded = prepare::decode(&bytes).map_err(|e| e.describe())?;
            prepare::prepare(&decoded).map_err(|e| e.describe())
        })
        .collect();
    let readable: Vec<prepare::Prepared> = prepared.iter().flatten().cloned().collect();
    let mut answers = predictor.predict(&readable).into_iter();
    let outcomes = images
        .into_iter()
        .zip(prepared)
        .map(|(image, prepared)| Outcome {
            image,
            answer: prepared.map(|_| answers.next().expect("one answer per prepared image")),
        })
        .collect();
    Scorecard { outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digit_then_a_separator_names_the_label() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "7.png",
            "3_b.jpg",
            "5 (2).jpeg",
            "12.png",
            "x7.png",
            "8a.png",
            "4.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let images = read_folder(dir.path()).unwrap();
        let found: Vec<(String, u8)> = images
            .iter()
            .map(|i| (i.path.display().to_string(), i.label))
            .collect();
        assert_eq!(
            found,
            [
                ("3_b.jpg".into(), 3),
                ("5 (2).jpeg".into(), 5),
                ("7.png".into(), 7)
            ]
        );
    }

    #[test]
    fn labels_csv_wins_and_its_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("7.png"), b"").unwrap();
        std::fs::write(
            dir.path().join(LABELS_FILE),
            "label,path,style\n4,a/x.png,photo\n1,\"b/y, z.png\",drawn\n",
        )
        .unwrap();
        let images = read_folder(dir.path()).unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!((images[1].label, images[1].group()), (1, "b".to_string()));
        assert_eq!(images[1].path, PathBuf::from("b/y, z.png"));
        assert_eq!(images[0].style.as_deref(), Some("photo"));

        std::fs::write(
            dir.path().join(LABELS_FILE),
            "\u{feff}path,label\nx.png,3\n",
        )
        .unwrap();
        assert_eq!(
            read_folder(dir.path()).unwrap()[0].label,
            3,
            "a byte-order mark is ignored"
        );
        std::fs::write(dir.path().join(LABELS_FILE), "path,label\n../up.png,3\n").unwrap();
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("inside the folder"),
            "{err}"
        );
        std::fs::write(dir.path().join(LABELS_FILE), "path,label\na.png,12\n").unwrap();
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("'12' is not a digit"), "{err}");
        std::fs::write(dir.path().join(LABELS_FILE), "file,digit\na.png,1\n").unwrap();
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("it has: file,digit"), "{err}");
    }

    #[test]
    fn sub_folders_named_by_digit_label_their_images() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, name) in [("0", "a.png"), ("9", "b.jpg"), ("x", "c.png")] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(name), b"").unwrap();
        }
        let images = read_folder(dir.path()).unwrap();
        let labels: Vec<u8> = images.iter().map(|i| i.label).collect();
        assert_eq!(labels, [0, 9]);
        assert_eq!(images[0].group(), "0");
    }

    #[test]
    fn a_folder_without_labels_is_refused_with_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("photo.png"), b"").unwrap();
        let err = read_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("labels.csv"), "{err}");
    }
}
