//! Data: reading MNIST-style sets from disk, the built-in `mnist-lite`, downloads, batches.
//!
//! Images stay `u8` in one contiguous buffer; floats are made one batch at a time, so a
//! 60,000-image set costs 47 MB rather than four times that.

pub mod catalog;
pub mod download;
pub mod idx;
mod lite;

use std::fs;
use std::path::{Path, PathBuf};

pub use catalog::{DatasetName, Split};
pub use download::{DownloadError, FetchOptions, FetchProgress};
use idx::IdxError;

use crate::choice::Choice;

/// Images are 28x28 in every set digits knows.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Every set has ten classes.
pub const NUM_CLASSES: usize = 10;

/// Every way getting a dataset can fail.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}")]
    Idx {
        path: String,
        #[source]
        source: IdxError,
    },
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: images are {rows}x{cols}, but digits works on {IMAGE_SIDE}x{IMAGE_SIDE}")]
    WrongImageSize {
        path: String,
        rows: usize,
        cols: usize,
    },
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        images: String,
        labels: String,
        image_count: usize,
        label_count: usize,
    },
    #[error(
        "{dataset} is not in {dir} (missing {missing}); run `digits data fetch --dataset {dataset}`, \
         or point --data-dir at a folder holding its IDX files"
    )]
    Missing {
        dataset: DatasetName,
        dir: String,
        missing: String,
    },
    #[error(transparent)]
    Download(#[from] DownloadError),
}

/// One split of a dataset, held as bytes.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: DatasetName,
    pub split: Split,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

/// A batch ready for a model: pixels scaled to [0, 1] as the tutorial's `ToTensor()` does,
/// laid out `[len, 1, 28, 28]`, and labels as `i64` (PyTorch's dtype for class indices).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of the image tensor, as the tutorial prints it: `[N, C, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 1, IMAGE_SIDE, IMAGE_SIDE]
    }
}

impl Dataset {
    /// Builds a split from its two IDX files (gzipped or raw); `origin` names them in errors.
    pub fn from_idx(
        name: DatasetName,
        split: Split,
        images: &[u8],
        labels: &[u8],
        origin: (&str, &str),
    ) -> Result<Self, DataError> {
        let idx_error = |path: &str| {
            let path = path.to_string();
            move |source| DataError::Idx { path, source }
        };
        let parsed = idx::parse_images(images).map_err(idx_error(origin.0))?;
        let labels = idx::parse_labels(labels).map_err(idx_error(origin.1))?;
        if parsed.rows != IMAGE_SIDE || parsed.cols != IMAGE_SIDE {
            return Err(DataError::WrongImageSize {
                path: origin.0.to_string(),
                rows: parsed.rows,
                cols: parsed.cols,
            });
        }
        if parsed.count != labels.len() {
            return Err(DataError::CountMismatch {
                images: origin.0.to_string(),
                labels: origin.1.to_string(),
                image_count: parsed.count,
                label_count: labels.len(),
            });
        }
        Ok(Self {
            name,
            split,
            pixels: parsed.pixels,
            labels,
        })
    }

    /// The built-in `mnist-lite` split.
    pub fn lite(split: Split) -> Self {
        let (images, labels) = lite::idx_files(split);
        Self::from_idx(
            DatasetName::MnistLite,
            split,
            images,
            labels,
            ("built-in images", "built-in labels"),
        )
        .expect("the built-in mnist-lite files are valid; a unit test checks them")
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 bytes of image `index`, row by row.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * IMAGE_PIXELS..(index + 1) * IMAGE_PIXELS]
    }

    pub fn label(&self, index: usize) -> u8 {
        self.labels[index]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// What each label means in this set.
    pub fn class_names(&self) -> &'static [&'static str; 10] {
        self.name.class_names()
    }

    /// The first `len` items, or all of them: for short runs on a slice of a set.
    /// Takes the last `count` images out as a separate set (for validation).
    pub fn split_off(&mut self, count: usize) -> Dataset {
        let keep = self.len().saturating_sub(count);
        Dataset {
            name: self.name,
            split: self.split,
            pixels: self.pixels.split_off(keep * IMAGE_PIXELS),
            labels: self.labels.split_off(keep),
        }
    }

    /// Mean and standard deviation of every pixel, scaled to [0, 1]: MNIST's are the
    /// well-known 0.1307 and 0.3081.
    pub fn pixel_statistics(&self) -> (f32, f32) {
        let count = self.pixels.len().max(1) as f64;
        let (sum, squares) = self.pixels.iter().fold((0.0f64, 0.0f64), |(s, q), &p| {
            let v = f64::from(p) / 255.0;
            (s + v, q + v * v)
        });
        let mean = sum / count;
        let variance = (squares / count - mean * mean).max(0.0);
        (mean as f32, variance.sqrt() as f32)
    }

    pub fn truncated(mut self, len: usize) -> Self {
        let len = len.min(self.len());
        self.labels.truncate(len);
        self.pixels.truncate(len * IMAGE_PIXELS);
        self
    }

    /// Gathers the items at `indices` into a batch.
    pub fn batch(&self, indices: impl IntoIterator<Item = usize>) -> Batch {
        let indices = indices.into_iter();
        let mut batch = Batch {
            pixels: Vec::with_capacity(indices.size_hint().0 * IMAGE_PIXELS),
            labels: Vec::with_capacity(indices.size_hint().0),
        };
        for index in indices {
            batch
                .pixels
                .extend(self.image(index).iter().map(|&p| f32::from(p) / 255.0));
            batch.labels.push(i64::from(self.labels[index]));
        }
        batch
    }

    /// Consecutive batches in `order` (the dataset's own order when `None`); the last one is
    /// short when the batch size does not divide the set, as with PyTorch's `DataLoader`.
    pub fn batches<'a>(
        &'a self,
        batch_size: usize,
        order: Option<&'a [usize]>,
    ) -> impl ExactSizeIterator<Item = Batch> + 'a {
        let batch_size = batch_size.max(1);
        let count = self.len().div_ceil(batch_size);
        (0..count).map(move |b| {
            let range = b * batch_size..((b + 1) * batch_size).min(self.len());
            match order {
                Some(order) => self.batch(order[range].iter().copied()),
                None => self.batch(range),
            }
        })
    }
}

/// Where a dataset should come from and whether it may be downloaded.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub dataset: DatasetName,
    /// Holds the dataset either directly (its four IDX files) or in a folder named after it.
    pub data_dir: PathBuf,
    /// How to download missing files; `None` never touches the network.
    pub fetch: Option<FetchOptions>,
}

/// A dataset found on disk, downloaded, or replaced by the built-in set.
#[derive(Debug, Clone)]
pub struct ResolvedData {
    /// The set that will actually be used.
    pub dataset: DatasetName,
    /// The folder holding its files; `None` for the built-in set.
    pub dir: Option<PathBuf>,
    /// Why the requested set was replaced by `mnist-lite`, when it was.
    pub fallback: Option<String>,
}

/// Whether full MNIST that can be neither found nor downloaded may be replaced by the
/// built-in `mnist-lite`: right when the user left the dataset to its default, wrong when
/// they named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    ToLite,
    Never,
}

impl DataSource {
    /// Finds both splits of the dataset, downloading what is missing when allowed. Full MNIST
    /// that can be neither found nor downloaded falls back to `mnist-lite`, with the reason
    /// recorded; any other failure is an error, and a corrupt file on disk is never silently
    /// replaced.
    pub fn resolve(&self, progress: &mut dyn FetchProgress) -> Result<ResolvedData, DataError> {
        self.resolve_splits(&[Split::Train, Split::Test], Fallback::ToLite, progress)
    }

    /// [`DataSource::resolve`] for the files of `splits` only (evaluating needs only the test
    /// split's two files), falling back to `mnist-lite` only as `fallback` allows.
    pub fn resolve_splits(
        &self,
        splits: &[Split],
        fallback: Fallback,
        progress: &mut dyn FetchProgress,
    ) -> Result<ResolvedData, DataError> {
        let Some(files) = self.dataset.files() else {
            return Ok(ResolvedData {
                dataset: DatasetName::MnistLite,
                dir: None,
                fallback: None,
            });
        };
        let needed: Vec<catalog::DataFile> = splits
            .iter()
            .flat_map(|&split| {
                let (images, labels) = files.split(split);
                [images, labels]
            })
            .collect();
        let found = |dir: &Path| needed.iter().all(|f| find_file(dir, f).is_some());
        let own_dir = self.data_dir.join(self.dataset.name());
        for dir in [&self.data_dir, &own_dir] {
            if found(dir) {
                return Ok(self.found_at(dir));
            }
        }
        // Named after the folder that holds the most of the files (the dataset's own folder,
        // where downloads go, when neither holds any).
        let missing = || {
            let (dir, names) = [&own_dir, &self.data_dir]
                .into_iter()
                .map(|dir| {
                    let names: Vec<&str> = needed
                        .iter()
                        .filter(|f| find_file(dir, f).is_none())
                        .map(|f| f.name)
                        .collect();
                    (dir, names)
                })
                .min_by_key(|(_, names)| names.len())
                .expect("two folders were looked in");
            DataError::Missing {
                dataset: self.dataset,
                dir: dir.display().to_string(),
                missing: names.join(", "),
            }
        };
        let outcome = match &self.fetch {
            Some(options) => download::fetch_dataset(self.dataset, &own_dir, options, progress)
                .map_err(Into::into),
            None => Err(missing()),
        };
        match outcome {
            Ok(()) => Ok(self.found_at(&own_dir)),
            Err(err)
                if self.dataset == DatasetName::Mnist
                    && fallback == Fallback::ToLite
                    && falls_back(&err) =>
            {
                let why = match err {
                    DataError::Missing { .. } => "downloading is off",
                    _ => "no mirror could be reached",
                };
                Ok(ResolvedData {
                    dataset: DatasetName::MnistLite,
                    dir: None,
                    fallback: Some(format!("it is not in {} and {why}", own_dir.display())),
                })
            }
            Err(err) => Err(err),
        }
    }

    fn found_at(&self, dir: &Path) -> ResolvedData {
        ResolvedData {
            dataset: self.dataset,
            dir: Some(dir.to_path_buf()),
            fallback: None,
        }
    }
}

/// Only absence and unreachable mirrors justify quietly using the smaller set; a download
/// that arrived but failed its checksum, or a disk that refused the file, must be seen.
fn falls_back(err: &DataError) -> bool {
    match err {
        DataError::Missing { .. } => true,
        DataError::Download(err) => err.is_network(),
        _ => false,
    }
}

impl ResolvedData {
    /// Reads one split.
    pub fn load(&self, split: Split) -> Result<Dataset, DataError> {
        let (Some(dir), Some(files)) = (&self.dir, self.dataset.files()) else {
            return Ok(Dataset::lite(split));
        };
        let (images, labels) = files.split(split);
        let read = |file| {
            let path = find_file(dir, file).unwrap_or_else(|| dir.join(file.name));
            let display = path.display().to_string();
            fs::read(&path)
                .map(|bytes| (bytes, display.clone()))
                .map_err(|source| DataError::Io {
                    path: display,
                    source,
                })
        };
        let (image_bytes, image_path) = read(&images)?;
        let (label_bytes, label_path) = read(&labels)?;
        Dataset::from_idx(
            self.dataset,
            split,
            &image_bytes,
            &label_bytes,
            (&image_path, &label_path),
        )
    }
}

/// A file is accepted gzipped under its published name or already unpacked without `.gz`.
fn find_file(dir: &Path, file: &catalog::DataFile) -> Option<PathBuf> {
    [file.name, file.raw_name()]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_is_the_10k_digits_and_the_official_test_set() {
        let train = Dataset::lite(Split::Train);
        let test = Dataset::lite(Split::Test);
        assert_eq!((train.len(), test.len()), (10_000, 10_000));
        // The official test set begins 7, 2, 1, 0, 4.
        assert_eq!(&test.labels()[..5], &[7, 2, 1, 0, 4]);
        let mut counts = [0usize; 10];
        train.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn batches_cover_the_set_with_a_short_last_batch() {
        let test = Dataset::lite(Split::Test).truncated(70);
        let sizes: Vec<usize> = test.batches(32, None).map(|b| b.len()).collect();
        assert_eq!(sizes, [32, 32, 6]);
        let first = test.batches(32, None).next().unwrap();
        assert_eq!(first.shape(), [32, 1, 28, 28]);
        assert!(first.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(first.pixels.contains(&1.0));
    }

    #[test]
    fn batches_follow_the_given_order() {
        let test = Dataset::lite(Split::Test).truncated(4);
        let order = [3, 2, 1, 0];
        let batch = test.batches(4, Some(&order)).next().unwrap();
        let labels: Vec<i64> = order.iter().map(|&i| i64::from(test.label(i))).collect();
        assert_eq!(batch.labels, labels);
        assert_eq!(batch.pixels[..IMAGE_PIXELS], test.batch([3]).pixels[..]);
    }
}
