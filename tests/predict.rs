//! Reading people's images: MNIST test digits dressed as scans, photos and drawings, and digits
//! drawn as pen strokes, read through the same preparation `digits predict` uses.

mod common;

use burn::tensor::Device;
use common::synth;
use digits::data::{Dataset, Split};
use digits::predict::{DigitPrediction, Predictor, Verdict};
use digits::prepare::{self, PrepareError, Prepared};

/// Test digits per variant: enough to tell a working preparation from a broken one in a few
/// seconds; `photo_test_set_accuracy` (ignored by default) measures the full figure.
const DIGITS_PER_VARIANT: usize = 40;

fn read(predictor: &Predictor, bytes: &[u8]) -> Result<u8, PrepareError> {
    let prepared = prepare::prepare(&prepare::decode(bytes)?)?;
    Ok(predictor.predict(&[prepared])[0].digit)
}

/// (variant, correct, total) over the first `count` test digits, the raw digits first.
fn accuracy_by_variant(count: usize) -> Vec<(String, usize, usize)> {
    let predictor = Predictor::built_in(&Device::flex());
    let test = Dataset::lite(Split::Test);
    let raw: Vec<Prepared> = (0..count)
        .map(|i| Prepared::from_pixels(test.image(i).to_vec()))
        .collect();
    let raw_correct = predictor
        .predict(&raw)
        .iter()
        .enumerate()
        .filter(|(i, p)| p.digit == test.label(*i))
        .count();
    let mut rows = vec![("mnist 28x28 as is".to_string(), raw_correct, count)];
    for (v, variant) in synth::VARIANTS.iter().enumerate() {
        let correct = (0..count)
            .filter(|&i| {
                let bytes = synth::dressed(test.image(i), variant, (v * 100_000 + i) as u64);
                read(&predictor, &bytes).is_ok_and(|d| d == test.label(i))
            })
            .count();
        rows.push((variant.to_string(), correct, count));
    }
    rows
}

#[test]
fn dressed_up_test_digits_are_read_about_as_well_as_the_digits_themselves() {
    let rows = accuracy_by_variant(DIGITS_PER_VARIANT);
    for (variant, correct, total) in &rows {
        eprintln!("{variant:<20} {correct}/{total}");
    }
    let baseline = rows[0].1 as f64 / rows[0].2 as f64;
    for (variant, correct, total) in &rows[1..] {
        let accuracy = *correct as f64 / *total as f64;
        assert!(
            accuracy >= baseline - 0.15,
            "{variant}: {accuracy:.2} against {baseline:.2} for the digits as they are"
        );
    }
}

#[test]
#[ignore = "the full measurement for the README: cargo test --release --test predict -- --ignored --nocapture"]
fn photo_test_set_accuracy() {
    let rows = accuracy_by_variant(1_000);
    println!("| variant | correct | accuracy |\n| --- | --- | --- |");
    for (variant, correct, total) in rows {
        println!(
            "| {variant} | {correct}/{total} | {:.1}% |",
            100.0 * correct as f64 / total as f64
        );
    }
}

#[test]
fn digits_drawn_with_a_thin_pen_or_a_thick_marker_are_read() {
    let predictor = Predictor::built_in(&Device::flex());
    for (width, side) in [(1.0, 500), (4.0, 600), (30.0, 500)] {
        let read_right: Vec<u8> = (0..10)
            .filter(|&d| read(&predictor, &synth::drawn(d, side, width)).is_ok_and(|p| p == d))
            .collect();
        eprintln!("pen {width}px on {side}px: read {read_right:?}");
        assert!(
            read_right.len() >= 7,
            "pen {width}px: only {read_right:?} read right"
        );
    }
}

#[test]
fn a_one_pixel_line_on_a_large_canvas_stays_visible() {
    let prepared = prepare::prepare(&prepare::decode(&synth::drawn(7, 500, 1.0)).unwrap()).unwrap();
    let inked = prepared.pixels.iter().filter(|&&p| p > 64).count();
    assert!(prepared.pixels.contains(&255));
    assert!(
        (40..300).contains(&inked),
        "{inked} inked pixels; MNIST digits have about 100-200"
    );
}

/// The box the ink fits in and its centre of mass.
fn geometry(prepared: &Prepared) -> (usize, usize, f32, f32) {
    let lit: Vec<(usize, usize, f32)> = prepared
        .pixels
        .iter()
        .enumerate()
        .filter(|(_, p)| **p > 0)
        .map(|(i, &p)| (i % 28, i / 28, f32::from(p)))
        .collect();
    let span = |f: fn(&(usize, usize, f32)) -> usize| {
        lit.iter().map(f).max().unwrap() - lit.iter().map(f).min().unwrap() + 1
    };
    let mass: f32 = lit.iter().map(|p| p.2).sum();
    let cx = lit.iter().map(|p| p.0 as f32 * p.2).sum::<f32>() / mass;
    let cy = lit.iter().map(|p| p.1 as f32 * p.2).sum::<f32>() / mass;
    (span(|p| p.0), span(|p| p.1), cx, cy)
}

#[test]
fn prepared_digits_fill_a_20_pixel_box_centred_by_mass_whatever_the_polarity() {
    let test = Dataset::lite(Split::Test);
    let digit = test.image(0);
    let white_on_black = image::GrayImage::from_raw(28, 28, digit.to_vec()).unwrap();
    let black_on_white = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([255 - white_on_black.get_pixel(x, y)[0]])
    });
    let a = prepare::prepare(&white_on_black.into()).unwrap();
    let b = prepare::prepare(&black_on_white.into()).unwrap();
    assert_eq!(a, b, "inverting the input changes nothing");
    let (w, h, cx, cy) = geometry(&a);
    assert!(w.max(h) >= 19 && w.max(h) <= 21, "{w}x{h}");
    assert!(
        (cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0,
        "centre of mass ({cx}, {cy})"
    );
}

#[test]
fn exif_orientation_is_honoured() {
    // A wide bar, stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise").
    let bar = image::GrayImage::from_fn(300, 120, |x, y| {
        image::Luma([if (30..270).contains(&x) && (40..80).contains(&y) {
            0
        } else {
            255
        }])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&bar)
        .unwrap();
    let exif: &[u8] = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
    let mut with_exif = jpeg[..2].to_vec();
    with_exif.extend_from_slice(&[0xFF, 0xE1]);
    with_exif.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    with_exif.extend_from_slice(exif);
    with_exif.extend_from_slice(&jpeg[2..]);
    let upright = prepare::decode(&with_exif).unwrap();
    assert_eq!((upright.width(), upright.height()), (120, 300));
    let (w, h, _, _) = geometry(&prepare::prepare(&upright).unwrap());
    assert!(h > 2 * w, "the bar stands upright: {w}x{h}");
}

#[test]
fn blank_broken_and_oversized_images_are_refused_with_a_reason() {
    let blank = image::GrayImage::from_pixel(200, 200, image::Luma([255]));
    assert!(matches!(
        prepare::prepare(&blank.into()),
        Err(PrepareError::NoInk)
    ));
    let broken = prepare::decode(b"definitely not an image").unwrap_err();
    assert!(matches!(broken, PrepareError::Decode(_)));
    // Answers that are text (the service's JSON, eval's rows) carry the decoder's reason.
    let reason = std::error::Error::source(&broken).unwrap().to_string();
    assert_eq!(
        broken.describe(),
        format!("cannot decode the image: {reason}")
    );

    // A PNG header claiming 100,000 x 100,000 pixels, refused before any allocation.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.sum().to_be_bytes());
    png.extend_from_slice(b"\0\0\0\0IDAT\x35\xaf\x06\x1e\0\0\0\0IEND\xae\x42\x60\x82");
    let err = prepare::decode(&png).unwrap_err();
    assert!(
        matches!(
            err,
            PrepareError::TooLarge {
                width: 100_000,
                height: 100_000
            }
        ),
        "{err}"
    );
}

#[test]
fn a_number_is_read_left_to_right() {
    let predictor = Predictor::built_in(&Device::flex());
    let page = synth::written_number(&[4, 2, 7], 12.0);
    let digits = prepare::prepare_number(&page.into()).unwrap();
    let read: Vec<u8> = predictor.predict(&digits).iter().map(|p| p.digit).collect();
    assert_eq!(read, [4, 2, 7]);
}

/// What the built-in model answers for an image, verdict and all.
fn answer(predictor: &Predictor, bytes: &[u8]) -> Result<DigitPrediction, PrepareError> {
    let prepared = prepare::prepare(&prepare::decode(bytes)?)?;
    Ok(predictor.predict(&[prepared]).remove(0))
}

#[test]
fn strokes_that_reach_the_edges_are_the_digit_not_ruled_lines() {
    let predictor = Predictor::built_in(&Device::flex());
    // As people draw on the 280x280 page of `digits serve`, and a photo cropped to the ink.
    let tall_one = synth::sketch(&[&[(0.5, 0.01), (0.5, 0.99)]], 280, 280, 18.0);
    let wide_seven = synth::sketch(&[&[(0.0, 0.12), (1.0, 0.12), (0.45, 0.97)]], 280, 280, 18.0);
    let cropped_seven = synth::sketch(&[&[(0.0, 0.03), (1.0, 0.03), (0.35, 1.0)]], 120, 160, 10.0);
    for (name, bytes, digit) in [
        ("a 1 as tall as the page", tall_one, 1),
        ("a 7 whose bar spans the page", wide_seven, 7),
        ("a 7 cropped to its ink", cropped_seven, 7),
    ] {
        let said = answer(&predictor, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(said.digit, digit, "{name}: {said:?}");
        assert_eq!(said.verdict, Verdict::Digit, "{name}: {said:?}");
    }
}

#[test]
fn ruled_lines_across_a_digit_are_removed() {
    let predictor = Predictor::built_in(&Device::flex());
    let mut page = image::load_from_memory(&synth::drawn(3, 300, 10.0))
        .unwrap()
        .to_luma8();
    // Lined paper: a line every 40 pixels, one of them through the middle of the 3.
    for line in (30..300).step_by(40) {
        for x in 0..300 {
            for y in line..line + 3 {
                page.put_pixel(x, y, image::Luma([40]));
            }
        }
    }
    let prepared = prepare::prepare(&page.into()).unwrap();
    let widest_row = (0..28)
        .map(|y| {
            (0..28)
                .filter(|&x| prepared.pixels[y * 28 + x] > 64)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        widest_row < 16,
        "the line is gone: a row {widest_row} px wide"
    );
    assert_eq!(predictor.predict(&[prepared])[0].digit, 3);
}

/// Ink pixels (above a quarter of full brightness) and how many 8-connected strokes they make.
fn strokes(prepared: &Prepared) -> usize {
    let ink: Vec<bool> = prepared.pixels.iter().map(|&p| p > 64).collect();
    let mut seen = vec![false; 784];
    let mut count = 0;
    for start in (0..784).filter(|&p| ink[p]) {
        if seen[start] {
            continue;
        }
        count += 1;
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(p) = stack.pop() {
            let (x, y) = ((p % 28) as isize, (p / 28) as isize);
            let around = (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)));
            for (dx, dy) in around.filter(|&step| step != (0, 0)) {
                let (nx, ny) = (x + dx, y + dy);
                let q = (ny * 28 + nx) as usize;
                if (0..28).contains(&nx) && (0..28).contains(&ny) && ink[q] && !seen[q] {
                    seen[q] = true;
                    stack.push(q);
                }
            }
        }
    }
    count
}

/// Background regions of the prepared digit that do not reach its border: its loops.
fn loops(prepared: &Prepared) -> usize {
    let paper: Vec<bool> = prepared.pixels.iter().map(|&p| p <= 64).collect();
    let inverted = Prepared::from_pixels(paper.iter().map(|&b| if b { 255 } else { 0 }).collect());
    let border_paper = (0..784)
        .filter(|&p| paper[p] && (p % 28 == 0 || p % 28 == 27 || !(28..756).contains(&p)))
        .count();
    assert!(border_paper > 0);
    // Every paper region but the one around the digit is a loop.
    strokes(&inverted) - 1
}

#[test]
fn thin_lines_stay_whole_and_thickening_closes_no_loop() {
    let predictor = Predictor::built_in(&Device::flex());
    // A 1-px 7 drawn on a 28x28 canvas, as small drawing apps save them.
    let thin_seven = synth::sketch(&[&[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]], 28, 28, 1.0);
    let prepared = prepare::prepare(&prepare::decode(&thin_seven).unwrap()).unwrap();
    assert_eq!(strokes(&prepared), 1, "one unbroken stroke");
    assert_eq!(predictor.predict(&[prepared])[0].digit, 7);
    // A closed 4 whose triangle is small and whose pen is thin: thickened to MNIST's stroke
    // width, the triangle must stay open to the eye.
    let closed_four = synth::sketch(
        &[&[(0.62, 0.97), (0.62, 0.03), (0.3, 0.62), (0.8, 0.62)]],
        400,
        400,
        3.0,
    );
    let prepared = prepare::prepare(&prepare::decode(&closed_four).unwrap()).unwrap();
    assert_eq!(loops(&prepared), 1, "the 4's triangle is kept");
}

#[test]
fn marks_that_are_no_digit_get_no_confident_answer() {
    let predictor = Predictor::built_in(&Device::flex());
    let dot = synth::sketch(&[&[(0.5, 0.5)]], 280, 280, 30.0);
    let dash = synth::sketch(&[&[(0.2, 0.5), (0.8, 0.52)]], 280, 280, 18.0);
    let cross = synth::sketch(
        &[&[(0.25, 0.2), (0.75, 0.8)], &[(0.75, 0.2), (0.25, 0.8)]],
        280,
        280,
        18.0,
    );
    for (name, bytes) in [("a dot", dot), ("a dash", dash), ("a cross", cross)] {
        let said = answer(&predictor, &bytes).unwrap();
        assert_ne!(said.verdict, Verdict::Digit, "{name}: {said:?}");
    }
    let blank = synth::sketch(&[], 280, 280, 18.0);
    assert!(matches!(
        answer(&predictor, &blank),
        Err(PrepareError::NoInk)
    ));
}

#[test]
fn several_digits_are_never_read_as_one() {
    let predictor = Predictor::built_in(&Device::flex());
    let page = synth::written_number(&[3, 0, 5], 12.0);
    let prepared = prepare::prepare(&page.into()).unwrap();
    let said = predictor.predict(&[prepared]).remove(0);
    assert_eq!(said.verdict, Verdict::SeveralDigits, "{said:?}");
    // A 5 whose bar was drawn apart and a 4 in two strokes are still one digit each.
    for digit in [4, 5] {
        let said = answer(&predictor, &synth::drawn(digit, 300, 10.0)).unwrap();
        assert_ne!(said.verdict, Verdict::SeveralDigits, "{digit}: {said:?}");
    }
}

/// A folder with two drawn digits and one broken file, for the command's tests.
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("a-three.png"), synth::drawn(3, 400, 8.0)).unwrap();
    std::fs::write(images.join("b-seven.png"), synth::drawn(7, 400, 8.0)).unwrap();
    std::fs::write(images.join("c-broken.png"), b"not a png").unwrap();
    std::fs::write(images.join("notes.txt"), b"not an image, skipped").unwrap();
    dir
}

#[test]
fn the_command_reads_a_folder_reports_each_failure_and_exits_non_zero() {
    let dir = inputs();
    let output = common::digits(
        dir.path(),
        &[
            "predict",
            "images",
            "--top",
            "3",
            "--save-preprocessed",
            "seen",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed input makes the exit code 1"
    );
    let out = common::stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("images/a-three.png: 3 (") && lines[0].contains("top 3: 3 "),
        "{out}"
    );
    assert!(lines[1].starts_with("images/b-seven.png: 7 ("), "{out}");
    let err = common::stderr(&output);
    assert!(
        err.contains("error: images/c-broken.png: cannot decode the image"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    for name in ["a-three.png", "b-seven.png"] {
        let seen = image::open(dir.path().join("seen").join(name)).unwrap();
        assert_eq!((seen.width(), seen.height()), (28, 28));
    }
}

#[test]
fn json_and_csv_give_one_entry_per_input() {
    let dir = inputs();
    let json = common::digits(dir.path(), &["predict", "--format", "json", "images"]);
    let entries: serde_json::Value = serde_json::from_str(&common::stdout(&json)).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["digit"], 3);
    common::assert_probabilities(&entries[1]);
    assert!(
        entries[2]["error"]
            .as_str()
            .unwrap()
            .contains("cannot decode")
    );

    let csv = common::digits(dir.path(), &["predict", "--format", "csv", "images"]);
    let out = common::stdout(&csv);
    let rows: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(out.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(rows[0], ["path", "digit", "confidence", "verdict", "error"]);
    assert!(rows.iter().all(|row| row.len() == 5), "{out}");
    assert_eq!(rows[1][..2], ["images/a-three.png", "3"], "{out}");
    assert_eq!(rows[1][3], "digit", "{out}");
    assert_eq!(rows[1][4], "", "{out}");
    assert_eq!(rows[3][..4], ["images/c-broken.png", "", "", ""], "{out}");
    assert!(rows[3][4].starts_with("cannot decode the image"), "{out}");
}

#[test]
fn every_input_keeps_its_own_preprocessed_image() {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["a", "b"] {
        std::fs::create_dir(dir.path().join(folder)).unwrap();
        std::fs::write(
            dir.path().join(folder).join("0.png"),
            synth::drawn(0, 200, 8.0),
        )
        .unwrap();
    }
    // The same name but for its extension: image files are read by their content.
    std::fs::write(dir.path().join("a/0.jpg"), synth::drawn(0, 200, 8.0)).unwrap();
    let output = common::digits(
        dir.path(),
        &["predict", "a", "b", "--save-preprocessed", "seen"],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert_eq!(common::stdout(&output).lines().count(), 3);
    for saved in ["seen/a/0.png", "seen/a/0~2.png", "seen/b/0.png"] {
        let image = image::open(dir.path().join(saved)).unwrap();
        assert_eq!((image.width(), image.height()), (28, 28), "{saved}");
    }
    assert!(
        common::stderr(&output).contains("note: a/0.png: seen/a/0.png was already written"),
        "{}",
        common::stderr(&output)
    );
}

#[test]
fn a_folder_without_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let output = common::digits(dir.path(), &["predict", "empty"]);
    common::assert_clean_failure(
        &output,
        "error: empty: the folder holds no images (.png, .jpg",
    );
    assert_eq!(common::stdout(&output), "");
}

#[test]
fn standard_input_a_saved_run_and_whole_numbers_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_digits"))
        .args(["predict", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&synth::drawn(2, 300, 10.0))
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(
        common::stdout(&output).starts_with("-: 2 ("),
        "{}",
        common::stdout(&output)
    );

    let train = common::digits(
        dir.path(),
        &[
            "train",
            "--dataset",
            "mnist-lite",
            "--epochs",
            "1",
            "--out",
            "run",
        ],
    );
    assert!(train.status.success(), "{}", common::stderr(&train));
    std::fs::write(dir.path().join("one.png"), synth::drawn(1, 300, 10.0)).unwrap();
    let with_run = common::digits(dir.path(), &["predict", "--model", "run", "one.png"]);
    assert!(
        common::stdout(&with_run).starts_with("one.png: 1 ("),
        "{}",
        common::stdout(&with_run)
    );

    let page = synth::written_number(&[3, 8], 12.0);
    page.save(dir.path().join("number.png")).unwrap();
    let number = common::digits(dir.path(), &["predict", "--number", "number.png"]);
    assert!(
        common::stdout(&number).starts_with("number.png: 38 (3 "),
        "{}",
        common::stdout(&number)
    );
}

#[test]
#[ignore = "writes the README's example images: DIGITS_EXAMPLES=docs/examples cargo test --test predict -- --ignored write_examples"]
fn write_examples() {
    let dir = std::path::PathBuf::from(std::env::var("DIGITS_EXAMPLES").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let test = Dataset::lite(Split::Test);
    std::fs::write(
        dir.join("photo-of-a-7.jpg"),
        synth::dressed(test.image(0), "photo-jpeg", 1),
    )
    .unwrap();
    std::fs::write(
        dir.join("transparent-2.png"),
        synth::dressed(test.image(1), "transparent", 2),
    )
    .unwrap();
    std::fs::write(
        dir.join("lined-paper-1.png"),
        synth::dressed(test.image(2), "lined-paper", 3),
    )
    .unwrap();
    let page = synth::written_number(&[4, 2], 6.0);
    page.save(dir.join("number-42.png")).unwrap();
}

#[test]
fn every_supported_format_is_read_alike() {
    let predictor = Predictor::built_in(&Device::flex());
    let drawing = image::load_from_memory(&synth::drawn(5, 300, 10.0)).unwrap();
    let expected = predictor.predict(&[prepare::prepare(&drawing).unwrap()])[0].digit;
    assert_eq!(expected, 5);
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
        image::ImageFormat::Gif,
        image::ImageFormat::WebP,
        image::ImageFormat::Tiff,
    ] {
        let mut bytes = Vec::new();
        drawing
            .to_rgb8()
            .write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .unwrap();
        assert_eq!(read(&predictor, &bytes).unwrap(), expected, "{format:?}");
    }
}

#[test]
fn eval_scores_a_labelled_folder_source_by_source() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people");
    let mut labels = String::from("path,label,style\n");
    for (folder, width) in [("thin-pen", 3.0), ("marker", 24.0)] {
        std::fs::create_dir_all(people.join(folder)).unwrap();
        for digit in 0..10u8 {
            let name = format!("{folder}/{digit}.png");
            std::fs::write(people.join(&name), synth::drawn(digit, 300, width)).unwrap();
            labels.push_str(&format!("{name},{digit},drawn\n"));
        }
    }
    std::fs::write(people.join("labels.csv"), labels).unwrap();
    let output = common::digits(dir.path(), &["eval", "--images", "people", "--mistakes"]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    let text = common::stdout(&output);
    assert!(
        text.contains("Images: 20 in 2 folder(s) of people"),
        "{text}"
    );
    let accuracy: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Accuracy: "))
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in:\n{text}"));
    assert!(accuracy >= 70.0, "{text}");
    for row in ["marker ", "thin-pen ", "drawn "] {
        assert!(
            text.lines().any(|l| l.starts_with(row)),
            "no '{row}' row:\n{text}"
        );
    }
    let read: usize = text
        .lines()
        .skip_while(|l| !l.starts_with("confusion"))
        .skip(2)
        .take(10)
        .flat_map(|row| row.split_whitespace().skip(1))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(read, 20, "every image counted once:\n{text}");

    let missing = common::digits(dir.path(), &["eval", "--images", "nowhere"]);
    common::assert_clean_failure(&missing, "nowhere");
}
