//! `digits bench`: the tutorial workload's speed.

use clap::Args;
use digits::bench::{self, TUTORIAL_EPOCH_IMAGES};
use digits::device::DeviceChoice;

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
    Ok(())
}
