//! Decoding and preparing a person's image: every format digits accepts, any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(image) = digits::prepare::decode(bytes) else {
        return;
    };
    if let Ok(prepared) = digits::prepare::prepare(&image) {
        assert_eq!(prepared.pixels.len(), 28 * 28);
    }
    if let Ok(digits) = digits::prepare::prepare_number(&image) {
        assert!(digits.iter().all(|d| d.pixels.len() == 28 * 28));
    }
});
