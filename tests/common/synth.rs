//! A test set that looks like what people feed digits: MNIST test digits turned into scans,
//! photos, transparent drawings, rotated, thin and thick, on lined paper; and digits drawn as
//! pen strokes in code. Every image is made from a seed, so the set is the same every run.

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The ways an MNIST digit is dressed up.
/// (Thin pens are covered by [`drawn`], whose strokes can be one pixel wide.)
pub const VARIANTS: [&str; 6] = [
    "scan",
    "photo-jpeg",
    "transparent",
    "rotated",
    "thick-marker",
    "lined-paper",
];

/// Ink coverage of the upscaled digit, in [0, 1], on a `side`-pixel square.
fn upscale(digit: &[u8], side: u32) -> GrayImage {
    let small = GrayImage::from_raw(28, 28, digit.to_vec()).unwrap();
    imageops::resize(&small, side, side, FilterType::Triangle)
}

/// Copies `ink` onto a `w x h` canvas at (`x`, `y`), as coverage values.
fn place(ink: &GrayImage, w: u32, h: u32, x: u32, y: u32) -> Vec<f32> {
    let mut canvas = vec![0f32; (w * h) as usize];
    for (ix, iy, p) in ink.enumerate_pixels() {
        let (cx, cy) = (x + ix, y + iy);
        if cx < w && cy < h {
            canvas[(cy * w + cx) as usize] = f32::from(p[0]) / 255.0;
        }
    }
    canvas
}

fn rotate(image: &GrayImage, degrees: f32) -> GrayImage {
    let (w, h) = image.dimensions();
    let (s, c) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let (sx, sy) = (c * dx + s * dy + cx, -s * dx + c * dy + cy);
        if sx >= 0.0 && sy >= 0.0 && (sx as u32) < w && (sy as u32) < h {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            Luma([0])
        }
    })
}

/// The digit with every stroke one pixel wider on each side (a 3x3 maximum), at 28x28.
fn thicken(digit: &[u8]) -> Vec<u8> {
    (0..28 * 28)
        .map(|p| {
            let (x, y) = ((p % 28) as i64, (p / 28) as i64);
            (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (x + dx, y + dy)))
                .filter(|&(nx, ny)| (0..28).contains(&nx) && (0..28).contains(&ny))
                .map(|(nx, ny)| digit[(ny * 28 + nx) as usize])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

fn grey_page(
    coverage: &[f32],
    w: u32,
    h: u32,
    paper: impl Fn(u32, u32) -> f32,
    ink: f32,
) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let a = coverage[(y * w + x) as usize];
        let p = paper(x, y);
        Luma([((p * (1.0 - a) + ink * a) * 255.0).clamp(0.0, 255.0) as u8])
    })
}

/// One MNIST digit dressed as `variant`, encoded as the file a person would have.
pub fn dressed(digit: &[u8], variant: &str, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let side: u32 = rng.random_range(300..=2000);
    let size = (side as f32 * rng.random_range(0.35..0.7)) as u32;
    let (x, y) = (
        rng.random_range(0..side - size),
        rng.random_range(0..side - size),
    );
    let ink = upscale(digit, size);
    let encode = |image: DynamicImage, format: image::ImageFormat| {
        let mut bytes = Vec::new();
        image
            .write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    };
    let png = |image: DynamicImage| encode(image, image::ImageFormat::Png);
    match variant {
        "scan" => png(grey_page(
            &place(&ink, side, side, x, y),
            side,
            side,
            |_, _| 0.96,
            0.08,
        )
        .into()),
        "photo-jpeg" => {
            let shadow: f32 = rng.random_range(0.35..0.6);
            let coverage = place(&ink, side, side, x, y);
            let noise: Vec<f32> = (0..side * side)
                .map(|_| rng.random_range(-0.04..0.04))
                .collect();
            let page = RgbImage::from_fn(side, side, |px, py| {
                let light = 0.95 - shadow * (px as f32 / side as f32) * (py as f32 / side as f32);
                let a = coverage[(py * side + px) as usize];
                let v = (light * (1.0 - a) + 0.15 * a + noise[(py * side + px) as usize])
                    .clamp(0.0, 1.0);
                Rgb([(v * 250.0) as u8, (v * 240.0) as u8, (v * 225.0) as u8])
            });
            let mut bytes = Vec::new();
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 60);
            encoder.encode_image(&page).unwrap();
            bytes
        }
        "transparent" => {
            let coverage = place(&ink, side, side, x, y);
            png(RgbaImage::from_fn(side, side, |px, py| {
                Rgba([0, 0, 0, (coverage[(py * side + px) as usize] * 255.0) as u8])
            })
            .into())
        }
        "rotated" => {
            let angle = rng.random_range(-12.0..12.0);
            let turned = rotate(&ink, angle);
            png(grey_page(
                &place(&turned, side, side, x, y),
                side,
                side,
                |_, _| 1.0,
                0.0,
            )
            .into())
        }
        "thick-marker" => {
            let thick = upscale(&thicken(digit), size);
            png(grey_page(
                &place(&thick, side, side, x, y),
                side,
                side,
                |_, _| 1.0,
                0.0,
            )
            .into())
        }
        "lined-paper" => {
            let spacing = rng.random_range(25..45);
            let coverage = place(&ink, side, side, x, y);
            png(RgbImage::from_fn(side, side, |px, py| {
                let a = coverage[(py * side + px) as usize];
                let line = py % spacing == 0;
                let paper = if line {
                    [150.0, 180.0, 235.0]
                } else {
                    [252.0, 252.0, 248.0]
                };
                let v = |c: f32| (c * (1.0 - a) + 20.0 * a) as u8;
                Rgb([v(paper[0]), v(paper[1]), v(paper[2])])
            })
            .into())
        }
        other => panic!("unknown variant {other}"),
    }
}

/// Pen strokes for each digit, as polylines in a unit box (x right, y down).
fn strokes(digit: u8) -> Vec<Vec<(f32, f32)>> {
    let arc = |cx: f32, cy: f32, rx: f32, ry: f32, from: f32, to: f32| -> Vec<(f32, f32)> {
        (0..=24)
            .map(|i| {
                let t = (from + (to - from) * i as f32 / 24.0).to_radians();
                (cx + rx * t.cos(), cy + ry * t.sin())
            })
            .collect()
    };
    match digit {
        0 => vec![arc(0.5, 0.5, 0.3, 0.45, 0.0, 360.0)],
        1 => vec![vec![(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
        2 => vec![
            [
                arc(0.5, 0.3, 0.28, 0.25, 180.0, 360.0),
                vec![(0.78, 0.3), (0.2, 0.95), (0.82, 0.95)],
            ]
            .concat(),
        ],
        3 => vec![
            arc(0.48, 0.28, 0.27, 0.23, 200.0, 450.0),
            arc(0.48, 0.73, 0.3, 0.23, 270.0, 520.0),
        ],
        4 => vec![
            vec![(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)],
            vec![(0.62, 0.3), (0.62, 0.95)],
        ],
        5 => vec![
            [
                vec![(0.78, 0.05), (0.3, 0.05), (0.25, 0.45)],
                arc(0.5, 0.68, 0.3, 0.27, 240.0, 500.0),
            ]
            .concat(),
        ],
        6 => vec![
            [
                vec![(0.7, 0.05), (0.35, 0.35)],
                arc(0.5, 0.7, 0.27, 0.25, 200.0, 560.0),
            ]
            .concat(),
        ],
        7 => vec![vec![(0.15, 0.07), (0.85, 0.07), (0.4, 0.95)]],
        8 => vec![
            arc(0.5, 0.27, 0.22, 0.22, 0.0, 360.0),
            arc(0.5, 0.72, 0.28, 0.23, 0.0, 360.0),
        ],
        _ => vec![
            arc(0.5, 0.3, 0.25, 0.23, 0.0, 360.0),
            vec![(0.75, 0.3), (0.7, 0.95)],
        ],
    }
}

/// A digit drawn with a pen `width` pixels wide on a white `side`-pixel canvas, as PNG.
pub fn drawn(digit: u8, side: u32, width: f32) -> Vec<u8> {
    let (x0, y0, scale) = (side as f32 * 0.3, side as f32 * 0.2, side as f32 * 0.45);
    let segments: Vec<Segment> = strokes(digit)
        .iter()
        .flat_map(|line| line.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>())
        .map(|((ax, ay), (bx, by))| {
            (
                (x0 + ax * scale * 0.75, y0 + ay * scale),
                (x0 + bx * scale * 0.75, y0 + by * scale),
            )
        })
        .collect();
    rasterise(&segments, side, side, width)
}

/// Pen strokes given as polylines in fractions of a `w x h` white canvas (0,0 top left,
/// 1,1 bottom right), `width` pixels wide, as PNG: a dot, a cross, a digit at the edge.
pub fn sketch(lines: &[&[(f32, f32)]], w: u32, h: u32, width: f32) -> Vec<u8> {
    let at = |(x, y): (f32, f32)| (x * w as f32, y * h as f32);
    let segments: Vec<_> = lines
        .iter()
        .flat_map(|line| match line.len() {
            1 => vec![(at(line[0]), at(line[0]))],
            _ => line.windows(2).map(|p| (at(p[0]), at(p[1]))).collect(),
        })
        .collect();
    rasterise(&segments, w, h, width)
}

/// A straight pen stroke from one point to another.
type Segment = ((f32, f32), (f32, f32));

/// Black pen segments on a white `w x h` canvas, as PNG.
fn rasterise(segments: &[Segment], w: u32, h: u32, width: f32) -> Vec<u8> {
    let radius = width / 2.0;
    let image = GrayImage::from_fn(w, h, |x, y| {
        let p = (x as f32 + 0.5, y as f32 + 0.5);
        let near = segments
            .iter()
            .any(|&(a, b)| distance_to_segment(p, a, b) <= radius.max(0.5));
        Luma([if near { 0 } else { 255 }])
    });
    let mut bytes = Vec::new();
    DynamicImage::from(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

fn distance_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let length = abx * abx + aby * aby;
    let t = if length == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * abx + (p.1 - a.1) * aby) / length).clamp(0.0, 1.0)
    };
    let (cx, cy) = (a.0 + t * abx, a.1 + t * aby);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

/// Digits drawn side by side on one white page, 300 pixels each: a number written by hand.
pub fn written_number(digits: &[u8], width: f32) -> GrayImage {
    let mut page = GrayImage::from_pixel(300 * digits.len() as u32, 300, Luma([255]));
    for (i, &d) in digits.iter().enumerate() {
        let digit = image::load_from_memory(&drawn(d, 300, width))
            .unwrap()
            .to_luma8();
        imageops::overlay(&mut page, &digit, (i * 300) as i64, 0);
    }
    page
}
