//! Two threads in lockstep for work too small for rayon: the tutorial MLP's training step.
//!
//! At batch 32 the tutorial's products take tens of microseconds each, and handing one to
//! rayon from the training thread costs 12-31 us (the pool's worker has fallen asleep and is
//! woken through the kernel): split that way, the epoch took 1.8 s against 1.0 s on one core
//! (PERFORMANCE.md). Here one helper thread stays awake for [`STAY_AWAKE`] after each job,
//! spinning, so that while steps keep coming a hand-off is a cache line passed between cores.
//!
//! A job is a list of phases, each run once per [`Side`] with both sides meeting between
//! phases. Callers give each side the work whose data it owns from step to step (its rows of
//! every weight, its columns of every layer's output), so what crosses between the cores is
//! the small activations, not the weights: a design in which the helper took half of each
//! optimizer update for data the other core had just written was three times slower in one
//! process out of three on the build machine (PERFORMANCE.md). With one core, inside a rayon
//! worker, or while another thread holds the helper, both sides run here, one after the
//! other: callers' phases compute the same values either way.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the helper keeps spinning for the next job after one: longer than the gaps
/// within a tutorial step (the loss, a few microseconds) and between steps (the next batch
/// gathered), shorter than augmenting a batch (about 2.5 ms here), when a spinning helper
/// would take a core from rayon's workers: with 2 ms, the first epoch of the tutorial's MLP
/// with `--augment digits` took 0.98-1.0 s on mnist-lite against 0.76-0.86 s.
const STAY_AWAKE: Duration = Duration::from_micros(500);

/// Which of the two threads runs a phase: `First` is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    First,
    Second,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::First, Side::Second];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A phase of a job, run once for each side.
pub(crate) type Phase<'a> = &'a (dyn Fn(Side) + Sync);

/// Runs `phases` in order, each once per side, the sides on two cores when `cores` says so
/// and the helper is free: no side starts a phase before both have finished the previous one.
/// Returns the cores it ran on. A panic in a phase is raised here: on two cores once both
/// sides have finished the job (the other side's phases still run, so that both keep
/// meeting), on one at once.
pub(crate) fn run(cores: Cores, phases: &[Phase]) -> Cores {
    let helper = match cores {
        Cores::Two => take_helper(),
        Cores::One => {
            // A helper still spinning after a job on two cores would slow this one down
            // where both threads share a physical core, and with it the [`Pacer`]'s trial.
            if let Some(Some(helper)) = HELPER.get() {
                helper.shared.rest.store(true, Relaxed);
            }
            None
        }
    };
    let Some(helper) = helper else {
        for phase in phases {
            Side::BOTH.iter().for_each(|&side| phase(side));
        }
        return Cores::One;
    };
    let job = Job {
        phases,
        panic: Mutex::new(None),
        finished: AtomicBool::new(false),
    };
    helper.shared.rest.store(false, Relaxed);
    helper
        .shared
        .job
        .store(std::ptr::from_ref(&job).cast_mut().cast(), SeqCst);
    if helper.shared.sleeping.load(SeqCst) {
        helper.thread.unpark();
    }
    let mut meetings = helper.shared.meetings[0].load(Acquire);
    for phase in phases {
        job.run(phase, Side::First);
        meetings += 1;
        helper.shared.meet(0, meetings);
    }
    // `job` lives in this frame: wait until the helper has let go of it.
    wait_until(|| job.finished.load(Acquire));
    helper.shared.busy.store(false, Release);
    if let Some(panic) = job
        .panic
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        panic::resume_unwind(panic);
    }
    Cores::Two
}

/// Spins until `done`, yielding the core now and then: on a machine busier than its cores,
/// the thread being waited for may need this one's.
fn wait_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        spins += 1;
        if spins.is_multiple_of(1 << 14) {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How many cores a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cores {
    One,
    Two,
}

/// Steps in a trial, and in the sample of the current choice it is compared with.
const TRIAL_STEPS: usize = 12;
/// Steps on the cores chosen before the next trial of the other choice: from the first trial
/// (after [`TRIAL_STEPS`]) to the second, and after a change of mind.
const FIRST_INTERVAL: u32 = 60;
/// The interval doubles each time a trial confirms the choice, up to this.
const LONGEST_INTERVAL: u32 = 960;

/// Chooses, from how long the steps of a training run take, whether they run on one core or
/// two. Two are faster where the two threads get a core each (0.45-0.6 s against 0.7-1.0 s per
/// tutorial epoch on the build machine), and slower where the host of a virtual machine puts
/// its two processors on one physical core for a while: that happened for minutes at a time
/// there, without warning (PyTorch's two threads then lost to its one as well). So after the
/// first [`TRIAL_STEPS`] steps on two cores, the next ones run on one, and whichever took less
/// per step (the median, so that a pause of the caller between steps does not count) is kept;
/// the other choice is tried again for [`TRIAL_STEPS`] after an interval that doubles while
/// the choice stands, so that a stable machine pays for a trial in about one step in 80 and a
/// changed one is noticed within [`LONGEST_INTERVAL`] steps. The choice never changes what is
/// computed.
#[derive(Debug)]
pub(crate) struct Pacer {
    chosen: Cores,
    /// When the latest step started, and on how many cores it ran.
    latest: Option<(Instant, Cores)>,
    steps_since_trial: u32,
    /// Steps on the chosen cores before the next trial.
    interval: u32,
    /// The latest steps' durations on the chosen cores, and during a trial, on the others.
    on_chosen: Vec<Duration>,
    on_trial: Vec<Duration>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            chosen: Cores::Two,
            latest: None,
            steps_since_trial: 0,
            interval: TRIAL_STEPS as u32,
            on_chosen: Vec::new(),
            on_trial: Vec::new(),
        }
    }
}

impl Pacer {
    /// Called as each step starts: the cores it is to run on.
    pub fn next_step(&mut self) -> Cores {
        self.next_step_at(Instant::now())
    }

    fn next_step_at(&mut self, now: Instant) -> Cores {
        if let Some((started, cores)) = self.latest {
            let samples = match cores == self.chosen {
                true => &mut self.on_chosen,
                false => &mut self.on_trial,
            };
            if samples.len() == TRIAL_STEPS {
                samples.remove(0);
            }
            samples.push(now - started);
        }
        if self.on_trial.len() == TRIAL_STEPS {
            if median(&self.on_trial) < median(&self.on_chosen) {
                self.chosen = self.other();
                std::mem::swap(&mut self.on_chosen, &mut self.on_trial);
                self.interval = FIRST_INTERVAL;
            } else {
                self.interval = (self.interval * 2).clamp(FIRST_INTERVAL, LONGEST_INTERVAL);
            }
            self.on_trial.clear();
            self.steps_since_trial = 0;
        }
        let cores = if self.steps_since_trial >= self.interval {
            self.other()
        } else {
            self.steps_since_trial += 1;
            self.chosen
        };
        self.latest = Some((now, cores));
        cores
    }

    fn other(&self) -> Cores {
        match self.chosen {
            Cores::One => Cores::Two,
            Cores::Two => Cores::One,
        }
    }
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// A job as the helper sees it, in the caller's frame until `finished` is up.
struct Job<'a> {
    phases: &'a [Phase<'a>],
    /// The first panic of either side, raised again by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    finished: AtomicBool,
}

impl Job<'_> {
    /// Runs `side`'s part of `phase`, keeping its panic, if any, for the caller.
    fn run(&self, phase: Phase, side: Side) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| phase(side))) {
            let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(panic);
        }
    }
}

/// What the caller and the helper share.
struct Shared {
    /// The job to run, or null; the helper takes it (swapping in null).
    job: AtomicPtr<Job<'static>>,
    /// Set by the helper before it sleeps: a caller that sees it after posting a job wakes it.
    sleeping: AtomicBool,
    /// Held by the thread whose job the helper runs; another finds it taken and runs alone.
    busy: AtomicBool,
    /// Asks the helper to sleep now rather than after [`STAY_AWAKE`]: the caller's next jobs
    /// run on one core.
    rest: AtomicBool,
    /// How many phase ends each side has reached, each on its own cache line.
    meetings: [Padded; 2],
}

#[repr(align(128))]
struct Padded(AtomicU64);

impl std::ops::Deref for Padded {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

impl Shared {
    /// Side `me` has ended its `count`-th phase; returns once the other side has too.
    fn meet(&self, me: usize, count: u64) {
        self.meetings[me].store(count, Release);
        wait_until(|| self.meetings[1 - me].load(Acquire) >= count);
    }
}

struct Helper {
    shared: &'static Shared,
    thread: Thread,
}

/// The helper once started, or `None` where it could not be.
static HELPER: OnceLock<Option<Helper>> = OnceLock::new();

/// The helper, started on first use, if it is free and two cores would help: not where rayon
/// has one thread (`RAYON_NUM_THREADS=1` keeps everything on the caller's), nor from inside
/// one of rayon's workers, whose sibling may be busy with work of its own.
fn take_helper() -> Option<&'static Helper> {
    if rayon::current_num_threads() < 2 || rayon::current_thread_index().is_some() {
        return None;
    }
    let helper = HELPER
        .get_or_init(|| {
            let shared: &'static Shared = Box::leak(Box::new(Shared {
                job: AtomicPtr::new(std::ptr::null_mut()),
                sleeping: AtomicBool::new(false),
                busy: AtomicBool::new(false),
                rest: AtomicBool::new(false),
                meetings: [Padded(AtomicU64::new(0)), Padded(AtomicU64::new(0))],
            }));
            let handle = thread::Builder::new()
                .name("digits-pair".into())
                .spawn(move || serve(shared))
                .ok()?;
            Some(Helper {
                shared,
                thread: handle.thread().clone(),
            })
        })
        .as_ref()?;
    let free = helper
        .shared
        .busy
        .compare_exchange(false, true, SeqCst, SeqCst);
    free.is_ok().then_some(helper)
}

/// The helper's loop: spin for a job, run its phases as the second side, and sleep after
/// [`STAY_AWAKE`] without one, or as soon as a caller asks it to rest.
fn serve(shared: &'static Shared) {
    let mut meetings = 0;
    let mut idle_since = Instant::now();
    loop {
        // Read before taking, so that spinning does not keep the line from the caller.
        let job = match shared.job.load(Relaxed).is_null() {
            true => std::ptr::null_mut(),
            false => shared.job.swap(std::ptr::null_mut(), SeqCst),
        };
        if job.is_null() {
            if idle_since.elapsed() < STAY_AWAKE && !shared.rest.load(Relaxed) {
                std::hint::spin_loop();
                continue;
            }
            shared.sleeping.store(true, SeqCst);
            // A job posted before the flag went up is seen here; one posted after it wakes us.
            if shared.job.load(SeqCst).is_null() {
                thread::park();
            }
            shared.sleeping.store(false, SeqCst);
            idle_since = Instant::now();
            continue;
        }
        // SAFETY: the caller keeps the job alive until `finished` is set, below.
        let job = unsafe { &*job };
        for phase in job.phases {
            job.run(*phase, Side::Second);
            meetings += 1;
            shared.meet(1, meetings);
        }
        job.finished.store(true, Release);
        idle_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_runs_once_per_side_and_after_the_previous_one_on_both() {
        let caller = thread::current().id();
        // Other tests may hold the helper for a while: keep on until it has taken jobs too.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut on_two_cores = 0;
        for job in 0.. {
            if job >= 200 && (on_two_cores > 0 || Instant::now() > deadline) {
                break;
            }
            let log = Mutex::new(Vec::new());
            let log_ref = &log;
            let record = |step: usize| {
                move |side: Side| {
                    let entry = (step, side, thread::current().id());
                    log_ref.lock().unwrap().push(entry);
                }
            };
            let (a, b, c) = (record(0), record(1), record(2));
            let cores = run(Cores::Two, &[&a, &b, &c]);
            let log = log.into_inner().unwrap();
            assert_eq!(log.len(), 6);
            for (i, pair) in log.chunks(2).enumerate() {
                assert!(pair.iter().all(|&(step, ..)| step == i), "{log:?}");
                assert_ne!(pair[0].1, pair[1].1);
                for &(_, side, thread) in pair {
                    let here = side == Side::First || cores == Cores::One;
                    assert_eq!(thread == caller, here, "{side:?} on {cores:?}");
                }
            }
            on_two_cores += usize::from(cores == Cores::Two);
        }
        if rayon::current_num_threads() > 1 {
            assert!(on_two_cores > 0, "the helper never took a job");
        }
    }

    #[test]
    fn the_pacer_keeps_to_the_faster_choice_and_keeps_trying_the_other() {
        let mut pacer = Pacer::default();
        let mut now = Instant::now();
        let mut step = |pacer: &mut Pacer, two_takes: u64| {
            let cores = pacer.next_step_at(now);
            now += Duration::from_micros(if cores == Cores::Two { two_takes } else { 500 });
            cores
        };
        // Two cores slower than one: after a first sample of each, one it is, with trials of
        // two ever further apart.
        let first: Vec<Cores> = (0..3000).map(|_| step(&mut pacer, 900)).collect();
        let trial = TRIAL_STEPS;
        assert!(first[..trial].iter().all(|&c| c == Cores::Two));
        assert!(first[trial..2 * trial].iter().all(|&c| c == Cores::One));
        let starts: Vec<usize> = (1..first.len())
            .filter(|&i| first[i] == Cores::Two && first[i - 1] == Cores::One)
            .collect();
        let gaps: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0] - trial).collect();
        let expected = [120, 240, 480, 960, 960];
        assert_eq!(&gaps[..expected.len()], expected, "{starts:?}");
        assert_eq!(starts[0], 2 * trial + FIRST_INTERVAL as usize);
        for &start in &starts {
            assert!(first[start..start + trial].iter().all(|&c| c == Cores::Two));
            assert_eq!(first[start + trial], Cores::One);
        }
        // Two cores faster again: the next trial finds it, and the steps go back to two.
        let later: Vec<Cores> = (0..2000).map(|_| step(&mut pacer, 300)).collect();
        let back = later.iter().position(|&c| c == Cores::Two).unwrap();
        assert!(
            back <= LONGEST_INTERVAL as usize,
            "{back} steps before a trial"
        );
        // The trial of two cores wins: the step after it stays on two.
        assert!(later[back..back + trial].iter().all(|&c| c == Cores::Two));
        assert_eq!(later[back + trial], Cores::Two);
        assert_eq!(later.last(), Some(&Cores::Two));
    }

    #[test]
    fn a_panic_in_a_phase_is_raised_to_the_caller_and_the_helper_stays_usable() {
        let result = panic::catch_unwind(|| {
            run(
                Cores::Two,
                &[&|side| assert_eq!(side, Side::First, "the second side fails")],
            );
        });
        let panic = result.expect_err("the phase's panic reaches the caller");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(message.contains("the second side fails"), "{message}");
        let count = AtomicU64::new(0);
        run(
            Cores::Two,
            &[&|_| {
                count.fetch_add(1, SeqCst);
            }],
        );
        assert_eq!(count.load(SeqCst), 2);
    }
}
