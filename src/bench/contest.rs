//! digits against PyTorch, run for run: each of digits' runs of a workload sits next to one of
//! PyTorch's, in turn first and second, so that a machine whose speed drifts from minute to
//! minute (a third, on a shared host) slows both alike, and each ratio compares two runs made
//! at the same moment. Figures taken a minute apart would compare two different machines.

use super::pytorch::{Baseline, PytorchError, Workload};
use super::{EpochTiming, median_of};

/// What times one run of a workload on the other side: PyTorch's worker, or a stand-in.
pub trait Rival {
    fn time(&mut self, workload: Workload) -> Result<f64, PytorchError>;
}

impl Rival for Baseline {
    fn time(&mut self, workload: Workload) -> Result<f64, PytorchError> {
        Baseline::time(self, workload)
    }
}

/// `repeat` pairs of runs per workload, against a rival that may be missing or may fail.
pub struct Contest<R> {
    repeat: u32,
    rival: Option<R>,
    note: Option<String>,
}

/// One workload's figures.
pub struct Bout {
    /// digits' median run.
    pub ours: EpochTiming,
    /// The median of the rival's runs of each workload asked for; empty unless it ran every
    /// pair.
    pub theirs: Vec<f64>,
    /// digits' speed over the rival's in each pair of runs (over the fastest of the workloads
    /// asked for, in that pair), in the order run.
    pub ratios: Vec<f64>,
}

impl Bout {
    /// The median of the pairs' ratios, when the rival ran every pair.
    pub fn speedup(&self) -> Option<f64> {
        (!self.theirs.is_empty()).then(|| median_of(self.ratios.clone()))
    }
}

impl<R: Rival> Contest<R> {
    pub fn new(repeat: u32, rival: Result<R, String>) -> Self {
        let (rival, note) = match rival {
            Ok(rival) => (Some(rival), None),
            Err(why) => (None, Some(why)),
        };
        Self {
            repeat: repeat.max(1),
            rival,
            note,
        }
    }

    pub fn rival(&self) -> Option<&R> {
        self.rival.as_ref()
    }

    /// Why the rival has no figures, or no more of them.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// `repeat` pairs: one of `ours` and one of each of `theirs` (all of one kind: times or
    /// rates), digits first in the first pair, second in the next, and so on.
    pub fn bout(&mut self, ours: impl FnMut() -> EpochTiming, theirs: &[Workload]) -> Bout {
        self.bout_of(self.repeat, ours, theirs)
    }

    /// [`Contest::bout`] with `pairs` pairs (at least one) rather than `repeat`.
    pub fn bout_of(
        &mut self,
        pairs: u32,
        mut ours: impl FnMut() -> EpochTiming,
        theirs: &[Workload],
    ) -> Bout {
        assert!(
            !theirs.is_empty(),
            "a bout is against at least one workload"
        );
        let mut timings = Vec::new();
        let mut figures = vec![Vec::new(); theirs.len()];
        let mut ratios = Vec::new();
        for pair in 0..pairs.max(1) {
            let (timing, their_figures) = if pair % 2 == 0 {
                let timing = ours();
                (timing, self.time_each(theirs))
            } else {
                let their_figures = self.time_each(theirs);
                (ours(), their_figures)
            };
            timings.push(timing);
            let Some(their_figures) = their_figures else {
                continue;
            };
            let figures_of_pair = their_figures.iter().copied();
            ratios.push(if theirs[0].higher_is_faster() {
                let fastest = figures_of_pair.fold(f64::MIN, f64::max);
                timing.images_per_second() / fastest
            } else {
                let fastest = figures_of_pair.fold(f64::MAX, f64::min);
                fastest / timing.epoch_seconds()
            });
            for (all, figure) in figures.iter_mut().zip(their_figures) {
                all.push(figure);
            }
        }
        let every_pair = ratios.len() == timings.len();
        Bout {
            ours: super::median_timing(timings),
            theirs: if every_pair {
                figures.into_iter().map(median_of).collect()
            } else {
                Vec::new()
            },
            ratios,
        }
    }

    /// One run of `workload` on the rival's side alone: for figures that hardly drift (one
    /// image, a median of 200 calls in itself), taken once.
    pub fn time_once(&mut self, workload: Workload) -> Option<f64> {
        self.time_each(&[workload]).map(|figures| figures[0])
    }

    /// Lets the rival go (PyTorch's worker exits and frees its memory).
    pub fn finish(&mut self) {
        self.rival = None;
    }

    /// One run of each workload, or `None` (and the reason noted) once the rival has failed.
    fn time_each(&mut self, workloads: &[Workload]) -> Option<Vec<f64>> {
        let rival = self.rival.as_mut()?;
        match workloads.iter().map(|&w| rival.time(w)).collect() {
            Ok(figures) => Some(figures),
            Err(err) => {
                self.note = Some(format!("{err:#}"));
                self.rival = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;

    /// A rival whose figures come from a list, logging every request; it fails at the end of
    /// the list.
    struct Scripted<'a> {
        figures: std::vec::IntoIter<f64>,
        log: &'a RefCell<Vec<String>>,
    }

    impl Rival for Scripted<'_> {
        fn time(&mut self, workload: Workload) -> Result<f64, PytorchError> {
            self.log.borrow_mut().push(format!("{workload:?}"));
            self.figures
                .next()
                .ok_or_else(|| PytorchError::Failed("out of figures".into()))
        }
    }

    /// digits' runs: `images` each, taking the given milliseconds in turn, logged as "ours".
    fn ours<'a>(
        millis: &'a [u64],
        log: &'a RefCell<Vec<String>>,
    ) -> impl FnMut() -> EpochTiming + 'a {
        let mut millis = millis.iter();
        move || {
            log.borrow_mut().push("ours".into());
            EpochTiming {
                images: 1000,
                elapsed: Duration::from_millis(*millis.next().unwrap()),
            }
        }
    }

    #[test]
    fn pairs_alternate_and_the_speedup_is_the_median_of_their_ratios() {
        let log = RefCell::new(Vec::new());
        // PyTorch's rates drift: 800, then 100, then 500 images/s.
        let rival = Scripted {
            figures: vec![800.0, 100.0, 500.0].into_iter(),
            log: &log,
        };
        let mut contest = Contest::new(3, Ok(rival));
        // Ours: 1000 images in 1 s, 2 s, 0.8 s: 1000, 500, 1250 images/s.
        let bout = contest.bout(ours(&[1000, 2000, 800], &log), &[Workload::CnnTraining]);
        assert_eq!(
            log.borrow().as_slice(),
            [
                "ours",
                "CnnTraining",
                "CnnTraining",
                "ours",
                "ours",
                "CnnTraining"
            ]
        );
        assert_eq!(bout.ratios, [1.25, 5.0, 2.5]);
        assert_eq!(bout.speedup(), Some(2.5));
        // Not the quotient of the medians, 1000 / 500.
        assert_eq!(bout.theirs, [500.0]);
        assert_eq!(bout.ours.elapsed, Duration::from_millis(1000));
        assert!(contest.note().is_none());
    }

    #[test]
    fn times_take_the_faster_setting_and_a_failure_drops_the_unfinished_bout() {
        let log = RefCell::new(Vec::new());
        // Two settings per pair (seconds per epoch), then one figure for the next bout.
        let rival = Scripted {
            figures: vec![3.0, 2.4, 4.0, 6.0, 700.0].into_iter(),
            log: &log,
        };
        let mut contest = Contest::new(2, Ok(rival));
        let settings = [Workload::TutorialEpoch, Workload::TutorialEpochOneThread];
        // 1000 images in 10 ms: a 60,000-image epoch in 0.6 s.
        let tutorial = contest.bout(ours(&[10, 10], &log), &settings);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(tutorial.ratios[0], 4.0) && close(tutorial.ratios[1], 4.0 / 0.6));
        // Two pairs: each median is the mean of the two.
        assert!(close(tutorial.theirs[0], 3.5) && close(tutorial.theirs[1], 4.2));
        assert!(close(tutorial.speedup().unwrap(), (4.0 + 4.0 / 0.6) / 2.0));

        // The rival answers the first pair and fails in the second.
        let cnn = contest.bout(ours(&[1000, 1000], &log), &[Workload::CnnTraining]);
        assert_eq!(cnn.ratios.len(), 1);
        assert!(cnn.theirs.is_empty() && cnn.speedup().is_none());
        assert_eq!(
            contest.note(),
            Some("the PyTorch baseline failed: out of figures")
        );
        assert!(contest.rival().is_none());
        // Nothing more is asked of it.
        let asked = log.borrow().len();
        assert!(contest.time_once(Workload::OneImage).is_none());
        assert_eq!(log.borrow().len(), asked);
    }

    #[test]
    fn without_a_rival_only_digits_runs() {
        let log = RefCell::new(Vec::new());
        let mut contest = Contest::<Scripted>::new(3, Err("skipped".into()));
        let bout = contest.bout(ours(&[3, 1, 2], &log), &[Workload::MlpInference]);
        assert_eq!(bout.ours.elapsed, Duration::from_millis(2));
        assert!(bout.ratios.is_empty() && bout.speedup().is_none());
        assert_eq!(contest.note(), Some("skipped"));
        let longer = contest.bout_of(5, ours(&[3, 1, 2, 9, 8], &log), &[Workload::MlpInference]);
        assert_eq!(longer.ours.elapsed, Duration::from_millis(3));
        assert_eq!(log.borrow().len(), 8);
    }
}
