//! The datasets digits knows by name: their files, published digests, mirrors and classes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::choice::Choice;

/// A dataset digits can train and evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// The full MNIST set: 60,000 training and 10,000 test digits, downloaded on demand.
    Mnist,
    /// Zalando's Fashion-MNIST: the same format and sizes, with ten kinds of clothing.
    FashionMnist,
    /// 10,000 real MNIST training digits and the official 10,000-digit test set, built into
    /// the binary so that everything works without a network.
    MnistLite,
}

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Train,
    Test,
}

/// How a published digest is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha256,
    Md5,
}

/// A published digest of a downloadable file, as lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub kind: DigestKind,
    pub hex: &'static str,
}

/// One of a dataset's four files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// The name under which mirrors publish it, gzipped.
    pub name: &'static str,
    pub digest: Digest,
}

impl DataFile {
    /// The name of the same file once gunzipped, which is also accepted on disk.
    pub fn raw_name(&self) -> &'static str {
        self.name.strip_suffix(".gz").unwrap_or(self.name)
    }
}

/// The four files of a downloadable dataset, in the order train images, train labels, test
/// images, test labels.
#[derive(Debug, Clone, Copy)]
pub struct DataFiles {
    pub train_images: DataFile,
    pub train_labels: DataFile,
    pub test_images: DataFile,
    pub test_labels: DataFile,
}

impl DataFiles {
    pub fn all(&self) -> [DataFile; 4] {
        [
            self.train_images,
            self.train_labels,
            self.test_images,
            self.test_labels,
        ]
    }

    /// The images and labels files of one split.
    pub fn split(&self, split: Split) -> (DataFile, DataFile) {
        match split {
            Split::Train => (self.train_images, self.train_labels),
            Split::Test => (self.test_images, self.test_labels),
        }
    }
}

const fn file(name: &'static str, kind: DigestKind, hex: &'static str) -> DataFile {
    DataFile {
        name,
        digest: Digest { kind, hex },
    }
}

const MNIST_FILES: DataFiles = DataFiles {
    train_images: file(
        "train-images-idx3-ubyte.gz",
        DigestKind::Sha256,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    train_labels: file(
        "train-labels-idx1-ubyte.gz",
        DigestKind::Sha256,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    test_images: file(
        "t10k-images-idx3-ubyte.gz",
        DigestKind::Sha256,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    test_labels: file(
        "t10k-labels-idx1-ubyte.gz",
        DigestKind::Sha256,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
};

const FASHION_MNIST_FILES: DataFiles = DataFiles {
    train_images: file(
        "train-images-idx3-ubyte.gz",
        DigestKind::Md5,
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    train_labels: file(
        "train-labels-idx1-ubyte.gz",
        DigestKind::Md5,
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    test_images: file(
        "t10k-images-idx3-ubyte.gz",
        DigestKind::Md5,
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    test_labels: file(
        "t10k-labels-idx1-ubyte.gz",
        DigestKind::Md5,
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
};

const DIGIT_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl Choice for DatasetName {
    const KIND: &'static str = "dataset";
    const ALL: &'static [Self] = &[Self::Mnist, Self::FashionMnist, Self::MnistLite];

    /// The name used on the command line, in run configs and as the folder under `--data-dir`.
    fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::MnistLite => "mnist-lite",
        }
    }
}

impl DatasetName {
    /// The files to download, or `None` for the built-in set.
    pub fn files(self) -> Option<&'static DataFiles> {
        match self {
            Self::Mnist => Some(&MNIST_FILES),
            Self::FashionMnist => Some(&FASHION_MNIST_FILES),
            Self::MnistLite => None,
        }
    }

    /// Base URLs tried in order; each file's name is appended to them.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            Self::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            Self::FashionMnist => &[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ],
            Self::MnistLite => &[],
        }
    }

    /// What each of the ten labels means.
    pub fn class_names(self) -> &'static [&'static str; 10] {
        match self {
            Self::Mnist | Self::MnistLite => &DIGIT_CLASSES,
            Self::FashionMnist => &FASHION_CLASSES,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}
