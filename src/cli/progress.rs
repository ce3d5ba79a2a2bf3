//! Rendering library events: progress bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use digits::data::FetchProgress;
use digits::eval::Evaluation;
use digits::train::{BatchProgress, EpochMetrics, TrainObserver};
use indicatif::{ProgressBar, ProgressStyle};

fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// One bar per downloaded file.
pub struct DownloadBars {
    bar: Option<ProgressBar>,
}

impl DownloadBars {
    pub fn new() -> Self {
        Self { bar: None }
    }
}

impl FetchProgress for DownloadBars {
    fn started(&mut self, file: &str, url: &str, total: Option<u64>) {
        if !on_terminal() {
            eprintln!("downloading {url}");
            return;
        }
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(file.to_string());
        self.bar = Some(bar);
    }

    fn advanced(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finished(&mut self, file: &str) {
        match self.bar.take() {
            Some(bar) => bar.finish(),
            None => eprintln!("{file}: verified"),
        }
    }

    fn failed(&mut self, url: &str, reason: &str) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
        eprintln!("warning: {url}: {reason}");
    }
}

/// Prints what the tutorial prints: the loss every 100 batches and the test result after each
/// epoch; on a terminal a bar also shows the epoch's progress.
pub struct TrainPrinter {
    bar: Option<ProgressBar>,
    /// The epoch whose header is printed (a resumed epoch may not start at batch 0).
    epoch: Option<usize>,
}

impl TrainPrinter {
    pub fn new() -> Self {
        Self {
            bar: None,
            epoch: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }
}

/// Training that stops mid-epoch (interrupted, or diverged) leaves no half-drawn bar above
/// what is printed next.
impl Drop for TrainPrinter {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl TrainObserver for TrainPrinter {
    fn batch(&mut self, progress: &BatchProgress) {
        if self.epoch != Some(progress.epoch) {
            self.epoch = Some(progress.epoch);
            println!("Epoch {}\n-------------------------------", progress.epoch);
            if on_terminal() {
                let bar = ProgressBar::new(progress.batches as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "[{bar:40}] {pos}/{len} batches {per_sec} ETA {eta}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                self.bar = Some(bar);
            }
        }
        if progress.batch.is_multiple_of(100) {
            self.line(&format!(
                "loss: {:>7.6}  [{:>5}/{:>5}]",
                progress.loss, progress.seen, progress.total
            ));
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn epoch(&mut self, metrics: &EpochMetrics, _evaluation: &Evaluation) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let (Some(accuracy), Some(loss)) = (metrics.validation_accuracy, metrics.validation_loss)
        {
            println!(
                "Validation: \n Accuracy: {:.2}%, Avg loss: {loss:>8.6}",
                100.0 * accuracy
            );
        }
        println!(
            "Test Error: \n Accuracy: {:.1}%, Avg loss: {:>8.6} \n",
            100.0 * metrics.test_accuracy,
            metrics.test_loss
        );
    }
}
