//! A person's image -> the 28x28 digit a model trained on MNIST expects.
//!
//! MNIST's digits were "size normalized to fit in a 20x20 pixel box while preserving their
//! aspect ratio ... centered in a 28x28 image by computing the center of mass of the pixels",
//! white ink on black. A phone photo, a scan or a drawing is none of that, and a model fed such
//! an image as it is gets it wrong. [`prepare`] does MNIST's preparation on any image:
//!
//! 1. decode, honouring EXIF orientation, within a pixel budget ([`decode`]);
//! 2. flatten transparency onto the background the ink is not, and take luminance;
//! 3. shrink to a working size by averaging (so a 2000x2000 photo costs what a 400x400 does);
//! 4. decide which of ink and paper is dark, and invert to white-on-black;
//! 5. subtract the background's slow variation (shadows, uneven light) when there is any;
//! 6. threshold (Otsu), then drop specks, ruled lines and frame edges;
//! 7. keep the largest mark and what lies close to it, crop to it;
//! 8. thicken thin strokes (a 1-px pen line) to MNIST's relative stroke width;
//! 9. scale the longer side to 20 px with area averaging, and place the result in 28x28 with
//!    its intensity-weighted centre of mass at the centre.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};

/// Images above this many pixels are refused before they are decoded: 50 megapixels is past
/// any phone camera, and stops decompression bombs.
pub const MAX_PIXELS: u64 = 50_000_000;
/// The longer side of the working copy.
const WORK_SIDE: usize = 400;
/// Smaller images are enlarged to at least this longer side before they are read.
const MIN_WORK_SIDE: usize = 112;
/// MNIST's digits fit a 20x20 box inside the 28x28 image.
const BOX_SIDE: usize = 20;
/// MNIST's strokes are about this wide, in pixels of the 20-px box.
const STROKE_IN_BOX: f32 = 2.2;
/// Ink that is not this many stroke widths long is a dot: the shortest digit, a 1, is several
/// widths tall even in a thick marker (MNIST's 1s: 20 px tall, 2-3 px wide).
const DOT_LENGTH_IN_STROKES: f32 = 2.5;
/// Ink this many times wider than tall is a dash: the widest digits (a flat 2, a 7 with a long
/// bar) stay under 2:1.
const DASH_ASPECT: usize = 4;

/// Every way preparing an image can fail.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot decode the image")]
    Decode(#[source] image::ImageError),
    #[error("the image is {width}x{height}, over the limit of {MAX_PIXELS} pixels")]
    TooLarge { width: u32, height: u32 },
    #[error("the image is empty")]
    Empty,
    #[error("no digit found: the image has no marks that stand out from its background")]
    NoInk,
}

impl PrepareError {
    /// The message and its causes in one line, for answers that carry text rather than an
    /// error (the service's JSON, a scorecard's rows).
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// A digit ready for a model: 28x28 bytes, white on black, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub pixels: Vec<u8>,
    /// Set when the marks are not one digit, whatever a model would make of them: scaled
    /// into the 20-px box, a dot becomes a fat ring, a dash a bar and "305" a squashed
    /// scribble, and a model trained only on single digits reads them as 0, 4 or 7 with full
    /// confidence.
    pub not_one_digit: Option<NotOneDigit>,
}

/// Marks that are not one digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotOneDigit {
    /// Ink hardly longer than it is thick: a dot, a blot.
    Dot,
    /// A lone horizontal stroke: a dash, an underline.
    Dash,
    /// Digit-sized marks side by side: a number.
    Several,
}

impl Prepared {
    /// A 28x28 digit (784 bytes, white on black) prepared elsewhere.
    pub fn from_pixels(pixels: Vec<u8>) -> Self {
        Self {
            pixels,
            not_one_digit: None,
        }
    }

    /// The image as a 28x28 greyscale picture, e.g. to save what the model saw.
    pub fn to_image(&self) -> image::GrayImage {
        image::GrayImage::from_raw(IMAGE_SIDE as u32, IMAGE_SIDE as u32, self.pixels.clone())
            .expect("784 bytes make a 28x28 image")
    }
}

/// Decodes an image file's bytes (PNG, JPEG, BMP, GIF, WebP, TIFF), applying its EXIF
/// orientation, refusing images over [`MAX_PIXELS`] before allocating them.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, PrepareError> {
    let decode_error = PrepareError::Decode;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PrepareError::Decode(e.into()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PrepareError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(PrepareError::Empty);
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Prepares the single digit in `image`.
pub fn prepare(image: &DynamicImage) -> Result<Prepared, PrepareError> {
    let page = Page::read(image)?;
    let marks = page.marks();
    let main = marks
        .iter()
        .max_by_key(|m| m.area)
        .ok_or(PrepareError::NoInk)?;
    // Parts of one digit that do not touch (the bar of a 5, a pen lift) lie close to the main
    // mark; what lies further away is something else on the page.
    let reach = main.width().max(main.height()) as isize * 3 / 10;
    let kept: Vec<&Mark> = marks
        .iter()
        .filter(|m| m.area * 100 >= main.area && m.near(main, reach))
        .collect();
    let mut prepared = page.render(&kept);
    // Other marks as tall as this one, on the same line: the digits of a number.
    let line_mates: Vec<&Mark> = marks
        .iter()
        .filter(|m| m.area * 10 >= main.area && m.height() * 2 >= main.height())
        .filter(|m| m.overlaps_vertically(main))
        .collect();
    if side_by_side(line_mates).len() > 1 && prepared.not_one_digit.is_none() {
        prepared.not_one_digit = Some(NotOneDigit::Several);
    }
    Ok(prepared)
}

/// Groups marks into the digits of a line, left to right: marks that overlap horizontally
/// belong to one digit (the two strokes of a 4 or a 5).
fn side_by_side(mut marks: Vec<&Mark>) -> Vec<Vec<&Mark>> {
    marks.sort_by_key(|m| m.left);
    let mut digits: Vec<Vec<&Mark>> = Vec::new();
    for mark in marks {
        match digits.last_mut() {
            Some(group) if group.iter().any(|g| mark.overlaps_horizontally(g)) => group.push(mark),
            _ => digits.push(vec![mark]),
        }
    }
    digits
}

/// Prepares each digit of a number written left to right, in that order.
pub fn prepare_number(image: &DynamicImage) -> Result<Vec<Prepared>, PrepareError> {
    let page = Page::read(image)?;
    let mut marks = page.marks();
    let largest = marks
        .iter()
        .map(|m| m.area)
        .max()
        .ok_or(PrepareError::NoInk)?;
    marks.retain(|m| m.area * 10 >= largest);
    let digits = side_by_side(marks.iter().collect());
    Ok(digits.iter().map(|group| page.render(group)).collect())
}

/// The working copy: ink in [0, 1] on a black background, at most `WORK_SIDE` on a side.
struct Page {
    width: usize,
    height: usize,
    ink: Vec<f32>,
    mask: Vec<bool>,
}

/// A connected group of ink pixels.
#[derive(Debug, Clone)]
struct Mark {
    pixels: Vec<usize>,
    area: usize,
    left: usize,
    right: usize,
    top: usize,
    bottom: usize,
}

impl Mark {
    fn width(&self) -> usize {
        self.right - self.left + 1
    }

    fn height(&self) -> usize {
        self.bottom - self.top + 1
    }

    fn near(&self, other: &Mark, reach: isize) -> bool {
        let gap = |a0: usize, a1: usize, b0: usize, b1: usize| {
            (b0 as isize - a1 as isize).max(a0 as isize - b1 as isize)
        };
        gap(self.left, self.right, other.left, other.right) <= reach
            && gap(self.top, self.bottom, other.top, other.bottom) <= reach
    }

    fn overlaps_horizontally(&self, other: &Mark) -> bool {
        let overlap = self.right.min(other.right) as isize - self.left.max(other.left) as isize;
        overlap * 2 >= self.width().min(other.width()) as isize
    }

    fn overlaps_vertically(&self, other: &Mark) -> bool {
        let overlap = self.bottom.min(other.bottom) as isize - self.top.max(other.top) as isize;
        overlap * 2 >= self.height().min(other.height()) as isize
    }
}

impl Page {
    fn read(image: &DynamicImage) -> Result<Self, PrepareError> {
        if image.width() == 0 || image.height() == 0 {
            return Err(PrepareError::Empty);
        }
        let (luminance, width, height) = enlarge_small(working_luminance(image));
        let mut page = Page {
            width,
            height,
            ink: luminance,
            mask: Vec::new(),
        };
        page.make_ink_white();
        page.flatten_background();
        page.stretch_contrast().ok_or(PrepareError::NoInk)?;
        page.threshold();
        page.remove_lines();
        Ok(page)
    }

    /// Ink is the minority: if most of the page is light, the ink is dark, so invert.
    fn make_ink_white(&mut self) {
        if percentile(&self.ink, 0.5) > 0.5 {
            self.ink.iter_mut().for_each(|v| *v = 1.0 - *v);
        }
    }

    /// Subtracts a smooth estimate of the background (each cell of a 4x4 grid's 20th
    /// percentile, interpolated), when the background is uneven enough to need it.
    fn flatten_background(&mut self) {
        const GRID: usize = 4;
        if self.width < 64 || self.height < 64 {
            return;
        }
        let mut levels = [[0f32; GRID]; GRID];
        for (gy, row) in levels.iter_mut().enumerate() {
            for (gx, level) in row.iter_mut().enumerate() {
                let (x0, x1) = (gx * self.width / GRID, (gx + 1) * self.width / GRID);
                let (y0, y1) = (gy * self.height / GRID, (gy + 1) * self.height / GRID);
                let cell: Vec<f32> = (y0..y1)
                    .flat_map(|y| {
                        self.ink[y * self.width + x0..y * self.width + x1]
                            .iter()
                            .copied()
                    })
                    .collect();
                *level = percentile(&cell, 0.2);
            }
        }
        let flat = levels.iter().flatten();
        let (low, high) = flat.fold((1f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if high - low < 0.05 {
            let floor = low;
            self.ink.iter_mut().for_each(|v| *v = (*v - floor).max(0.0));
            return;
        }
        for y in 0..self.height {
            let fy = (y as f32 + 0.5) / self.height as f32 * GRID as f32 - 0.5;
            for x in 0..self.width {
                let fx = (x as f32 + 0.5) / self.width as f32 * GRID as f32 - 0.5;
                let background = bilinear(&levels, fx, fy);
                let v = &mut self.ink[y * self.width + x];
                *v = (*v - background).max(0.0);
            }
        }
    }

    /// Scales so the strongest ink (its 99.5th percentile) is 1; `None` on a blank page.
    fn stretch_contrast(&mut self) -> Option<()> {
        let top =
            percentile(&self.ink, 0.995).max(self.ink.iter().copied().fold(0.0, f32::max) * 0.5);
        if top < 0.08 {
            return None;
        }
        self.ink.iter_mut().for_each(|v| *v = (*v / top).min(1.0));
        Some(())
    }

    fn threshold(&mut self) {
        let t = otsu(&self.ink).max(0.15);
        self.mask = self.ink.iter().map(|&v| v > t).collect();
    }

    /// Clears ruled and grid lines, and the edges of a sheet photographed on a darker table:
    /// bands of rows (or columns) inked across nearly the whole page that are thin and run
    /// past the other ink on both sides. A digit's own strokes never do all of that: a tall 1
    /// spans the page but is the only ink, the bar of a 7 drawn edge to edge ends where its
    /// stem begins.
    fn remove_lines(&mut self) {
        let (w, h) = (self.width, self.height);
        let index = move |along: usize, across: usize, rows: bool| {
            if rows {
                across * w + along
            } else {
                along * w + across
            }
        };
        let mut lines = Vec::new();
        for rows in [true, false] {
            let mask = &self.mask;
            let (length, count) = if rows { (w, h) } else { (h, w) };
            let inked = move |i: usize| (0..length).filter(move |&j| mask[index(j, i, rows)]);
            let full: Vec<bool> = (0..count)
                .map(|i| inked(i).count() * 10 >= length * 9)
                .collect();
            let thin = (count / 25).max(3);
            let mut start = 0;
            while start < count {
                let end = (start..count).find(|&i| !full[i]).unwrap_or(count);
                let band = start..end;
                start = end + 1;
                if band.is_empty() || band.len() > thin {
                    continue;
                }
                // How far the band reaches, and how far the ink of the rows that are not
                // lines does, along the line.
                let extent = |ink: &mut dyn Iterator<Item = usize>| {
                    ink.fold(None, |e: Option<(usize, usize)>, j| {
                        Some(e.map_or((j, j), |(lo, hi)| (lo.min(j), hi.max(j))))
                    })
                };
                let line = extent(&mut band.clone().flat_map(inked));
                let other = extent(&mut (0..count).filter(|&i| !full[i]).flat_map(inked));
                let margin = length / 20;
                if let (Some(line), Some(other)) = (line, other)
                    && other.0 >= line.0 + margin
                    && other.1 + margin <= line.1
                {
                    lines.push((rows, band));
                }
            }
        }
        for (rows, band) in lines {
            let length = if rows { w } else { h };
            for i in band {
                (0..length).for_each(|j| self.mask[index(j, i, rows)] = false);
            }
        }
    }

    /// Connected marks (8-connectivity), without specks and without thin marks along the
    /// page's border (frame edges, a table's edge).
    fn marks(&self) -> Vec<Mark> {
        let (w, h) = (self.width, self.height);
        let mut seen = vec![false; w * h];
        let mut marks = Vec::new();
        for start in 0..w * h {
            if !self.mask[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut pixels = Vec::new();
            while let Some(p) = stack.pop() {
                pixels.push(p);
                for q in touching(p, w, h) {
                    if self.mask[q] && !seen[q] {
                        seen[q] = true;
                        stack.push(q);
                    }
                }
            }
            marks.push(Mark {
                area: pixels.len(),
                left: pixels.iter().map(|p| p % w).min().unwrap_or(0),
                right: pixels.iter().map(|p| p % w).max().unwrap_or(0),
                top: pixels.iter().map(|p| p / w).min().unwrap_or(0),
                bottom: pixels.iter().map(|p| p / w).max().unwrap_or(0),
                pixels,
            });
        }
        let speck = (w * h / 20_000).max(2);
        // A frame edge runs along the border it touches; a digit cropped tightly only ends
        // there (the foot of a 1 on the bottom edge).
        marks.retain(|m| {
            let thin = m.width().min(m.height()) * 20 < w.max(h);
            let along_side =
                (m.left == 0 || m.right + 1 == w) && m.height() * 2 > h && m.width() * 4 < w;
            let along_top_or_bottom =
                (m.top == 0 || m.bottom + 1 == h) && m.width() * 2 > w && m.height() * 4 < h;
            let frame_edge = thin && (along_side || along_top_or_bottom);
            m.area > speck && !frame_edge
        });
        // A ruled line photographed at a slant misses the row test in `remove_lines`, but
        // still runs from edge to edge, apart from a digit as large as it (a tall 1 alone on
        // the page runs from edge to edge too, and is the digit).
        let ruled = |m: &Mark| {
            (m.left == 0 && m.right + 1 == w && m.height() * 8 < h)
                || (m.top == 0 && m.bottom + 1 == h && m.width() * 8 < w)
        };
        let largest_unruled = marks
            .iter()
            .filter(|m| !ruled(m))
            .map(|m| m.area)
            .max()
            .unwrap_or(0);
        marks.retain(|m| !ruled(m) || largest_unruled * 2 < m.area);
        marks
    }

    /// Crops to `marks`, thickens thin strokes, scales into the 20-px box and centres by mass.
    fn render(&self, marks: &[&Mark]) -> Prepared {
        let left = marks.iter().map(|m| m.left).min().unwrap_or(0);
        let right = marks.iter().map(|m| m.right).max().unwrap_or(0);
        let top = marks.iter().map(|m| m.top).min().unwrap_or(0);
        let bottom = marks.iter().map(|m| m.bottom).max().unwrap_or(0);
        let (ink_w, ink_h) = (right - left + 1, bottom - top + 1);
        let longer = ink_w.max(ink_h) as f32;
        let target = STROKE_IN_BOX * longer / BOX_SIDE as f32;
        // Room around the ink for thickened strokes to grow outwards: a thin 1 cropped to
        // its ink has none, and would stay a hairline.
        let pad = (target / 2.0).ceil() as usize;
        let (cw, ch) = (ink_w + 2 * pad, ink_h + 2 * pad);
        let mut keep = vec![false; cw * ch];
        for p in marks.iter().flat_map(|m| &m.pixels) {
            let (x, y) = (p % self.width - left + pad, p / self.width - top + pad);
            keep[y * cw + x] = true;
        }
        let keep = dilate_mask(&keep, cw, ch);
        let mut crop: Vec<f32> = (0..cw * ch)
            .map(|p| {
                let (x, y) = (p % cw, p / cw);
                let inside = (pad..pad + ink_w).contains(&x) && (pad..pad + ink_h).contains(&y);
                if keep[p] && inside {
                    self.ink[(y + top - pad) * self.width + x + left - pad]
                } else {
                    0.0
                }
            })
            .collect();
        let core_level = otsu(&crop).max(0.15);
        let core = |values: &[f32]| values.iter().map(|&v| v > core_level).collect::<Vec<_>>();
        let stroke = stroke_width(&core(&crop), cw, ch);
        let not_one_digit = if longer < DOT_LENGTH_IN_STROKES * stroke {
            Some(NotOneDigit::Dot)
        } else if ink_w >= DASH_ASPECT * ink_h {
            Some(NotOneDigit::Dash)
        } else {
            None
        };
        if stroke < target * 0.8 {
            // Thicken as far as MNIST's stroke width, but never so far that a loop closes (a
            // thin triangle 4 becoming a 9) or strokes merge into a new one (a 3's hook
            // joining its middle into a 5's bar).
            let loops = holes(&core(&crop), cw, ch);
            let wanted = ((target - stroke) / 2.0).round().max(1.0) as usize;
            if let Some(thick) = (1..=wanted)
                .rev()
                .map(|radius| max_filter(&crop, cw, ch, radius))
                .find(|thick| holes(&core(thick), cw, ch) == loops)
            {
                crop = thick;
            }
        }
        let (crop, cw, ch) = trim(crop, cw, ch);
        Prepared {
            pixels: frame(&crop, cw, ch),
            not_one_digit,
        }
    }
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

/// The pixels that touch pixel `p` (8-connectivity) inside a `w x h` image.
fn touching(p: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((p % w) as isize, (p / w) as isize);
    NEIGHBOURS.iter().filter_map(move |(dx, dy)| {
        let (nx, ny) = (x + dx, y + dy);
        let inside = nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize;
        inside.then(|| ny as usize * w + nx as usize)
    })
}

/// Luminance in [0, 1], averaged over `factor x factor` blocks so the longer side is at most
/// `WORK_SIDE`, in one pass over the pixels (a 2000x2000 photo is never copied at full size).
/// Transparency is flattened onto the background the ink is not: a drawing app's black strokes
/// on transparent pixels (often stored as transparent black) become black on white, and white
/// strokes become white on black.
fn working_luminance(image: &DynamicImage) -> (Vec<f32>, usize, usize) {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let factor = width.max(height).div_ceil(WORK_SIDE).max(1);
    let shape = |channels| [width, height, factor, channels];
    let rgb_luma = |p: &[u8]| {
        (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 255.0
    };
    match image {
        DynamicImage::ImageLuma8(grey) => {
            shrink_luminance(shape(1), |p| f32::from(p[0]) / 255.0, grey.as_raw())
        }
        DynamicImage::ImageRgb8(rgb) => shrink_luminance(shape(3), rgb_luma, rgb.as_raw()),
        _ if !image.color().has_alpha() => {
            shrink_luminance(shape(3), rgb_luma, image.to_rgb8().as_raw())
        }
        _ => {
            let rgba = image.to_rgba8();
            let transparent = rgba.pixels().filter(|p| p[3] < 128).count();
            let background = if transparent * 100 < rgba.len() / 4 {
                None
            } else {
                let (sum, count) = rgba
                    .pixels()
                    .filter(|p| p[3] >= 128)
                    .fold((0.0, 0usize), |(s, n), p| (s + rgb_luma(&p.0), n + 1));
                Some(if count > 0 && sum / (count as f32) < 0.5 {
                    1.0
                } else {
                    0.0
                })
            };
            let flattened = |p: &[u8]| match background {
                None => rgb_luma(p),
                Some(background) => {
                    let alpha = f32::from(p[3]) / 255.0;
                    alpha * rgb_luma(p) + (1.0 - alpha) * background
                }
            };
            shrink_luminance(shape(4), flattened, rgba.as_raw())
        }
    }
}

/// The mean of `luma(pixel)` over each `factor x factor` block of `raw` (`channels` bytes per
/// pixel), summed row by row. Generic over `luma` so that it is inlined into the loop: called
/// through a `dyn Fn`, it cost a call per pixel, 70% of preparing a 2000x2000 photo.
fn shrink_luminance(
    [width, height, factor, channels]: [usize; 4],
    luma: impl Fn(&[u8]) -> f32,
    raw: &[u8],
) -> (Vec<f32>, usize, usize) {
    let (sw, sh) = (width.div_ceil(factor), height.div_ceil(factor));
    let mut sums = vec![0f32; sw * sh];
    for (y, row) in raw.chunks_exact(width * channels).enumerate() {
        let target = &mut sums[(y / factor) * sw..(y / factor + 1) * sw];
        for (sum, block) in target.iter_mut().zip(row.chunks(factor * channels)) {
            for pixel in block.chunks_exact(channels) {
                *sum += luma(pixel);
            }
        }
    }
    let averaged = sums
        .iter()
        .enumerate()
        .map(|(i, sum)| {
            let (cx, cy) = (i % sw, i / sw);
            let cw = (width - cx * factor).min(factor);
            let ch = (height - cy * factor).min(factor);
            sum / (cw * ch) as f32
        })
        .collect();
    (averaged, sw, sh)
}

/// A small image (a 28x28 drawing, a 32x32 scan crop) enlarged by an integer factor with
/// bilinear interpolation until its longer side is at least `MIN_WORK_SIDE`: at 28 px a 1-px
/// stroke has no room to be measured, thickened or cleaned of its background without
/// breaking into dots.
fn enlarge_small((values, w, h): (Vec<f32>, usize, usize)) -> (Vec<f32>, usize, usize) {
    let factor = MIN_WORK_SIDE.div_ceil(w.max(h));
    if factor <= 1 {
        return (values, w, h);
    }
    let (bw, bh) = (w * factor, h * factor);
    let sample = |x: f32, y: f32| {
        let (x, y) = (x.clamp(0.0, (w - 1) as f32), y.clamp(0.0, (h - 1) as f32));
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let top = values[y0 * w + x0] * (1.0 - fx) + values[y0 * w + x1] * fx;
        let bottom = values[y1 * w + x0] * (1.0 - fx) + values[y1 * w + x1] * fx;
        top * (1.0 - fy) + bottom * fy
    };
    let source = |i: usize| (i as f32 + 0.5) / factor as f32 - 0.5;
    let big = (0..bw * bh)
        .map(|p| sample(source(p % bw), source(p / bw)))
        .collect();
    (big, bw, bh)
}

/// The value below which a fraction `q` of `values` (all in [0, 1]) lies, to within 1/256:
/// a histogram, so it costs one pass and no copy, which matters at a few thousand requests a
/// second.
fn percentile(values: &[f32], q: f32) -> f32 {
    const BINS: usize = 256;
    if values.is_empty() {
        return 0.0;
    }
    let mut histogram = [0u32; BINS];
    for &v in values {
        histogram[((v.clamp(0.0, 1.0) * (BINS - 1) as f32) as usize).min(BINS - 1)] += 1;
    }
    let wanted = ((values.len() - 1) as f32 * q).round() as u32;
    let mut seen = 0;
    for (bin, &count) in histogram.iter().enumerate() {
        seen += count;
        if seen > wanted {
            return (bin as f32 + 0.5) / (BINS - 1) as f32;
        }
    }
    1.0
}

fn bilinear<const N: usize>(grid: &[[f32; N]; N], x: f32, y: f32) -> f32 {
    let clamp = |v: f32| v.clamp(0.0, (N - 1) as f32);
    let (x, y) = (clamp(x), clamp(y));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(N - 1), (y0 + 1).min(N - 1));
    let (tx, ty) = (x - x0 as f32, y - y0 as f32);
    let top = grid[y0][x0] * (1.0 - tx) + grid[y0][x1] * tx;
    let bottom = grid[y1][x0] * (1.0 - tx) + grid[y1][x1] * tx;
    top * (1.0 - ty) + bottom * ty
}

/// Otsu's threshold: the cut between two classes of values with the largest separation.
fn otsu(values: &[f32]) -> f32 {
    const BINS: usize = 64;
    let mut histogram = [0usize; BINS];
    for &v in values {
        histogram[((v * (BINS - 1) as f32 + 0.5) as usize).min(BINS - 1)] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = histogram
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut weight_low, mut sum_low, mut best, mut best_bin) = (0.0, 0.0, 0.0, 0);
    for (bin, &count) in histogram.iter().enumerate() {
        weight_low += count as f64;
        sum_low += bin as f64 * count as f64;
        let weight_high = total - weight_low;
        if weight_low == 0.0 || weight_high == 0.0 {
            continue;
        }
        let mean_low = sum_low / weight_low;
        let mean_high = (sum_all - sum_low) / weight_high;
        let between = weight_low * weight_high * (mean_low - mean_high).powi(2);
        if between > best {
            best = between;
            best_bin = bin;
        }
    }
    (best_bin as f32 + 0.5) / (BINS - 1) as f32
}

/// The mask grown by one pixel, so anti-aliased stroke edges survive the crop.
fn dilate_mask(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    (0..w * h)
        .map(|p| mask[p] || touching(p, w, h).any(|q| mask[q]))
        .collect()
}

/// MNIST's framing of a digit cropped to its ink (`w x h`): the longer side scaled to 20 px by
/// area averaging, the brightest ink at 1, centred by mass in 28x28.
pub(crate) fn frame(crop: &[f32], w: usize, h: usize) -> Vec<u8> {
    let scale = BOX_SIDE as f32 / w.max(h) as f32;
    let fit = |n: usize| ((n as f32 * scale).round() as usize).clamp(1, BOX_SIDE);
    let (bw, bh) = (fit(w), fit(h));
    let small = area_resize(crop, w, h, bw, bh);
    let peak = small.iter().copied().fold(0.0, f32::max).max(1e-6);
    let small: Vec<f32> = small.iter().map(|v| (v / peak).min(1.0)).collect();
    centre_by_mass(&small, bw)
}

/// `values` cut down to the box around its ink (its non-zero pixels).
fn trim(values: Vec<f32>, w: usize, h: usize) -> (Vec<f32>, usize, usize) {
    let inked = |p: &usize| values[*p] > 0.0;
    let xs = (0..w * h).filter(inked).map(|p| p % w);
    let (left, right) = xs.fold((w, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let ys = (0..w * h).filter(inked).map(|p| p / w);
    let (top, bottom) = ys.fold((h, 0), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if left > right {
        return (values, w, h);
    }
    let (tw, th) = (right - left + 1, bottom - top + 1);
    let trimmed = (0..tw * th)
        .map(|p| values[(p / tw + top) * w + p % tw + left])
        .collect();
    (trimmed, tw, th)
}

/// How many holes `mask` has: regions of background (4-connected) that do not reach its
/// border, each larger than a speck of paper texture.
fn holes(mask: &[bool], w: usize, h: usize) -> usize {
    let speck = (w * h / 500).max(4);
    let mut seen = vec![false; w * h];
    let mut count = 0;
    for start in 0..w * h {
        if mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let (mut area, mut reaches_border) = (0, false);
        while let Some(p) = stack.pop() {
            area += 1;
            let (x, y) = (p % w, p / w);
            reaches_border |= x == 0 || y == 0 || x + 1 == w || y + 1 == h;
            let neighbours = [
                (x > 0).then(|| p - 1),
                (x + 1 < w).then(|| p + 1),
                (y > 0).then(|| p - w),
                (y + 1 < h).then(|| p + w),
            ];
            for q in neighbours.into_iter().flatten() {
                if !mask[q] && !seen[q] {
                    seen[q] = true;
                    stack.push(q);
                }
            }
        }
        count += usize::from(!reaches_border && area > speck);
    }
    count
}

/// Mean stroke width: twice the area over the perimeter, exact for long bands.
fn stroke_width(mask: &[bool], w: usize, h: usize) -> f32 {
    let area = mask.iter().filter(|&&m| m).count();
    let boundary = (0..w * h)
        .filter(|&p| {
            mask[p] && {
                let (x, y) = (p % w, p / w);
                x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || !mask[p - 1]
                    || !mask[p + 1]
                    || !mask[p - w]
                    || !mask[p + w]
            }
        })
        .count();
    if boundary == 0 {
        return 0.0;
    }
    (2.0 * area as f32 / boundary as f32).max(1.0)
}

/// Each pixel becomes the largest value within `radius` (a square window), separably.
pub(crate) fn max_filter(values: &[f32], w: usize, h: usize, radius: usize) -> Vec<f32> {
    let pass = |src: &[f32], along_x: bool| -> Vec<f32> {
        (0..w * h)
            .map(|p| {
                let (x, y) = (p % w, p / w);
                let (pos, len) = if along_x { (x, w) } else { (y, h) };
                let (from, to) = (pos.saturating_sub(radius), (pos + radius).min(len - 1));
                (from..=to)
                    .map(|i| {
                        if along_x {
                            src[y * w + i]
                        } else {
                            src[i * w + x]
                        }
                    })
                    .fold(0.0, f32::max)
            })
            .collect()
    };
    pass(&pass(values, true), false)
}

/// Resizes by averaging: each target pixel is the mean of the source area it covers, so
/// strokes keep their weight at any scale.
fn area_resize(values: &[f32], w: usize, h: usize, tw: usize, th: usize) -> Vec<f32> {
    let (sx, sy) = (w as f32 / tw as f32, h as f32 / th as f32);
    let overlap = |a0: f32, a1: f32, b: usize| (a1.min(b as f32 + 1.0) - a0.max(b as f32)).max(0.0);
    let mut out = vec![0f32; tw * th];
    for ty in 0..th {
        let (y0, y1) = (ty as f32 * sy, (ty + 1) as f32 * sy);
        for tx in 0..tw {
            let (x0, x1) = (tx as f32 * sx, (tx + 1) as f32 * sx);
            let mut sum = 0.0;
            let mut weight = 0.0;
            for y in (y0.floor() as usize)..(y1.ceil() as usize).min(h) {
                let wy = overlap(y0, y1, y);
                for x in (x0.floor() as usize)..(x1.ceil() as usize).min(w) {
                    let wxy = wy * overlap(x0, x1, x);
                    sum += values[y * w + x] * wxy;
                    weight += wxy;
                }
            }
            out[ty * tw + tx] = if weight > 0.0 { sum / weight } else { 0.0 };
        }
    }
    out
}

/// Places a `w x h` image in 28x28 with its intensity-weighted centre of mass at the centre.
fn centre_by_mass(values: &[f32], w: usize) -> Vec<u8> {
    let total: f32 = values.iter().sum::<f32>().max(1e-6);
    let (mut cx, mut cy) = (0.0, 0.0);
    for (p, &v) in values.iter().enumerate() {
        cx += (p % w) as f32 * v;
        cy += (p / w) as f32 * v;
    }
    let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    let (dx, dy) = (
        (centre - cx / total).round() as isize,
        (centre - cy / total).round() as isize,
    );
    let mut out = vec![0u8; IMAGE_PIXELS];
    for (p, &v) in values.iter().enumerate() {
        let (x, y) = ((p % w) as isize + dx, (p / w) as isize + dy);
        if (0..IMAGE_SIDE as isize).contains(&x) && (0..IMAGE_SIDE as isize).contains(&y) {
            out[y as usize * IMAGE_SIDE + x as usize] = (v * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_clusters() {
        let values: Vec<f32> = (0..100).map(|i| if i < 70 { 0.1 } else { 0.9 }).collect();
        let t = otsu(&values);
        assert!(t > 0.1 && t < 0.9, "{t}");
    }

    #[test]
    fn area_resize_keeps_the_mean() {
        let values: Vec<f32> = (0..100).map(|i| (i % 7) as f32 / 6.0).collect();
        let small = area_resize(&values, 10, 10, 3, 3);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&small) - mean(&values)).abs() < 0.02);
    }

    #[test]
    fn the_centre_of_mass_lands_in_the_middle() {
        let mut values = vec![0f32; 4 * 4];
        values[0] = 1.0;
        let out = centre_by_mass(&values, 4);
        let lit: Vec<usize> = (0..IMAGE_PIXELS).filter(|&p| out[p] > 0).collect();
        assert_eq!(lit.len(), 1);
        assert_eq!((lit[0] % IMAGE_SIDE, lit[0] / IMAGE_SIDE), (14, 14));
    }
}
