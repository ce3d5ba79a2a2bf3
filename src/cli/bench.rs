//! `digits bench`: the tutorial workload's speed.

use clap::Args;
use digits::bench::{self, TUTORIAL_EPOCH_IMAGES};
use digits::data::{Dataset, Split};
use digits::device::DeviceChoice;
use digits::files::encode_png;
use digits::predict::Predictor;
use digits::prepare::{self, Prepared};

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Images per timed run (an epoch of MNIST is 60,000).
    #[arg(long, default_value_t = TUTORIAL_EPOCH_IMAGES)]
    images: usize,
    /// auto (the best available) or cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    let selected = args.device.select();
    println!("Using {} device ({})", selected.name, selected.reason);
    println!(
        "Tutorial workload: MLP 784-128-400-10, batch 32, Adam, {} images per run",
        args.images
    );
    let mut timings: Vec<_> = (0..args.repeat)
        .map(|run| {
            let timing = bench::tutorial_epoch(args.images, 50, &selected.device);
            println!(
                "  run {}: {:.3} s, {:.0} images/s",
                run + 1,
                timing.elapsed.as_secs_f64(),
                timing.images_per_second()
            );
            timing
        })
        .collect();
    timings.sort_by_key(|a| a.elapsed);
    let median = timings[timings.len() / 2];
    println!(
        "median: {:.0} images/s, {:.2} s per 60,000-image epoch",
        median.images_per_second(),
        median.epoch_seconds()
    );

    let predictor = Predictor::built_in(&selected.device);
    let digit = Prepared {
        pixels: Dataset::lite(Split::Test).image(0).to_vec(),
    };
    let one = bench::median_time(200, || {
        predictor.predict(std::slice::from_ref(&digit));
    });
    println!("one prepared image predicted in-process: {:.3} ms", ms(one));
    let photo = bench::photo(2000);
    let png = encode_png(&photo);
    let prepare_predict = bench::median_time(9, || {
        let prepared = prepare::prepare(&photo).expect("the photo holds a digit");
        predictor.predict(&[prepared]);
    });
    println!(
        "2000x2000 photo, prepared and predicted: {:.1} ms",
        ms(prepare_predict)
    );
    let with_decode = bench::median_time(9, || {
        let image = prepare::decode(&png).expect("the PNG decodes");
        predictor.predict(&[prepare::prepare(&image).expect("the photo holds a digit")]);
    });
    println!(
        "the same from its PNG file, decoding included: {:.1} ms",
        ms(with_decode)
    );
    Ok(())
}
