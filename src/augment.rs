//! Data augmentation: every training image distorted a little differently every epoch, so a
//! model sees many plausible versions of each digit. Only ever applied to training batches.
//!
//! Two distortions, both resampling the image through a map from output to source pixel with
//! bilinear interpolation (so pixels stay in [0, 1] and the label stays true):
//! - a random affine map: rotation, scaling, shear and translation about the image centre;
//! - an elastic distortion (Simard, Steinkraus and Platt 2003): a random displacement field,
//!   smoothed by a Gaussian of width `sigma` and scaled by `alpha`.

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
            elastic: None,
        }
    }

    /// Why these settings cannot be used, if they cannot. The presets always can; a run's
    /// config.json is a file people edit, and a sigma of 0 there would fill every training
    /// image with NaN (which training would then blame on the learning rate).
    pub fn check(&self) -> Result<(), String> {
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
        match bounds
            .into_iter()
            .find(|(_, value, min, max)| !(*min..=*max).contains(value))
        {
            Some((name, value, min, max)) => Err(format!(
                "augment.{name} is {value}, but it must be between {min} and {max}"
            )),
            None => Ok(()),
        }
    }
}

/// Distorts every image of `batch` in place; the same `seed` gives the same distortions.
pub fn augment(batch: &mut Batch, config: &AugmentConfig, seed: u64) {
    batch
        .pixels
        .par_chunks_exact_mut(IMAGE_PIXELS)
        .enumerate()
        .for_each(|(index, image)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(index as u64);
            distort(image, config, &mut rng);
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

/// Uniform noise in [-1, 1] per pixel, blurred by a Gaussian of width `sigma` (separably),
/// times `alpha`.
fn displacement_field(rng: &mut ChaCha8Rng, alpha: f32, sigma: f32) -> Vec<f32> {
    let noise: Vec<f32> = (0..IMAGE_PIXELS)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect();
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
    let smooth = blur(&blur(&noise, true), false);
    smooth.into_iter().map(|v| v * alpha).collect()
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
        assert!(err.contains("augment.elastic.sigma is 0"), "{err}");
        let not_a_number = AugmentConfig {
            rotation_degrees: f32::NAN,
            ..AugmentConfig::digits()
        };
        assert!(
            not_a_number
                .check()
                .unwrap_err()
                .contains("rotation_degrees")
        );
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

    #[test]
    fn no_distortion_is_the_identity() {
        let config = AugmentConfig {
            rotation_degrees: 0.0,
            scale: 0.0,
            translation: 0.0,
            shear_degrees: 0.0,
            horizontal_flip: false,
            elastic: None,
        };
        let mut batch = stroke_batch();
        augment(&mut batch, &config, 5);
        assert_eq!(batch, stroke_batch());
    }
}
