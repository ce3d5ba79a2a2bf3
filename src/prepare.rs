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
/// MNIST's digits fit a 20x20 box inside the 28x28 image.
const BOX_SIDE: usize = 20;
/// MNIST's strokes are about this wide, in pixels of the 20-px box.
const STROKE_IN_BOX: f32 = 2.2;

/// Every way preparing an image can fail.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot decode the image: {0}")]
    Decode(String),
    #[error("the image is {width}x{height}, over the limit of {MAX_PIXELS} pixels")]
    TooLarge { width: u32, height: u32 },
    #[error("the image is empty")]
    Empty,
    #[error("no digit found: the image has no marks that stand out from its background")]
    NoInk,
}

/// A digit ready for a model: 28x28 bytes, white on black, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub pixels: Vec<u8>,
}

impl Prepared {
    /// The image as a 28x28 greyscale picture, e.g. to save what the model saw.
    pub fn to_image(&self) -> image::GrayImage {
        image::GrayImage::from_raw(IMAGE_SIDE as u32, IMAGE_SIDE as u32, self.pixels.clone())
            .expect("784 bytes make a 28x28 image")
    }
}

/// Decodes an image file's bytes (PNG, JPEG, BMP, GIF, WebP, TIFF), applying its EXIF
/// orientation, refusing images over [`MAX_PIXELS`] before allocating them.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, PrepareError> {
    let decode_error = |e: image::ImageError| PrepareError::Decode(e.to_string());
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PrepareError::Decode(e.to_string()))?;
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
    Ok(page.render(&kept))
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
    marks.sort_by_key(|m| m.left);
    // Marks that overlap horizontally belong to one digit (the two strokes of a 4 or a 5).
    let mut digits: Vec<Vec<&Mark>> = Vec::new();
    for mark in &marks {
        match digits.last_mut() {
            Some(group) if group.iter().any(|g| mark.overlaps_horizontally(g)) => group.push(mark),
            _ => digits.push(vec![mark]),
        }
    }
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
}

impl Page {
    fn read(image: &DynamicImage) -> Result<Self, PrepareError> {
        if image.width() == 0 || image.height() == 0 {
            return Err(PrepareError::Empty);
        }
        let (luminance, width, height) = working_luminance(image);
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

    /// Clears rows and columns inked across nearly the whole page: ruled or grid lines, and
    /// the edges of a sheet photographed on a darker table. A digit never spans 90% of a page
    /// edge to edge in a single row.
    fn remove_lines(&mut self) {
        let (w, h) = (self.width, self.height);
        let full_rows: Vec<usize> = (0..h)
            .filter(|&y| (0..w).filter(|&x| self.mask[y * w + x]).count() * 10 >= w * 9)
            .collect();
        let full_columns: Vec<usize> = (0..w)
            .filter(|&x| (0..h).filter(|&y| self.mask[y * w + x]).count() * 10 >= h * 9)
            .collect();
        for y in full_rows {
            (0..w).for_each(|x| self.mask[y * w + x] = false);
        }
        for x in full_columns {
            (0..h).for_each(|y| self.mask[y * w + x] = false);
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
                let (x, y) = ((p % w) as isize, (p / w) as isize);
                for (dx, dy) in NEIGHBOURS {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
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
        marks.retain(|m| {
            let on_border = m.left == 0 || m.top == 0 || m.right + 1 == w || m.bottom + 1 == h;
            let thin = m.width().min(m.height()) * 20 < w.max(h);
            let long = m.width().max(m.height()) * 2 > w.max(h);
            m.area > speck && !(on_border && thin && long)
        });
        marks
    }

    /// Crops to `marks`, thickens thin strokes, scales into the 20-px box and centres by mass.
    fn render(&self, marks: &[&Mark]) -> Prepared {
        let left = marks.iter().map(|m| m.left).min().unwrap_or(0);
        let right = marks.iter().map(|m| m.right).max().unwrap_or(0);
        let top = marks.iter().map(|m| m.top).min().unwrap_or(0);
        let bottom = marks.iter().map(|m| m.bottom).max().unwrap_or(0);
        let (cw, ch) = (right - left + 1, bottom - top + 1);
        let mut keep = vec![false; cw * ch];
        for p in marks.iter().flat_map(|m| &m.pixels) {
            let (x, y) = (p % self.width - left, p / self.width - top);
            keep[y * cw + x] = true;
        }
        let keep = dilate_mask(&keep, cw, ch);
        let mut crop: Vec<f32> = (0..ch)
            .flat_map(|y| (0..cw).map(move |x| (x, y)))
            .map(|(x, y)| {
                if keep[y * cw + x] {
                    self.ink[(y + top) * self.width + x + left]
                } else {
                    0.0
                }
            })
            .collect();
        let longer = cw.max(ch) as f32;
        let target = STROKE_IN_BOX * longer / BOX_SIDE as f32;
        let stroke = stroke_width(&keep_core(&crop), cw, ch);
        if stroke < target * 0.8 {
            let radius = ((target - stroke) / 2.0).round().max(1.0) as usize;
            crop = max_filter(&crop, cw, ch, radius);
        }
        let scale = BOX_SIDE as f32 / longer;
        let (bw, bh) = (
            ((cw as f32 * scale).round() as usize).clamp(1, BOX_SIDE),
            ((ch as f32 * scale).round() as usize).clamp(1, BOX_SIDE),
        );
        let small = area_resize(&crop, cw, ch, bw, bh);
        let peak = small.iter().copied().fold(0.0, f32::max).max(1e-6);
        let small: Vec<f32> = small.iter().map(|v| (v / peak).min(1.0)).collect();
        Prepared {
            pixels: centre_by_mass(&small, bw),
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

/// Luminance in [0, 1], averaged over `factor x factor` blocks so the longer side is at most
/// `WORK_SIDE`, in one pass over the pixels (a 2000x2000 photo is never copied at full size).
/// Transparency is flattened onto the background the ink is not: a drawing app's black strokes
/// on transparent pixels (often stored as transparent black) become black on white, and white
/// strokes become white on black.
fn working_luminance(image: &DynamicImage) -> (Vec<f32>, usize, usize) {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let factor = width.max(height).div_ceil(WORK_SIDE).max(1);
    let shrink = |channels: usize, luma: &dyn Fn(&[u8]) -> f32, raw: &[u8]| {
        let (sw, sh) = (width.div_ceil(factor), height.div_ceil(factor));
        let mut sums = vec![0f32; sw * sh];
        for (y, row) in raw.chunks_exact(width * channels).enumerate() {
            let target = &mut sums[(y / factor) * sw..(y / factor + 1) * sw];
            for (x, pixel) in row.chunks_exact(channels).enumerate() {
                target[x / factor] += luma(pixel);
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
    };
    let rgb_luma = |p: &[u8]| {
        (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) / 255.0
    };
    match image {
        DynamicImage::ImageLuma8(grey) => shrink(1, &|p| f32::from(p[0]) / 255.0, grey.as_raw()),
        DynamicImage::ImageRgb8(rgb) => shrink(3, &rgb_luma, rgb.as_raw()),
        _ if !image.color().has_alpha() => shrink(3, &rgb_luma, image.to_rgb8().as_raw()),
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
            shrink(4, &flattened, rgba.as_raw())
        }
    }
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
        .map(|p| {
            let (x, y) = ((p % w) as isize, (p / w) as isize);
            mask[p]
                || NEIGHBOURS.iter().any(|(dx, dy)| {
                    let (nx, ny) = (x + dx, y + dy);
                    nx >= 0
                        && ny >= 0
                        && nx < w as isize
                        && ny < h as isize
                        && mask[ny as usize * w + nx as usize]
                })
        })
        .collect()
}

fn keep_core(crop: &[f32]) -> Vec<bool> {
    let t = otsu(crop).max(0.15);
    crop.iter().map(|&v| v > t).collect()
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
fn max_filter(values: &[f32], w: usize, h: usize, radius: usize) -> Vec<f32> {
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
