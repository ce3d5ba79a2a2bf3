//! Data augmentation: every training image distorted a little differently every epoch, so a
//! model sees many plausible versions of each digit. Only ever applied to training batches.
//!
//! Two distortions, both resampling the image through a map from output to source pixel with
//! bilinear interpolation (so pixels stay in [0, 1] and the label stays true):
//! - a random affine map: rotation, scaling, shear and translation about the image centre;
//! - an elastic distortion (Simard, Steinkraus and Platt 2003): a random displacement field,
//!   smoothed by a Gaussian of width `sigma` and scaled by `alpha`.
//!
//! For reading people's digits ([`AugmentConfig::handwriting`]) a few more, each aimed at a
//! way their images differ from MNIST's once `prepare` has framed them: strokes from hairline
//! to marker, blur, crops that cut into the digit, the crossed 7 and the 1 with a flag and a
//! base that continental Europe writes and MNIST's American writers rarely did, the closed 4
//! and the 9 with a hooked tail that they rarely wrote either, and finally
//! the same framing as `prepare` (longer side 20 px, centred by mass) so that the model
//! trains on digits framed exactly as it will be shown them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, IMAGE_PIXELS, IMAGE_SIDE};

/// How strongly to distort. Each field is the largest value drawn, uniformly in `±value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    pub rotation_degrees: f32,
    /// Relative: 0.1 draws scale factors in [0.9, 1.1].
    pub scale: f32,
    /// In pixels, each axis.
    pub translation: f32,
    pub shear_degrees: f32,
    /// Mirror left-right half of the time: right for clothes, wrong for digits.
    #[serde(default)]
    pub horizontal_flip: bool,
    pub elastic: Option<Elastic>,
    /// Stroke width change in pixels, drawn uniformly in `[min, max]`: negative thins,
    /// positive thickens.
    #[serde(default)]
    pub stroke: [f32; 2],
    /// Largest Gaussian blur (its sigma in pixels), drawn uniformly from 0.
    #[serde(default)]
    pub blur: f32,
    /// How often a side of the digit is cut off (a tight crop), up to a fifth of its extent.
    #[serde(default)]
    pub crop_probability: f32,
    /// How often a 7 gets a bar across its stem, and a 1 a flag and a base.
    #[serde(default)]
    pub continental_probability: f32,
    /// How often a 4 gets a closed top, and a 9 a tail hooked to the left.
    #[serde(default)]
    pub closed_four_hooked_nine_probability: f32,
    /// Frame each distorted digit as `prepare` frames people's: longer side 20 px, centred by
    /// its centre of mass, brightest ink at 1.
    #[serde(default)]
    pub reframe: bool,
}

/// Simard et al.'s elastic distortion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Elastic {
    /// Scale of the displacement, in pixels.
    pub alpha: f32,
    /// Smoothness of the displacement field, in pixels.
    pub sigma: f32,
}

impl AugmentConfig {
    /// For handwriting: small rotations, scalings, shears and shifts, and an elastic
    /// distortion milder than Simard's alpha 34 (which was tuned for a bigger network).
    pub fn digits() -> Self {
        Self {
            rotation_degrees: 12.0,
            scale: 0.1,
            translation: 2.0,
            shear_degrees: 10.0,
            horizontal_flip: false,
            elastic: Some(Elastic {
                alpha: 20.0,
                sigma: 4.0,
            }),
            ..Self::none()
        }
    }

    /// For people's own digits as `prepare` delivers them: [`AugmentConfig::digits`], wider
    /// slants, every pen from hairline to marker, blur, tight crops, continental 1s and 7s,
    /// closed 4s and hooked 9s, and `prepare`'s framing.
    pub fn handwriting() -> Self {
        Self {
            rotation_degrees: 15.0,
            shear_degrees: 20.0,
            stroke: [-0.5, 1.2],
            blur: 0.6,
            crop_probability: 0.15,
            continental_probability: 0.5,
            closed_four_hooked_nine_probability: 0.3,
            reframe: true,
            ..Self::digits()
        }
    }

    /// No distortion at all; the base the others start from.
    pub fn none() -> Self {
        Self {
            rotation_degrees: 0.0,
            scale: 0.0,
            translation: 0.0,
            shear_degrees: 0.0,
            horizontal_flip: false,
            elastic: None,
            stroke: [0.0, 0.0],
            blur: 0.0,
            crop_probability: 0.0,
            continental_probability: 0.0,
            closed_four_hooked_nine_probability: 0.0,
            reframe: false,
        }
    }

    /// For clothes: mirror images and small shifts; a rotated shoe is a rarer sight.
    pub fn clothes() -> Self {
        Self {
            rotation_degrees: 0.0,
            scale: 0.05,
            translation: 2.0,
            shear_degrees: 0.0,
            horizontal_flip: true,
            ..Self::none()
        }
    }

    /// Why these settings cannot be used, if they cannot. The presets always can; a run's
    /// config.json is a file people edit, and a sigma of 0 there would fill every training
    /// image with NaN (which training would then blame on the learning rate).
    pub fn check(&self) -> Result<(), AugmentError> {
        let side = IMAGE_SIDE as f32;
        let mut bounds = vec![
            ("rotation_degrees", self.rotation_degrees, 0.0, 180.0),
            ("scale", self.scale, 0.0, 0.9),
            ("translation", self.translation, 0.0, side),
            // tan() of the shear grows without bound towards 90 degrees.
            ("shear_degrees", self.shear_degrees, 0.0, 60.0),
        ];
        if let Some(elastic) = self.elastic {
            bounds.push(("elastic.alpha", elastic.alpha, 0.0, 100.0));
            bounds.push(("elastic.sigma", elastic.sigma, 0.5, side));
        }
        bounds.push(("stroke[0]", self.stroke[0], -2.0, self.stroke[1]));
        bounds.push(("stroke[1]", self.stroke[1], self.stroke[0].min(0.0), 4.0));
        bounds.push(("blur", self.blur, 0.0, 3.0));
        bounds.push(("crop_probability", self.crop_probability, 0.0, 1.0));
        bounds.push((
            "continental_probability",
            self.continental_probability,
            0.0,
            1.0,
        ));
        bounds.push((
            "closed_four_hooked_nine_probability",
            self.closed_four_hooked_nine_probability,
            0.0,
            1.0,
        ));
        match bounds
            .into_iter()
            .find(|(_, value, min, max)| !(*min..=*max).contains(value))
        {
            Some((setting, value, min, max)) => Err(AugmentError::OutOfRange {
                setting,
                value,
                min,
                max,
            }),
            None => Ok(()),
        }
    }
}

/// Augmentation settings that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    #[error("augment.{setting} is {value}, but it must be between {min} and {max}")]
    OutOfRange {
        setting: &'static str,
        value: f32,
        min: f32,
        max: f32,
    },
}

/// Distorts every image of `batch` in place; the same `seed` gives the same distortions.
pub fn augment(batch: &mut Batch, config: &AugmentConfig, seed: u64) {
    let labels = &batch.labels;
    batch
        .pixels
        .par_chunks_exact_mut(IMAGE_PIXELS)
        .enumerate()
        .for_each(|(index, image)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(index as u64);
            // Each optional distortion draws only when it is on, so turning it on leaves the
            // others' draws, and every earlier recipe's images, unchanged.
            if config.continental_probability > 0.0
                && rng.random::<f32>() < config.continental_probability
            {
                write_continental(image, labels[index], &mut rng);
            }
            if config.closed_four_hooked_nine_probability > 0.0
                && rng.random::<f32>() < config.closed_four_hooked_nine_probability
            {
                close_four_or_hook_nine(image, labels[index], &mut rng);
            }
            distort(image, config, &mut rng);
            restyle(image, config, &mut rng);
        });
}

/// One image, through one random map.
fn distort(image: &mut [f32], config: &AugmentConfig, rng: &mut ChaCha8Rng) {
    let mut draw = |limit: f32| {
        if limit > 0.0 {
            rng.random_range(-limit..=limit)
        } else {
            0.0
        }
    };
    let angle = draw(config.rotation_degrees).to_radians();
    let shear = draw(config.shear_degrees).to_radians().tan();
    let scale = 1.0 + draw(config.scale);
    let (shift_x, shift_y) = (draw(config.translation), draw(config.translation));
    let flip = config.horizontal_flip && draw(1.0) < 0.0;

    // Forward map = rotate . shear . scale (. flip); sampling needs its inverse.
    let (sin, cos) = angle.sin_cos();
    let sign = if flip { -1.0 } else { 1.0 };
    let forward = [
        [scale * cos * sign, scale * (cos * shear - sin)],
        [scale * sin * sign, scale * (sin * shear + cos)],
    ];
    let det = forward[0][0] * forward[1][1] - forward[0][1] * forward[1][0];
    let inverse = [
        [forward[1][1] / det, -forward[0][1] / det],
        [-forward[1][0] / det, forward[0][0] / det],
    ];
    let displacement = config.elastic.map(|e| {
        (
            displacement_field(rng, e.alpha, e.sigma),
            displacement_field(rng, e.alpha, e.sigma),
        )
    });

    let source: Vec<f32> = image.to_vec();
    let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    for y in 0..IMAGE_SIDE {
        for x in 0..IMAGE_SIDE {
            let i = y * IMAGE_SIDE + x;
            let (mut ox, mut oy) = (x as f32, y as f32);
            if let Some((dx, dy)) = &displacement {
                ox += dx[i];
                oy += dy[i];
            }
            let (px, py) = (ox - centre - shift_x, oy - centre - shift_y);
            let sx = inverse[0][0] * px + inverse[0][1] * py + centre;
            let sy = inverse[1][0] * px + inverse[1][1] * py + centre;
            image[i] = bilinear(&source, sx, sy);
        }
    }
}

/// `image` scaled by `factor` about its centre, resampled as [`augment`]'s distortions are
/// (a factor of 1 returns it unchanged).
pub fn rescale(image: &[f32], factor: f32) -> Vec<f32> {
    let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
    (0..IMAGE_PIXELS)
        .map(|i| {
            let (x, y) = ((i % IMAGE_SIDE) as f32, (i / IMAGE_SIDE) as f32);
            let source = |v: f32| (v - centre) / factor + centre;
            bilinear(image, source(x), source(y))
        })
        .collect()
}

/// The image at a fractional position; outside it, background (0).
fn bilinear(image: &[f32], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let pixel = |xi: f32, yi: f32| {
        if xi < 0.0 || yi < 0.0 || xi >= IMAGE_SIDE as f32 || yi >= IMAGE_SIDE as f32 {
            0.0
        } else {
            image[yi as usize * IMAGE_SIDE + xi as usize]
        }
    };
    let top = pixel(x0, y0) * (1.0 - fx) + pixel(x0 + 1.0, y0) * fx;
    let bottom = pixel(x0, y0 + 1.0) * (1.0 - fx) + pixel(x0 + 1.0, y0 + 1.0) * fx;
    (top * (1.0 - fy) + bottom * fy).clamp(0.0, 1.0)
}

/// Uniform noise in [-1, 1] per pixel, blurred by a Gaussian of width `sigma`, times `alpha`.
fn displacement_field(rng: &mut ChaCha8Rng, alpha: f32, sigma: f32) -> Vec<f32> {
    let noise: Vec<f32> = (0..IMAGE_PIXELS)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect();
    let smooth = gaussian_blur(&noise, sigma);
    smooth.into_iter().map(|v| v * alpha).collect()
}

/// A 28x28 image blurred by a Gaussian of width `sigma`, separably; near the border the kernel
/// is renormalised over the pixels inside.
fn gaussian_blur(image: &[f32], sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let blur = |input: &[f32], horizontal: bool| -> Vec<f32> {
        let side = IMAGE_SIDE as isize;
        let mut output = vec![0.0; IMAGE_PIXELS];
        for y in 0..side {
            for x in 0..side {
                let mut sum = 0.0;
                let mut weight = 0.0;
                for (k, d) in kernel.iter().zip(-radius..=radius) {
                    let (sx, sy) = if horizontal { (x + d, y) } else { (x, y + d) };
                    if (0..side).contains(&sx) && (0..side).contains(&sy) {
                        sum += k * input[(sy * side + sx) as usize];
                        weight += k;
                    }
                }
                output[(y * side + x) as usize] = sum / weight;
            }
        }
        output
    };
    blur(&blur(image, true), false)
}

/// The people-aimed distortions after the geometric ones: stroke width, a cut side, blur,
/// and `prepare`'s framing.
fn restyle(image: &mut [f32], config: &AugmentConfig, rng: &mut ChaCha8Rng) {
    let [thinnest, boldest] = config.stroke;
    if boldest > thinnest {
        change_stroke_width(image, rng.random_range(thinnest..=boldest));
    }
    if config.crop_probability > 0.0 && rng.random::<f32>() < config.crop_probability {
        cut_one_side(image, rng);
    }
    if config.blur > 0.0 {
        let sigma = rng.random_range(0.0..=config.blur);
        if sigma > 0.25 {
            image.copy_from_slice(&gaussian_blur(image, sigma));
        }
    }
    if config.reframe {
        reframe(image);
    }
}

/// Grows (positive) or shrinks (negative) every stroke by `pixels` on each side: whole
/// pixels by a 3x3 maximum (or minimum) filter, the fraction by blending with one more step.
fn change_stroke_width(image: &mut [f32], pixels: f32) {
    let side = IMAGE_SIDE;
    let step = |values: &[f32], grow: bool| -> Vec<f32> {
        if grow {
            crate::prepare::max_filter(values, side, side, 1)
        } else {
            let inverted: Vec<f32> = values.iter().map(|v| 1.0 - v).collect();
            let grown = crate::prepare::max_filter(&inverted, side, side, 1);
            grown.iter().map(|v| 1.0 - v).collect()
        }
    };
    let grow = pixels > 0.0;
    let amount = pixels.abs();
    for _ in 0..amount.floor() as usize {
        let next = step(image, grow);
        image.copy_from_slice(&next);
    }
    let fraction = amount.fract();
    if fraction > 0.0 {
        let next = step(image, grow);
        for (pixel, further) in image.iter_mut().zip(next) {
            *pixel += fraction * (further - *pixel);
        }
    }
}

/// The box around the ink (pixels above `level`): (left, top, right, bottom), inclusive.
fn ink_box(image: &[f32], level: f32) -> Option<(usize, usize, usize, usize)> {
    let inked: Vec<(usize, usize)> = (0..IMAGE_PIXELS)
        .filter(|&p| image[p] > level)
        .map(|p| (p % IMAGE_SIDE, p / IMAGE_SIDE))
        .collect();
    let left = inked.iter().map(|p| p.0).min()?;
    let right = inked.iter().map(|p| p.0).max()?;
    let top = inked.iter().map(|p| p.1).min()?;
    let bottom = inked.iter().map(|p| p.1).max()?;
    Some((left, top, right, bottom))
}

/// Cuts 5-20% of the digit's extent off one random side, as a tight crop of a photo does.
fn cut_one_side(image: &mut [f32], rng: &mut ChaCha8Rng) {
    let Some((left, top, right, bottom)) = ink_box(image, 0.3) else {
        return;
    };
    let fraction = rng.random_range(0.05f32..=0.2);
    let cut = |from: usize, to: usize| ((to - from + 1) as f32 * fraction).round() as usize;
    let side = rng.random_range(0..4);
    for (p, value) in image.iter_mut().enumerate().take(IMAGE_PIXELS) {
        let (x, y) = (p % IMAGE_SIDE, p / IMAGE_SIDE);
        let gone = match side {
            0 => x < left + cut(left, right),
            1 => x + cut(left, right) > right,
            2 => y < top + cut(top, bottom),
            _ => y + cut(top, bottom) > bottom,
        };
        if gone {
            *value = 0.0;
        }
    }
}

/// Frames the digit as `prepare` frames a person's: cropped to its ink, the longer side
/// scaled to 20 px, brightest ink 1, centred by mass in 28x28, in whole grey levels.
fn reframe(image: &mut [f32]) {
    let Some((left, top, right, bottom)) = ink_box(image, 0.1) else {
        return;
    };
    let (w, h) = (right - left + 1, bottom - top + 1);
    let crop: Vec<f32> = (top..=bottom)
        .flat_map(|y| (left..=right).map(move |x| (x, y)))
        .map(|(x, y)| image[y * IMAGE_SIDE + x])
        .collect();
    let framed = crate::prepare::frame(&crop, w, h);
    for (pixel, value) in image.iter_mut().zip(framed) {
        *pixel = f32::from(value) / 255.0;
    }
}

/// The crossed 7 and the 1 with a flag and a base, drawn onto an MNIST digit of that label.
fn write_continental(image: &mut [f32], label: i64, rng: &mut ChaCha8Rng) {
    let Some((left, top, right, bottom)) = ink_box(image, 0.3) else {
        return;
    };
    let height = (bottom - top + 1) as f32;
    let width = (right - left + 1) as f32;
    let stroke = rng.random_range(1.6f32..=2.6);
    // Where the ink of row `y` is, on average.
    let ink_centre = |image: &[f32], y: usize| {
        let xs: Vec<usize> = (0..IMAGE_SIDE)
            .filter(|&x| image[y * IMAGE_SIDE + x] > 0.3)
            .collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<usize>() as f32 / xs.len() as f32)
    };
    match label {
        7 => {
            let y = top + ((bottom - top) as f32 * rng.random_range(0.45f32..=0.6)) as usize;
            let Some(x) = ink_centre(image, y) else {
                return;
            };
            let half = (width * rng.random_range(0.2f32..=0.3)).max(3.0);
            let tilt = rng.random_range(-1.0f32..=1.0);
            let y = y as f32;
            draw_segment(image, (x - half, y + tilt), (x + half, y - tilt), stroke);
        }
        1 => {
            let (Some(x_top), Some(x_bottom)) = (ink_centre(image, top), ink_centre(image, bottom))
            else {
                return;
            };
            let (top, bottom) = (top as f32, bottom as f32);
            // The flag runs down and to the left, from a short serif to nearly half the
            // height, at 20 to 50 degrees below the horizontal.
            let flag = height * rng.random_range(0.2f32..=0.5);
            let (sin, cos) = rng.random_range(20f32..=50.0).to_radians().sin_cos();
            draw_segment(
                image,
                (x_top, top),
                (x_top - flag * cos, top + flag * sin),
                stroke,
            );
            if rng.random::<bool>() {
                let half = height * rng.random_range(0.15f32..=0.3);
                draw_segment(
                    image,
                    (x_bottom - half, bottom),
                    (x_bottom + half, bottom),
                    stroke,
                );
            }
        }
        _ => {}
    }
}

/// The closed-top 4 (as printed) and the 9 whose tail curls to the left, drawn onto an MNIST
/// digit of that label: people write both often, MNIST's writers rarely, and a model that has
/// not seen them reads the 4 as a 9 and the 9 as a 3.
fn close_four_or_hook_nine(image: &mut [f32], label: i64, rng: &mut ChaCha8Rng) {
    let Some((left, top, right, bottom)) = ink_box(image, 0.3) else {
        return;
    };
    let (width, height) = ((right - left + 1) as f32, (bottom - top + 1) as f32);
    let stroke = rng.random_range(1.4f32..=2.4);
    // The highest inked row of column `x`.
    let column_top = |x: usize| (top..=bottom).find(|&y| image[y * IMAGE_SIDE + x] > 0.3);
    match label {
        4 => {
            // The tops of the arm (left) and of the stem (right), joined by a bar.
            let highest = |columns: std::ops::RangeInclusive<usize>| {
                columns.filter_map(|x| column_top(x).map(|y| (y, x))).min()
            };
            let split = left + (right - left) / 2;
            let (Some((arm_y, arm_x)), Some((stem_y, stem_x))) =
                (highest(left..=split), highest(split + 1..=right))
            else {
                return;
            };
            let point = |x: usize, y: usize| (x as f32, y as f32);
            draw_segment(image, point(arm_x, arm_y), point(stem_x, stem_y), stroke);
        }
        9 => {
            // From the foot of the stem, a curve down and round to the left, ending level
            // with the foot or a little above it.
            let bottom_row = &image[bottom * IMAGE_SIDE..(bottom + 1) * IMAGE_SIDE];
            let inked: Vec<usize> = (0..IMAGE_SIDE).filter(|&x| bottom_row[x] > 0.3).collect();
            if inked.is_empty() {
                return;
            }
            let foot = (
                inked.iter().sum::<usize>() as f32 / inked.len() as f32,
                bottom as f32,
            );
            let reach = width * rng.random_range(0.4f32..=0.9);
            let drop = rng.random_range(1.0f32..=3.0);
            let end = (
                (foot.0 - reach).max(0.0),
                foot.1 - height * rng.random_range(0.0f32..=0.15),
            );
            let control = (foot.0 - reach * 0.3, foot.1 + drop);
            let bezier = |t: f32| {
                let u = 1.0 - t;
                let along = |a: f32, b: f32, c: f32| u * u * a + 2.0 * u * t * b + t * t * c;
                let limit = (IMAGE_SIDE - 1) as f32;
                (
                    along(foot.0, control.0, end.0).clamp(0.0, limit),
                    along(foot.1, control.1, end.1).clamp(0.0, limit),
                )
            };
            const PIECES: usize = 6;
            for piece in 0..PIECES {
                let (a, b) = (
                    piece as f32 / PIECES as f32,
                    (piece + 1) as f32 / PIECES as f32,
                );
                draw_segment(image, bezier(a), bezier(b), stroke);
            }
        }
        _ => {}
    }
}

/// `count` 28x28 images of marks that are no digit, framed as `prepare` frames people's ink:
/// crosses and plus signs, stars, grids, scribbled tangles, zigzags and scattered dots. A model
/// trained only on digits reads every mark as some digit, often with full confidence; these
/// teach it to spread its probabilities instead (see `TrainConfig::not_digits`).
pub fn not_digits(count: usize, seed: u64) -> Vec<f32> {
    let mut images = vec![0.0; count * IMAGE_PIXELS];
    images
        .par_chunks_exact_mut(IMAGE_PIXELS)
        .enumerate()
        .for_each(|(index, image)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(index as u64);
            draw_not_digit(image, &mut rng);
            reframe(image);
        });
    images
}

/// One random mark that no digit looks like, on an empty 28x28 image.
fn draw_not_digit(image: &mut [f32], rng: &mut ChaCha8Rng) {
    let width = rng.random_range(1.5f32..=3.5);
    let centre = (
        13.5 + rng.random_range(-2.0f32..=2.0),
        13.5 + rng.random_range(-2.0f32..=2.0),
    );
    let spoke = |image: &mut [f32], angle: f32, half: f32, at: (f32, f32)| {
        let (dx, dy) = (angle.cos() * half, angle.sin() * half);
        draw_segment(image, (at.0 - dx, at.1 - dy), (at.0 + dx, at.1 + dy), width);
    };
    let turn = std::f32::consts::PI;
    match rng.random_range(0..6) {
        // A cross or a plus: two strokes through one point, far from parallel.
        0 => {
            let first = rng.random_range(0.0..turn);
            let second = first + rng.random_range(0.35 * turn..=0.65 * turn);
            for angle in [first, second] {
                spoke(image, angle, rng.random_range(7.0f32..=11.0), centre);
            }
        }
        // A star: three or four strokes through one point.
        1 => {
            let spokes = rng.random_range(3..=4);
            let start = rng.random_range(0.0..turn);
            for k in 0..spokes {
                let angle = start + k as f32 * turn / spokes as f32 + rng.random_range(-0.1..=0.1);
                spoke(image, angle, rng.random_range(7.0f32..=10.0), centre);
            }
        }
        // A grid: two strokes crossed by two others, as in # or a tic-tac-toe board.
        2 => {
            let first = rng.random_range(0.0..turn);
            let second = first + rng.random_range(0.4 * turn..=0.6 * turn);
            for angle in [first, second] {
                let gap = rng.random_range(3.0f32..=5.0);
                for side in [-1.0, 1.0] {
                    let offset = (side * gap * -angle.sin(), side * gap * angle.cos());
                    let at = (centre.0 + offset.0, centre.1 + offset.1);
                    spoke(image, angle, rng.random_range(8.0f32..=11.0), at);
                }
            }
        }
        // A scribbled tangle: a walk of many short strokes with sharp turns.
        3 => {
            let mut at = centre;
            let mut heading = rng.random_range(0.0..2.0 * turn);
            for _ in 0..rng.random_range(10..=16) {
                heading += rng.random_range(0.5 * turn..=1.5 * turn);
                let step = rng.random_range(4.0f32..=9.0);
                let next = (
                    (at.0 + heading.cos() * step).clamp(4.0, 23.0),
                    (at.1 + heading.sin() * step).clamp(4.0, 23.0),
                );
                draw_segment(image, at, next, width);
                at = next;
            }
        }
        // A zigzag of four to six teeth.
        4 => {
            let teeth = rng.random_range(4..=6);
            let angle = rng.random_range(0.0..turn);
            let (along, across) = ((angle.cos(), angle.sin()), (-angle.sin(), angle.cos()));
            let (length, height) = (
                rng.random_range(16.0f32..=22.0),
                rng.random_range(4.0f32..=8.0),
            );
            let point = |k: usize| {
                let t = k as f32 / teeth as f32 - 0.5;
                let h = if k.is_multiple_of(2) {
                    -height / 2.0
                } else {
                    height / 2.0
                };
                (
                    centre.0 + along.0 * t * length + across.0 * h,
                    centre.1 + along.1 * t * length + across.1 * h,
                )
            };
            for k in 0..teeth {
                draw_segment(image, point(k), point(k + 1), width);
            }
        }
        // Scattered dots.
        _ => {
            for _ in 0..rng.random_range(3..=7) {
                let at = (
                    rng.random_range(5.0f32..=22.0),
                    rng.random_range(5.0f32..=22.0),
                );
                draw_segment(image, at, at, width + rng.random_range(0.5f32..=2.0));
            }
        }
    }
}

/// Draws an anti-aliased line `width` pixels wide, keeping whatever ink is brighter.
fn draw_segment(image: &mut [f32], from: (f32, f32), to: (f32, f32), width: f32) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let length_squared = (dx * dx + dy * dy).max(1e-6);
    for (p, value) in image.iter_mut().enumerate().take(IMAGE_PIXELS) {
        let (x, y) = ((p % IMAGE_SIDE) as f32, (p / IMAGE_SIDE) as f32);
        let t = (((x - from.0) * dx + (y - from.1) * dy) / length_squared).clamp(0.0, 1.0);
        let (nx, ny) = (from.0 + t * dx - x, from.1 + t * dy - y);
        let distance = (nx * nx + ny * ny).sqrt();
        let ink = (width / 2.0 + 0.5 - distance).clamp(0.0, 1.0);
        *value = value.max(ink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_would_break_images_are_refused() {
        assert_eq!(AugmentConfig::digits().check(), Ok(()));
        assert_eq!(AugmentConfig::clothes().check(), Ok(()));
        let no_smoothing = AugmentConfig {
            elastic: Some(Elastic {
                alpha: 20.0,
                sigma: 0.0,
            }),
            ..AugmentConfig::digits()
        };
        let err = no_smoothing.check().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("augment.elastic.sigma is 0, but it must be between 0.5"),
            "{err}"
        );
        let not_a_number = AugmentConfig {
            rotation_degrees: f32::NAN,
            ..AugmentConfig::digits()
        };
        assert!(matches!(
            not_a_number.check(),
            Err(AugmentError::OutOfRange {
                setting: "rotation_degrees",
                ..
            })
        ));
        let flat = AugmentConfig {
            shear_degrees: 89.0,
            ..AugmentConfig::digits()
        };
        assert!(flat.check().is_err());
    }

    fn stroke_batch() -> Batch {
        let mut pixels = vec![0.0; 4 * IMAGE_PIXELS];
        for image in pixels.chunks_exact_mut(IMAGE_PIXELS) {
            for y in 6..22 {
                image[y * IMAGE_SIDE + 14] = 1.0;
                image[y * IMAGE_SIDE + 13] = 0.5;
            }
        }
        Batch {
            pixels,
            labels: vec![1, 7, 1, 4],
        }
    }

    #[test]
    fn keeps_pixels_in_range_and_labels_unchanged() {
        for config in [AugmentConfig::digits(), AugmentConfig::clothes()] {
            let mut batch = stroke_batch();
            augment(&mut batch, &config, 3);
            assert_eq!(batch.labels, vec![1, 7, 1, 4]);
            assert!(batch.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
            let ink: f32 = batch.pixels[..IMAGE_PIXELS].iter().sum();
            assert!(ink > 8.0, "the stroke survives: {ink}");
        }
    }

    #[test]
    fn distorts_differently_per_image_and_seed_but_reproducibly() {
        let config = AugmentConfig::digits();
        let mut a = stroke_batch();
        augment(&mut a, &config, 1);
        let mut b = stroke_batch();
        augment(&mut b, &config, 1);
        let mut c = stroke_batch();
        augment(&mut c, &config, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            a.pixels[..IMAGE_PIXELS],
            a.pixels[IMAGE_PIXELS..2 * IMAGE_PIXELS]
        );
        assert_ne!(
            a.pixels[..IMAGE_PIXELS],
            stroke_batch().pixels[..IMAGE_PIXELS]
        );
    }

    fn ink(image: &[f32]) -> f32 {
        image.iter().sum()
    }

    #[test]
    fn strokes_grow_and_shrink_by_the_amount_asked() {
        let line = stroke_batch().pixels[..IMAGE_PIXELS].to_vec();
        let mut bold = line.clone();
        change_stroke_width(&mut bold, 1.0);
        let mut bolder = line.clone();
        change_stroke_width(&mut bolder, 1.5);
        let mut thin = line.clone();
        change_stroke_width(&mut thin, -0.5);
        assert!(
            ink(&bold) > 2.0 * ink(&line),
            "{} vs {}",
            ink(&bold),
            ink(&line)
        );
        assert!(ink(&bolder) > ink(&bold));
        assert!(ink(&thin) < ink(&line) && ink(&thin) > 0.0);
    }

    #[test]
    fn a_continental_seven_is_crossed_and_a_one_gets_a_flag() {
        let line = stroke_batch().pixels[..IMAGE_PIXELS].to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seven = line.clone();
        write_continental(&mut seven, 7, &mut rng);
        let widest_row = (6..22)
            .map(|y| {
                (0..IMAGE_SIDE)
                    .filter(|&x| seven[y * IMAGE_SIDE + x] > 0.5)
                    .count()
            })
            .max()
            .unwrap();
        assert!(widest_row >= 6, "a bar crosses the stem: {widest_row} px");
        let mut one = line.clone();
        write_continental(&mut one, 1, &mut rng);
        let left_of_top: f32 = (6..12)
            .flat_map(|y| (0..12).map(move |x| y * IMAGE_SIDE + x))
            .map(|p| one[p])
            .sum();
        assert!(
            left_of_top > 2.0,
            "a flag leaves the top to the left: {left_of_top}"
        );
        let mut four = line.clone();
        write_continental(&mut four, 4, &mut rng);
        assert_eq!(four, line, "other digits are left as they are");
    }

    #[test]
    fn a_four_gets_a_closed_top_and_a_nine_a_hooked_tail() {
        let sum = |image: &[f32], xs: std::ops::Range<usize>, ys: std::ops::Range<usize>| {
            ys.flat_map(|y| xs.clone().map(move |x| image[y * IMAGE_SIDE + x]))
                .sum::<f32>()
        };
        // An open 4: an arm down to a bar, and a stem to its right.
        let mut open = vec![0.0; IMAGE_PIXELS];
        draw_segment(&mut open, (10.0, 6.0), (8.0, 16.0), 2.0);
        draw_segment(&mut open, (8.0, 16.0), (21.0, 16.0), 2.0);
        draw_segment(&mut open, (17.0, 6.0), (17.0, 23.0), 2.0);
        // A 9: a loop and a straight stem down from its right side, its foot at (17, 23).
        let mut straight = vec![0.0; IMAGE_PIXELS];
        draw_segment(&mut straight, (11.0, 5.0), (17.0, 5.0), 2.0);
        draw_segment(&mut straight, (11.0, 5.0), (11.0, 12.0), 2.0);
        draw_segment(&mut straight, (11.0, 12.0), (17.0, 12.0), 2.0);
        draw_segment(&mut straight, (17.0, 5.0), (17.0, 23.0), 2.0);
        let (gap, left_of_foot) = ((12..16, 5..8), (4..16, 21..28));
        assert!(sum(&open, gap.0.clone(), gap.1.clone()) < 0.5);
        assert!(sum(&straight, left_of_foot.0.clone(), left_of_foot.1.clone()) < 0.5);
        for seed in 0..16 {
            let mut four = open.clone();
            close_four_or_hook_nine(&mut four, 4, &mut ChaCha8Rng::seed_from_u64(seed));
            let bar = sum(&four, gap.0.clone(), gap.1.clone());
            assert!(bar > 4.0, "seed {seed}: a bar closes the top ({bar})");
            let mut nine = straight.clone();
            close_four_or_hook_nine(&mut nine, 9, &mut ChaCha8Rng::seed_from_u64(seed));
            let tail = sum(&nine, left_of_foot.0.clone(), left_of_foot.1.clone());
            assert!(
                tail > 3.0,
                "seed {seed}: the tail curls to the left ({tail})"
            );
            let mut seven = straight.clone();
            close_four_or_hook_nine(&mut seven, 7, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(seven, straight, "other digits are left as they are");
        }
    }

    #[test]
    fn rescaling_keeps_the_centre_and_shrinks_or_grows_the_ink() {
        let image = stroke_batch().pixels[..IMAGE_PIXELS].to_vec();
        assert_eq!(rescale(&image, 1.0), image);
        // Rows from the ink's top to its bottom, and their sum (27 when centred on row 13.5).
        let rows = |image: &[f32]| {
            let (_, top, _, bottom) = ink_box(image, 0.3).unwrap();
            (bottom - top + 1, top + bottom)
        };
        // The stroke runs over rows 6 to 21: 16 rows about the centre.
        assert_eq!(rows(&image), (16, 27));
        let (smaller, centre) = rows(&rescale(&image, 0.85));
        assert!((13..=15).contains(&smaller) && (26..=28).contains(&centre));
        let (larger, centre) = rows(&rescale(&image, 1.15));
        assert!((17..=20).contains(&larger) && (26..=28).contains(&centre));
    }

    #[test]
    fn handwriting_frames_every_digit_as_prepare_does() {
        let test = crate::data::Dataset::lite(crate::data::Split::Test);
        let mut batch = test.batches(64, None).next().unwrap();
        augment(&mut batch, &AugmentConfig::handwriting(), 7);
        for image in batch.pixels.chunks_exact(IMAGE_PIXELS) {
            assert!(image.iter().all(|p| (0.0..=1.0).contains(p)));
            let (left, top, right, bottom) = ink_box(image, 0.1).unwrap();
            let longer = (right - left).max(bottom - top) + 1;
            assert!((19..=21).contains(&longer), "longer side {longer}");
            let total = ink(image);
            let centre_x: f32 = (0..IMAGE_PIXELS)
                .map(|p| (p % IMAGE_SIDE) as f32 * image[p])
                .sum::<f32>()
                / total;
            assert!(
                (centre_x - 13.5).abs() <= 1.0,
                "centred by mass: {centre_x}"
            );
        }
    }

    #[test]
    fn marks_that_are_no_digit_are_framed_like_digits_and_reproducible() {
        let marks = not_digits(30, 9);
        assert_eq!(marks, not_digits(30, 9));
        assert_ne!(marks, not_digits(30, 10));
        for mark in marks.chunks_exact(IMAGE_PIXELS) {
            let (left, top, right, bottom) = ink_box(mark, 0.1).expect("every mark has ink");
            let longer = (right - left).max(bottom - top) + 1;
            assert!((19..=21).contains(&longer), "longer side {longer}");
        }
    }

    #[test]
    fn no_distortion_is_the_identity() {
        let config = AugmentConfig::none();
        let mut batch = stroke_batch();
        augment(&mut batch, &config, 5);
        assert_eq!(batch, stroke_batch());
    }
}
