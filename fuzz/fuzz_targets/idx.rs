//! The IDX reader: gzip or raw, images or labels, any bytes at all.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let raw = match digits::data::idx::decompress(bytes) {
        Ok(raw) => raw,
        Err(_) => return,
    };
    if let Ok(images) = digits::data::idx::parse_images(&raw) {
        // What parses must encode back to the same bytes.
        assert_eq!(digits::data::idx::encode_images(&images), raw);
    }
    if let Ok(labels) = digits::data::idx::parse_labels(&raw) {
        assert!(labels.iter().all(|&l| l < 10));
    }
});
