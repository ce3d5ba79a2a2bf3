//! The IDX file format that MNIST and Fashion-MNIST are published in.
//!
//! An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions,
//! then one `u32` per dimension) followed by the raw values. MNIST uses two kinds: images
//! (magic 2051, `u8`, three dimensions) and labels (magic 2049, `u8`, one dimension). Files are
//! usually gzipped; both forms are accepted, told apart by the gzip magic bytes.

use std::io::Read;

use flate2::read::GzDecoder;

/// The magic number of an IDX file of `u8` images: type `0x08`, three dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of `u8` labels: type `0x08`, one dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// No MNIST-like set has more images than this; it caps what a corrupt header can make us
/// allocate before the length check catches it.
const MAX_ITEMS: usize = 10_000_000;
/// No MNIST-like file unpacks to more than this; a gzip stream that does is refused before it
/// can exhaust memory.
const MAX_DECOMPRESSED: u64 = 1 << 30;
/// Images larger than this are not digits; it bounds allocation in the same way.
const MAX_SIDE: usize = 4096;

/// Every way an IDX file can be wrong.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("the file is too short to hold an IDX header ({len} bytes)")]
    TooShort { len: usize },
    #[error("bad magic number {found:#010x}: expected {expected:#010x} ({kind})")]
    BadMagic {
        found: u32,
        expected: u32,
        kind: &'static str,
    },
    #[error("bad dimensions {rows}x{cols}: images must be between 1x1 and {MAX_SIDE}x{MAX_SIDE}")]
    BadDimensions { rows: usize, cols: usize },
    #[error("the header claims {count} items, more than the {MAX_ITEMS} this reader accepts")]
    TooManyItems { count: usize },
    #[error("the header promises {expected} bytes of data but the file holds {found}")]
    LengthMismatch { expected: usize, found: usize },
    #[error("label {label} at index {index} is not a class from 0 to 9")]
    BadLabel { index: usize, label: u8 },
    #[error("{images} images but {labels} labels")]
    CountMismatch { images: usize, labels: usize },
    #[error("the file unpacks to more than {MAX_DECOMPRESSED} bytes")]
    TooLarge,
    #[error("the gzip stream is corrupt")]
    Gzip(#[source] std::io::Error),
}

/// Images as stored on disk: `count` images of `rows * cols` bytes each, one contiguous buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Undoes gzip when the bytes start with its magic number, else returns them as they are.
pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>, IdxError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(bytes)
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(IdxError::Gzip)?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(IdxError::TooLarge);
        }
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parses an image file (gzipped or raw).
pub fn parse_images(bytes: &[u8]) -> Result<IdxImages, IdxError> {
    let raw = decompress(bytes)?;
    let dims = header(&raw, IMAGES_MAGIC, "images", 3)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(IdxError::BadDimensions { rows, cols });
    }
    check_length(&raw, 16, count * rows * cols)?;
    let mut pixels = raw;
    pixels.drain(..16);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Parses a label file (gzipped or raw); every label must be a digit class, 0 to 9.
pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u8>, IdxError> {
    let raw = decompress(bytes)?;
    let dims = header(&raw, LABELS_MAGIC, "labels", 1)?;
    check_length(&raw, 8, dims[0])?;
    let mut labels = raw;
    labels.drain(..8);
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| l > 9) {
        return Err(IdxError::BadLabel { index, label });
    }
    Ok(labels)
}

/// Encodes images as a raw (not gzipped) IDX file: the inverse of [`parse_images`].
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for word in [
        IMAGES_MAGIC,
        images.count as u32,
        images.rows as u32,
        images.cols as u32,
    ] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as a raw IDX file: the inverse of [`parse_labels`].
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Checks the magic number and returns the dimensions, each already bounded.
fn header(
    raw: &[u8],
    expected: u32,
    kind: &'static str,
    ndims: usize,
) -> Result<Vec<usize>, IdxError> {
    let header_len = 4 + 4 * ndims;
    if raw.len() < header_len {
        return Err(IdxError::TooShort { len: raw.len() });
    }
    let word = |i: usize| u32::from_be_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let found = word(0);
    if found != expected {
        return Err(IdxError::BadMagic {
            found,
            expected,
            kind,
        });
    }
    let dims: Vec<usize> = (0..ndims).map(|d| word(4 + 4 * d) as usize).collect();
    if dims[0] > MAX_ITEMS {
        return Err(IdxError::TooManyItems { count: dims[0] });
    }
    Ok(dims)
}

/// The header is `offset` bytes; the rest must be exactly `expected` bytes of data.
fn check_length(raw: &[u8], offset: usize, expected: usize) -> Result<(), IdxError> {
    let found = raw.len() - offset;
    if found != expected {
        return Err(IdxError::LengthMismatch { expected, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_bytes(count: u32, rows: u32, cols: u32, data_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [IMAGES_MAGIC, count, rows, cols] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend(std::iter::repeat_n(7u8, data_len));
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn images_round_trip_raw_and_gzipped() {
        let images = IdxImages {
            count: 2,
            rows: 3,
            cols: 2,
            pixels: (0..12).collect(),
        };
        let raw = encode_images(&images);
        assert_eq!(parse_images(&raw).unwrap(), images);
        assert_eq!(parse_images(&gzip(&raw)).unwrap(), images);
    }

    #[test]
    fn labels_round_trip_raw_and_gzipped() {
        let labels = vec![0, 9, 3, 3, 1];
        let raw = encode_labels(&labels);
        assert_eq!(parse_labels(&raw).unwrap(), labels);
        assert_eq!(parse_labels(&gzip(&raw)).unwrap(), labels);
    }

    #[test]
    fn empty_and_short_files_are_too_short() {
        assert!(matches!(
            parse_images(&[]),
            Err(IdxError::TooShort { len: 0 })
        ));
        assert!(matches!(
            parse_labels(&[0, 0, 8, 1, 0]),
            Err(IdxError::TooShort { len: 5 })
        ));
    }

    #[test]
    fn a_label_file_is_not_an_image_file() {
        let labels = encode_labels(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]);
        let err = parse_images(&labels).unwrap_err();
        assert!(matches!(
            err,
            IdxError::BadMagic {
                found: LABELS_MAGIC,
                ..
            }
        ));
        assert!(err.to_string().contains("images"));
        let images = images_bytes(1, 2, 2, 4);
        assert!(matches!(
            parse_labels(&images),
            Err(IdxError::BadMagic { .. })
        ));
    }

    #[test]
    fn truncated_and_padded_bodies_are_refused() {
        assert!(matches!(
            parse_images(&images_bytes(2, 28, 28, 2 * 784 - 1)),
            Err(IdxError::LengthMismatch {
                expected: 1568,
                found: 1567
            })
        ));
        assert!(matches!(
            parse_images(&images_bytes(2, 28, 28, 2 * 784 + 3)),
            Err(IdxError::LengthMismatch { .. })
        ));
        let mut labels = encode_labels(&[1, 2, 3]);
        labels.pop();
        assert!(matches!(
            parse_labels(&labels),
            Err(IdxError::LengthMismatch {
                expected: 3,
                found: 2
            })
        ));
    }

    #[test]
    fn absurd_headers_are_refused_before_allocating() {
        assert!(matches!(
            parse_images(&images_bytes(u32::MAX, 28, 28, 0)),
            Err(IdxError::TooManyItems { .. })
        ));
        assert!(matches!(
            parse_images(&images_bytes(1, 0, 28, 0)),
            Err(IdxError::BadDimensions { rows: 0, cols: 28 })
        ));
        assert!(matches!(
            parse_images(&images_bytes(1, 100_000, 1, 0)),
            Err(IdxError::BadDimensions { .. })
        ));
    }

    #[test]
    fn labels_outside_0_to_9_are_refused() {
        let err = parse_labels(&encode_labels(&[3, 10, 1])).unwrap_err();
        assert!(matches!(
            err,
            IdxError::BadLabel {
                index: 1,
                label: 10
            }
        ));
    }

    #[test]
    fn a_corrupt_gzip_stream_is_refused() {
        let mut gz = gzip(&encode_labels(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        let middle = gz.len() / 2;
        gz.truncate(middle);
        assert!(matches!(parse_labels(&gz), Err(IdxError::Gzip(_))));
    }
}
