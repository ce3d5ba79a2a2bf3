//! Charts drawn with plotters into memory, then saved as PNG atomically.

use std::sync::Once;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use crate::data::NUM_CLASSES;
use crate::train::EpochMetrics;

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts`): plotters needs a font for any text,
/// and a built-in one draws the same everywhere, with nothing to install.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT_FAMILY: &str = "sans-serif";

/// Chart sizes, in pixels.
pub const CURVE_SIZE: (u32, u32) = (900, 500);
pub const CONFUSION_SIZE: (u32, u32) = (640, 600);
/// The comparison's two charts; its legend goes below them, a line per run (see
/// [`comparison_size`]), so that it never hides a curve.
pub const COMPARISON_SIZE: (u32, u32) = (1400, 520);
const LEGEND_LINE: u32 = 26;
const LEGEND_PADDING: u32 = 14;

/// The size of the comparison of `runs` runs: the charts, and the legend below them.
pub fn comparison_size(runs: usize) -> (u32, u32) {
    let lines = u32::try_from(runs).unwrap_or(u32::MAX);
    (
        COMPARISON_SIZE.0,
        COMPARISON_SIZE.1 + 2 * LEGEND_PADDING + LEGEND_LINE.saturating_mul(lines),
    )
}

/// One run's curves, labelled for a legend.
#[derive(Debug, Clone)]
pub struct LabelledHistory {
    pub label: String,
    pub history: Vec<EpochMetrics>,
}

fn register_font() {
    static FONT_REGISTERED: Once = Once::new();
    FONT_REGISTERED.call_once(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the built-in font is a valid TrueType file"));
    });
}

/// Draws into an RGB buffer of `size`; `draw` gets the whole canvas.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<RgbImage, ReportError> {
    register_font();
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        draw(&root).map_err(ReportError::Chart)?;
        root.present().map_err(chart_error)?;
    }
    Ok(RgbImage::from_raw(size.0, size.1, buffer).expect("the buffer has the image's size"))
}

fn chart_error(err: impl std::fmt::Display) -> ReportError {
    ReportError::Chart(err.to_string())
}

fn text(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// A trailing moving average: noisy per-batch losses become a readable curve.
pub fn smooth(values: &[f32], window: usize) -> Vec<f32> {
    let window = window.max(1);
    let mut sum = 0.0f64;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            sum += f64::from(v);
            if i >= window {
                sum -= f64::from(values[i - window]);
            }
            (sum / (i + 1).min(window) as f64) as f32
        })
        .collect()
}

/// Every batch's loss across all epochs, with x in epochs (batch `b` of epoch `e` at
/// `e - 1 + (b + 1) / batches`), so per-epoch figures line up at whole numbers.
fn batch_points(history: &[EpochMetrics]) -> Vec<(f64, f32)> {
    history
        .iter()
        .flat_map(|epoch| {
            let n = epoch.batch_losses.len().max(1) as f64;
            let start = (epoch.epoch - 1) as f64;
            epoch
                .batch_losses
                .iter()
                .enumerate()
                .map(move |(b, &loss)| (start + (b + 1) as f64 / n, loss))
        })
        .collect()
}

fn smoothing_window(history: &[EpochMetrics]) -> usize {
    let per_epoch = history.first().map_or(1, |e| e.batch_losses.len());
    (per_epoch / 10).clamp(1, 200)
}

fn smoothed_points(history: &[EpochMetrics]) -> Vec<(f64, f64)> {
    let points = batch_points(history);
    let losses: Vec<f32> = points.iter().map(|p| p.1).collect();
    let smoothed = smooth(&losses, smoothing_window(history));
    points
        .iter()
        .zip(smoothed)
        .map(|(p, s)| (p.0, f64::from(s)))
        .collect()
}

fn last_epoch(history: &[EpochMetrics]) -> f64 {
    history.last().map_or(1, |e| e.epoch) as f64
}

/// Epoch axes are labelled with whole epochs only: "3", never "3.0" or "2.5".
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        String::new()
    }
}

/// How many labels an epoch axis from `first` to `last` asks for: at most one per whole
/// epoch, so the labels fall on whole numbers, and at most a dozen.
fn epoch_labels(first: f64, last: f64) -> usize {
    ((last - first).floor() as usize + 1).clamp(2, 12)
}

/// Loss per batch (raw and smoothed) with each epoch's mean training loss and test loss.
pub fn loss_chart(history: &[EpochMetrics]) -> Result<RgbImage, ReportError> {
    let raw = batch_points(history);
    let smoothed = smoothed_points(history);
    let top = smoothed
        .iter()
        .map(|p| p.1)
        .chain(history.iter().flat_map(|e| [e.train_loss, e.test_loss]))
        .fold(0.1f64, f64::max)
        * 1.15;
    let first = history.first().map_or(0, |e| e.epoch - 1) as f64;
    render(CURVE_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Loss", (FONT_FAMILY, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(first..last_epoch(history), 0.0..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_labels(epoch_labels(first, last_epoch(history)))
            .x_label_formatter(&epoch_label)
            .x_desc("epoch")
            .y_desc("cross-entropy")
            .label_style((FONT_FAMILY, 14))
            .draw()
            .map_err(text)?;
        let faint = RGBColor(190, 205, 230);
        chart
            .draw_series(LineSeries::new(
                raw.iter().map(|&(x, y)| (x, f64::from(y).min(top))),
                faint,
            ))
            .map_err(text)?
            .label("loss per batch")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], faint));
        chart
            .draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))
            .map_err(text)?
            .label("smoothed")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        let epochs = |f: fn(&EpochMetrics) -> f64| {
            history
                .iter()
                .map(move |e| (e.epoch as f64, f(e)))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(
                epochs(|e| e.train_loss)
                    .into_iter()
                    .map(|p| Circle::new(p, 5, BLUE.filled())),
            )
            .map_err(text)?
            .label("training loss (epoch mean)")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, BLUE.filled()));
        chart
            .draw_series(LineSeries::new(
                epochs(|e| e.test_loss),
                RED.stroke_width(2),
            ))
            .map_err(text)?;
        chart
            .draw_series(
                epochs(|e| e.test_loss)
                    .into_iter()
                    .map(|p| TriangleMarker::new(p, 7, RED.filled())),
            )
            .map_err(text)?
            .label("test loss")
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 7, RED.filled()));
        chart
            .configure_series_labels()
            .label_font((FONT_FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(text)
    })
}

/// Test accuracy after each epoch, in percent.
pub fn accuracy_chart(history: &[EpochMetrics]) -> Result<RgbImage, ReportError> {
    let points: Vec<(f64, f64)> = history
        .iter()
        .map(|e| (e.epoch as f64, 100.0 * e.test_accuracy))
        .collect();
    let (low, high) = points
        .iter()
        .fold((100.0f64, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (bottom, top) = ((low - 1.0).floor().max(0.0), (high + 1.0).ceil().min(100.0));
    let first = history.first().map_or(1, |e| e.epoch) as f64;
    render(CURVE_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Test accuracy", (FONT_FAMILY, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((first - 0.5)..(last_epoch(history) + 0.5), bottom..top)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_labels(epoch_labels(first, last_epoch(history)))
            .x_label_formatter(&epoch_label)
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .label_style((FONT_FAMILY, 14))
            .draw()
            .map_err(text)?;
        chart
            .draw_series(LineSeries::new(points.clone(), GREEN.stroke_width(2)))
            .map_err(text)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, GREEN.filled())))
            .map_err(text)?;
        chart
            .draw_series(points.iter().map(|&(x, y)| {
                Text::new(
                    format!("{y:.2}"),
                    (x, y),
                    (FONT_FAMILY, 13).into_font().color(&BLACK),
                )
            }))
            .map_err(text)?;
        Ok(())
    })
}

/// A heatmap of `confusion[truth][predicted]`, each cell labelled with its count; colour is
/// the share of the true class's images, so classes of different sizes compare fairly.
pub fn confusion_chart(
    confusion: &[[usize; NUM_CLASSES]; NUM_CLASSES],
    class_names: &[&str; NUM_CLASSES],
) -> Result<RgbImage, ReportError> {
    let n = NUM_CLASSES as i32;
    // Rows run top to bottom, so true class `t` sits at y = n - 1 - t.
    let row_of = |truth: usize| n - 1 - truth as i32;
    let name = |index: i32| {
        usize::try_from(index)
            .ok()
            .and_then(|i| class_names.get(i))
            .map_or(String::new(), |s| s.to_string())
    };
    render(CONFUSION_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Confusion matrix", (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(110)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(text)?;
        let centre_label = |flip: bool| {
            move |v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(i) if flip => name(n - 1 - i),
                SegmentValue::CenterOf(i) => name(*i),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(NUM_CLASSES + 1)
            .y_labels(NUM_CLASSES + 1)
            .x_label_formatter(&centre_label(false))
            .y_label_formatter(&centre_label(true))
            .x_desc("predicted")
            .y_desc("true")
            .label_style((FONT_FAMILY, 13))
            .draw()
            .map_err(text)?;
        let centred = Pos::new(HPos::Center, VPos::Center);
        for (truth, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (predicted, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let shade = (255.0 * (1.0 - share.sqrt())) as u8;
                let fill = if truth == predicted {
                    RGBColor(shade, (120.0 + 135.0 * (1.0 - share)) as u8, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                let (x, y) = (predicted as i32, row_of(truth));
                let corners = [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series([Rectangle::new(corners, fill.filled())])
                    .map_err(text)?;
                let colour = if share > 0.5 { WHITE } else { BLACK };
                let style = (FONT_FAMILY, 13).into_font().color(&colour).pos(centred);
                chart
                    .draw_series([Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        style,
                    )])
                    .map_err(text)?;
            }
        }
        Ok(())
    })
}

/// Several runs overlaid: smoothed training loss on the left, test accuracy on the right, and
/// below them a legend of a line per run.
pub fn comparison_chart(runs: &[LabelledHistory]) -> Result<RgbImage, ReportError> {
    let palette = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(230, 140, 0),
    ];
    let epochs = runs
        .iter()
        .map(|r| last_epoch(&r.history))
        .fold(1.0, f64::max);
    let smoothed: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| smoothed_points(&r.history)).collect();
    let top_loss = smoothed.iter().flatten().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let accuracy: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            r.history
                .iter()
                .map(|e| (e.epoch as f64, 100.0 * e.test_accuracy))
                .collect()
        })
        .collect();
    let low = accuracy.iter().flatten().map(|p| p.1).fold(100.0, f64::min);
    render(comparison_size(runs.len()), |root| {
        let (charts, legend) = root.split_vertically(COMPARISON_SIZE.1);
        let (left, right) = charts.split_horizontally(COMPARISON_SIZE.0 / 2);
        let mut loss = ChartBuilder::on(&left)
            .caption("Training loss (smoothed)", (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..epochs, 0.0..top_loss)
            .map_err(text)?;
        loss.configure_mesh()
            .x_labels(epoch_labels(0.0, epochs))
            .x_label_formatter(&epoch_label)
            .x_desc("epoch")
            .y_desc("cross-entropy")
            .label_style((FONT_FAMILY, 14))
            .draw()
            .map_err(text)?;
        let mut acc = ChartBuilder::on(&right)
            .caption("Test accuracy", (FONT_FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..(epochs + 0.5), (low - 1.0).floor().max(0.0)..100.0)
            .map_err(text)?;
        acc.configure_mesh()
            .x_labels(epoch_labels(0.5, epochs + 0.5))
            .x_label_formatter(&epoch_label)
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .label_style((FONT_FAMILY, 14))
            .draw()
            .map_err(text)?;
        let label_style = (FONT_FAMILY, 15).into_font().color(&BLACK);
        for (i, run) in runs.iter().enumerate() {
            let colour = palette[i % palette.len()];
            loss.draw_series(LineSeries::new(smoothed[i].clone(), colour.stroke_width(2)))
                .map_err(text)?;
            acc.draw_series(LineSeries::new(accuracy[i].clone(), colour.stroke_width(2)))
                .map_err(text)?;
            acc.draw_series(
                accuracy[i]
                    .iter()
                    .map(|&p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(text)?;
            let y = (LEGEND_PADDING + LEGEND_LINE * i as u32 + LEGEND_LINE / 2) as i32;
            legend
                .draw(&PathElement::new(
                    [(76, y), (106, y)],
                    colour.stroke_width(3),
                ))
                .map_err(text)?;
            legend
                .draw(&Circle::new((91, y), 4, colour.filled()))
                .map_err(text)?;
            legend
                .draw(&Text::new(
                    run.label.clone(),
                    (118, y),
                    label_style.clone().pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(text)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_averages_a_trailing_window() {
        assert_eq!(smooth(&[2.0, 4.0, 6.0, 8.0], 2), [2.0, 3.0, 5.0, 7.0]);
        assert_eq!(smooth(&[1.0, 3.0], 1), [1.0, 3.0]);
        assert!(smooth(&[], 5).is_empty());
    }

    #[test]
    fn epoch_axes_are_labelled_with_whole_epochs() {
        assert_eq!(epoch_label(&3.0), "3");
        assert_eq!(epoch_label(&0.0), "0");
        assert_eq!(epoch_label(&2.5), "");
        assert_eq!(epoch_labels(0.0, 1.0), 2);
        assert_eq!(epoch_labels(0.5, 10.5), 11);
        assert_eq!(epoch_labels(0.0, 50.0), 12);
    }
}
