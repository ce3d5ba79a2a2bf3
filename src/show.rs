//! The tutorial's picture of samples: a grid of digits, each titled with its label, as a PNG
//! and as a preview for the terminal.

use std::ops::Range;

use font8x8::UnicodeFonts;
use image::{GrayImage, Luma};

use crate::data::{Dataset, IMAGE_SIDE};

/// Each digit is drawn this many pixels per MNIST pixel.
const SCALE: u32 = 6;
/// Title glyphs are 8x8, drawn at this scale.
const TEXT_SCALE: u32 = 2;
const CELL: u32 = IMAGE_SIDE as u32 * SCALE;
const TITLE_HEIGHT: u32 = 8 * TEXT_SCALE + 12;
const GAP: u32 = 12;
const BACKGROUND: u8 = 255;
const INK: u8 = 0;

/// One picture in the grid.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub index: usize,
    pub pixels: &'a [u8],
    pub title: String,
}

/// The indices the tutorial shows: samples 59000.. of the 60,000-image training set; for a
/// smaller set, its last `count`. An explicit `start` wins.
pub fn sample_range(len: usize, start: Option<usize>, count: usize) -> Range<usize> {
    const TUTORIAL_START: usize = 59_000;
    let start = start.unwrap_or(if len >= TUTORIAL_START + count {
        TUTORIAL_START
    } else {
        len.saturating_sub(count)
    });
    start.min(len)..(start + count).min(len)
}

/// The samples at `range`, titled with their class names.
pub fn samples(data: &Dataset, range: Range<usize>) -> Vec<Sample<'_>> {
    range
        .map(|index| Sample {
            index,
            pixels: data.image(index),
            title: data.class_names()[usize::from(data.label(index))].to_string(),
        })
        .collect()
}

/// Draws the samples `columns` to a row, white digits on black under black titles on white,
/// as matplotlib's grey colour map shows them in the tutorial.
pub fn grid(samples: &[Sample], columns: usize) -> GrayImage {
    let columns = columns.max(1) as u32;
    let rows = (samples.len() as u32).div_ceil(columns).max(1);
    let width = GAP + columns * (CELL + GAP);
    let height = GAP + rows * (TITLE_HEIGHT + CELL + GAP);
    let mut image = GrayImage::from_pixel(width, height, Luma([BACKGROUND]));
    for (i, sample) in samples.iter().enumerate() {
        let (column, row) = (i as u32 % columns, i as u32 / columns);
        let left = GAP + column * (CELL + GAP);
        let top = GAP + row * (TITLE_HEIGHT + CELL + GAP);
        draw_title(&mut image, &sample.title, left, top);
        for (p, &value) in sample.pixels.iter().enumerate() {
            let (x, y) = ((p % IMAGE_SIDE) as u32, (p / IMAGE_SIDE) as u32);
            for dy in 0..SCALE {
                for dx in 0..SCALE {
                    image.put_pixel(
                        left + x * SCALE + dx,
                        top + TITLE_HEIGHT + y * SCALE + dy,
                        Luma([value]),
                    );
                }
            }
        }
    }
    image
}

/// Centres `text` above a cell, in the public-domain 8x8 font; characters it lacks are skipped.
fn draw_title(image: &mut GrayImage, text: &str, left: u32, top: u32) {
    let glyphs: Vec<[u8; 8]> = text
        .chars()
        .filter_map(|c| font8x8::BASIC_FONTS.get(c))
        .collect();
    let text_width = glyphs.len() as u32 * 8 * TEXT_SCALE;
    let start = left + CELL.saturating_sub(text_width) / 2;
    for (g, glyph) in glyphs.iter().enumerate() {
        for (y, bits) in glyph.iter().enumerate() {
            for x in 0..8u32 {
                if bits >> x & 1 == 0 {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let px = start + (g as u32 * 8 + x) * TEXT_SCALE + dx;
                        let py = top + 4 + y as u32 * TEXT_SCALE + dy;
                        if px < image.width() && py < image.height() {
                            image.put_pixel(px, py, Luma([INK]));
                        }
                    }
                }
            }
        }
    }
}

/// The same grid as text: each digit in 14 lines of 28 characters (two pixel rows per line,
/// since terminal cells are about twice as tall as wide), titled with its index and label.
pub fn preview(samples: &[Sample], columns: usize) -> String {
    const SHADES: &[u8] = b" .:-=+*#%@";
    let mut out = String::new();
    for chunk in samples.chunks(columns.max(1)) {
        let titles: Vec<String> = chunk
            .iter()
            .map(|s| format!("{:<28}", format!("#{} {}", s.index, s.title)))
            .collect();
        out.push_str(titles.join("  ").trim_end());
        out.push('\n');
        for line in 0..IMAGE_SIDE / 2 {
            let rows: Vec<String> = chunk
                .iter()
                .map(|s| {
                    (0..IMAGE_SIDE)
                        .map(|x| {
                            let top = u16::from(s.pixels[2 * line * IMAGE_SIDE + x]);
                            let bottom = u16::from(s.pixels[(2 * line + 1) * IMAGE_SIDE + x]);
                            let level = (top + bottom) as usize * (SHADES.len() - 1) / 510;
                            SHADES[level] as char
                        })
                        .collect()
                })
                .collect();
            out.push_str(rows.join("  ").trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Split;

    #[test]
    fn the_tutorial_range_is_59000_to_59008_on_full_mnist() {
        assert_eq!(sample_range(60_000, None, 9), 59_000..59_009);
        assert_eq!(sample_range(10_000, None, 9), 9_991..10_000);
        assert_eq!(sample_range(10_000, Some(5), 3), 5..8);
        assert_eq!(sample_range(4, None, 9), 0..4);
        assert_eq!(sample_range(4, Some(10), 9), 4..4);
    }

    #[test]
    fn the_grid_has_room_for_every_sample_and_shows_their_pixels() {
        let data = Dataset::lite(Split::Test);
        let samples = samples(&data, 0..9);
        let image = grid(&samples, 3);
        assert_eq!(image.width(), GAP + 3 * (CELL + GAP));
        assert_eq!(image.height(), GAP + 3 * (TITLE_HEIGHT + CELL + GAP));
        // The centre of the first digit's cell carries that digit's centre pixel.
        let centre = data.image(0)[14 * IMAGE_SIDE + 14];
        let pixel = image.get_pixel(GAP + 14 * SCALE, GAP + TITLE_HEIGHT + 14 * SCALE);
        assert_eq!(pixel.0[0], centre);
        // The title drew some ink above it.
        let title_ink = (GAP..GAP + CELL)
            .flat_map(|x| (GAP..GAP + TITLE_HEIGHT).map(move |y| (x, y)))
            .filter(|&(x, y)| image.get_pixel(x, y).0[0] == INK)
            .count();
        assert!(title_ink > 0);
    }

    #[test]
    fn the_preview_titles_each_digit() {
        let data = Dataset::lite(Split::Test);
        let text = preview(&samples(&data, 0..2), 3);
        let first_line = text.lines().next().unwrap();
        assert!(first_line.starts_with("#0 7"), "{first_line}");
        assert!(first_line.contains("#1 2"));
        assert_eq!(text.lines().count(), 1 + IMAGE_SIDE / 2);
    }
}
