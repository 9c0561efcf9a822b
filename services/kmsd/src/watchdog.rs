//! The watchdog: whether this process still makes progress, decided from outside the
//! runtime it watches.
//!
//! This module owns the progress probes (a runtime heartbeat task, the request path's
//! started/finished counters, a Raft core query task and the applied index from openraft's
//! metrics), the pure stall decision ([`Detector`]: time is an argument, no clock is read),
//! the OS thread that samples the probes every second ([`Watchdog`]), the [`Health`] that
//! `/livez` and `/readyz` read, the `kms_watchdog_stalled{loop}` gauge, and the optional
//! abort that lets a supervisor without HTTP probes restart a wedged node.
//!
//! A loop is *stalled* when it has had work pending and shown no progress for
//! `watchdog_stall_secs` (the runtime heartbeat and the Raft query always count as
//! pending). The thread is a plain `std::thread`: a runtime whose only worker is blocked
//! (a storage call that never returns) cannot run a task, but this thread still samples,
//! logs and, with `watchdog_abort_secs`, aborts the process.

use prometheus::{IntGaugeVec, Opts, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the watchdog thread samples the probes.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the runtime heartbeat task bumps its counter.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// How often the Raft probe task asks the Raft core for its committed index.
pub const RAFT_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The loops the watchdog watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loop {
    /// The tokio runtime: a task bumping a counter every 250 ms.
    Runtime,
    /// The Raft core: it answers a state query (its committed index).
    Raft,
    /// The state machine: committed log entries get applied.
    Apply,
    /// The KMS request path: started activations get answered.
    Requests,
}

impl Loop {
    /// Every loop, in index order.
    pub const ALL: [Loop; 4] = [Loop::Runtime, Loop::Raft, Loop::Apply, Loop::Requests];

    /// Metric label and the name `/livez` uses.
    pub fn label(self) -> &'static str {
        match self {
            Loop::Runtime => "runtime",
            Loop::Raft => "raft",
            Loop::Apply => "apply",
            Loop::Requests => "requests",
        }
    }

    /// What "no progress" means for this loop (log lines).
    pub fn meaning(self) -> &'static str {
        match self {
            Loop::Runtime => "the tokio runtime ran no task (heartbeat stopped)",
            Loop::Raft => "the Raft core answered no query",
            Loop::Apply => "committed log entries are not being applied",
            Loop::Requests => "activations in flight are not being answered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One observation of a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Work is waiting for this loop.
    pub pending: bool,
    /// A counter that moves whenever the loop makes progress.
    pub progress: u64,
}

/// One observation of every loop, indexed like [`Loop::ALL`].
pub type Samples = [Sample; 4];

/// When a loop counts as stalled and when the process aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// Pending without progress this long is a stall; None: the watchdog is off.
    pub stall_after: Option<Duration>,
    /// A stall this long aborts the process; None: never.
    pub abort_after: Option<Duration>,
}

impl Thresholds {
    /// From the config keys `watchdog_stall_secs` and `watchdog_abort_secs` (0 = off;
    /// without stall detection there is no abort).
    pub fn from_secs(stall_secs: u64, abort_secs: u64) -> Self {
        let stall_after = (stall_secs > 0).then(|| Duration::from_secs(stall_secs));
        Self {
            stall_after,
            abort_after: stall_after.and((abort_secs > 0).then(|| Duration::from_secs(abort_secs))),
        }
    }

    /// True when the watchdog watches anything.
    pub fn enabled(&self) -> bool {
        self.stall_after.is_some()
    }
}

/// A loop without progress, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The loop.
    pub stalled: Loop,
    /// Time since the loop last made progress or had nothing pending.
    pub idle: Duration,
}

/// What one round of samples changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    /// Every loop stalled now.
    pub stalled: Vec<Stall>,
    /// Loops that became stalled in this round.
    pub started: Vec<Stall>,
    /// Loops whose stall ended in this round, with how long they had gone without progress.
    pub ended: Vec<Stall>,
    /// The first stall that reached the abort threshold.
    pub abort: Option<Stall>,
    /// The watchdog itself had not run for this long (process paused, host starved): loops
    /// that were healthy before start a fresh wait instead of counting the gap.
    pub gap: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    progress: u64,
    /// Last round in which the loop progressed or had nothing pending.
    last_ok: Instant,
    stalled: bool,
}

/// The stall decision, free of clocks and threads: feed it samples with the time they were
/// taken.
#[derive(Debug, Clone)]
pub struct Detector {
    thresholds: Thresholds,
    max_gap: Duration,
    last_round: Option<Instant>,
    tracks: [Option<Track>; 4],
}

impl Detector {
    /// A detector; a round more than `max_gap` after the previous one is a gap in the
    /// watchdog's own schedule (see [`Round::gap`]).
    pub fn new(thresholds: Thresholds, max_gap: Duration) -> Self {
        Self {
            thresholds,
            max_gap,
            last_round: None,
            tracks: [None; 4],
        }
    }

    /// Takes one round of samples taken at `now`.
    pub fn observe(&mut self, now: Instant, samples: &Samples) -> Round {
        let mut round = Round::default();
        let Some(stall_after) = self.thresholds.stall_after else {
            return round;
        };
        let gap = self
            .last_round
            .map(|prev| now.saturating_duration_since(prev))
            .filter(|d| *d > self.max_gap);
        round.gap = gap;
        self.last_round = Some(now);
        for l in Loop::ALL {
            let sample = samples[l.index()];
            let slot = &mut self.tracks[l.index()];
            let Some(track) = slot else {
                // First sight: a baseline, nothing to compare with yet.
                *slot = Some(Track {
                    progress: sample.progress,
                    last_ok: now,
                    stalled: false,
                });
                continue;
            };
            let progressed = sample.progress != track.progress;
            track.progress = sample.progress;
            let idle_before = now.saturating_duration_since(track.last_ok);
            if progressed || !sample.pending || (gap.is_some() && !track.stalled) {
                track.last_ok = now;
            }
            let idle = now.saturating_duration_since(track.last_ok);
            let stalled = sample.pending && idle >= stall_after;
            if stalled && !track.stalled {
                round.started.push(Stall { stalled: l, idle });
            } else if !stalled && track.stalled {
                round.ended.push(Stall {
                    stalled: l,
                    idle: idle_before,
                });
            }
            track.stalled = stalled;
            if stalled {
                let stall = Stall { stalled: l, idle };
                round.stalled.push(stall);
                if round.abort.is_none() && self.thresholds.abort_after.is_some_and(|a| idle >= a) {
                    round.abort = Some(stall);
                }
            }
        }
        round
    }
}

/// The current verdict, shared by the watchdog thread (writer) and the admin API
/// (`/livez`, `/readyz`).
#[derive(Debug, Default)]
pub struct Health {
    /// Per loop: milliseconds without progress while stalled; 0 while healthy.
    stalled_ms: [AtomicU64; 4],
}

impl Health {
    /// The loops stalled now (empty when healthy or when the watchdog is off).
    pub fn stalls(&self) -> Vec<Stall> {
        Loop::ALL
            .into_iter()
            .filter_map(
                |l| match self.stalled_ms[l.index()].load(Ordering::Relaxed) {
                    0 => None,
                    ms => Some(Stall {
                        stalled: l,
                        idle: Duration::from_millis(ms),
                    }),
                },
            )
            .collect()
    }

    /// Why the node is not live, e.g. `stalled: requests (no progress for 12 s with work
    /// pending)`; None while every loop progresses.
    pub fn reason(&self) -> Option<String> {
        let stalls = self.stalls();
        if stalls.is_empty() {
            return None;
        }
        let parts: Vec<String> = stalls
            .iter()
            .map(|s| {
                format!(
                    "{} (no progress for {} s with work pending)",
                    s.stalled.label(),
                    s.idle.as_secs()
                )
            })
            .collect();
        Some(format!("stalled: {}", parts.join(", ")))
    }

    fn publish(&self, round: &Round) {
        let mut now = [0u64; 4];
        for s in &round.stalled {
            now[s.stalled.index()] = (s.idle.as_millis() as u64).max(1);
        }
        for (slot, v) in self.stalled_ms.iter().zip(now) {
            slot.store(v, Ordering::Relaxed);
        }
    }
}

/// Started and finished activations on the request path (pending = started > finished,
/// progress = finished).
#[derive(Debug, Default)]
pub struct RequestProgress {
    started: AtomicU64,
    finished: AtomicU64,
}

impl RequestProgress {
    /// Counts a request as started; dropping the guard counts it as finished (also when
    /// the request future is dropped).
    pub fn begin(&self) -> InFlight<'_> {
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The sample of the request loop.
    pub fn sample(&self) -> Sample {
        // Finished first: a request counted between the two loads can only add to started.
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        Sample {
            pending: started > finished,
            progress: finished,
        }
    }
}

/// A request in flight (see [`RequestProgress::begin`]).
#[derive(Debug)]
pub struct InFlight<'a>(&'a RequestProgress);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// What the runtime-side probe tasks publish for the watchdog thread.
#[derive(Debug, Default)]
pub struct RuntimeProbes {
    /// Bumped every [`HEARTBEAT_INTERVAL`] by a runtime task.
    heartbeat: AtomicU64,
    /// Answers the Raft core gave to the probe's state query.
    raft_answers: AtomicU64,
    /// The committed index the Raft core reported, plus one (0: none yet).
    committed: AtomicU64,
}

impl RuntimeProbes {
    /// The runtime heartbeat: always pending, progress = beats.
    pub fn runtime_sample(&self) -> Sample {
        Sample {
            pending: true,
            progress: self.heartbeat.load(Ordering::Relaxed),
        }
    }

    /// The Raft core: always pending, progress = answered queries.
    pub fn raft_sample(&self) -> Sample {
        Sample {
            pending: true,
            progress: self.raft_answers.load(Ordering::Relaxed),
        }
    }

    /// The apply loop, given the applied index from openraft's metrics: pending while the
    /// committed index the core last reported is ahead of it, progress = the applied index.
    pub fn apply_sample(&self, applied: Option<u64>) -> Sample {
        let committed = self.committed.load(Ordering::Relaxed).checked_sub(1);
        Sample {
            pending: committed > applied,
            progress: applied.map_or(0, |a| a + 1),
        }
    }

    /// Runs the heartbeat: bumps a counter every [`HEARTBEAT_INTERVAL`] until aborted.
    pub async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the Raft core for its committed index every [`RAFT_PROBE_INTERVAL`] until
    /// aborted. openraft's metrics carry no committed index; a follower learns it only in
    /// the core's state.
    pub async fn raft_probe(self: Arc<Self>, raft: kms_cluster::Raft) {
        let mut tick = tokio::time::interval(RAFT_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A stopped core answers with an error at once: that is an answer too (the
            // fatal path stops the daemon).
            if let Ok(committed) = raft.with_raft_state(|s| s.committed.map(|l| l.index)).await {
                self.committed
                    .store(committed.map_or(0, |c| c + 1), Ordering::Relaxed);
            }
            self.raft_answers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `kms_watchdog_stalled{loop}` gauge (1 while the loop is stalled).
#[derive(Debug, Clone)]
pub struct StallGauge(IntGaugeVec);

impl StallGauge {
    /// Registers the gauge (every loop at 0) in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let g = IntGaugeVec::new(
            Opts::new(
                "kms_watchdog_stalled",
                "1 while the watchdog finds this loop stalled: work pending and no progress for watchdog_stall_secs.",
            ),
            &["loop"],
        )?;
        registry.register(Box::new(g.clone()))?;
        for l in Loop::ALL {
            g.with_label_values(&[l.label()]).set(0);
        }
        Ok(Self(g))
    }

    fn publish(&self, round: &Round) {
        for l in Loop::ALL {
            let on = round.stalled.iter().any(|s| s.stalled == l);
            self.0.with_label_values(&[l.label()]).set(i64::from(on));
        }
    }
}

/// Errors starting the watchdog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchdogError {
    /// The OS refused to start the thread.
    #[error("cannot start the watchdog thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The running watchdog thread; dropping it (or [`Watchdog::stop`]) ends the thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread: every `interval` it calls `sample`, feeds a [`Detector`],
    /// publishes the verdict to `health` and `gauge`, logs one line when a stall starts and
    /// one when it ends, and aborts the process when a stall reaches the abort threshold.
    /// With the watchdog off (`thresholds.stall_after` None) no thread is started.
    pub fn spawn(
        thresholds: Thresholds,
        interval: Duration,
        mut sample: impl FnMut() -> Samples + Send + 'static,
        health: Arc<Health>,
        gauge: Option<StallGauge>,
    ) -> Result<Self, WatchdogError> {
        if !thresholds.enabled() {
            return Ok(Self {
                stop: None,
                thread: None,
            });
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kmsd-watchdog".into())
            .spawn(move || {
                let mut detector = Detector::new(thresholds, interval * 3);
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Stop requested, or the handle is gone.
                        _ => return,
                    }
                    let round = detector.observe(Instant::now(), &sample());
                    // The gauge first: whoever sees /livez change sees the metric agree.
                    if let Some(g) = &gauge {
                        g.publish(&round);
                    }
                    health.publish(&round);
                    report(&round, thresholds);
                    if let Some(s) = round.abort {
                        tracing::error!(
                            stalled_loop = s.stalled.label(),
                            idle_secs = s.idle.as_secs(),
                            "watchdog: {} for {} s (watchdog_abort_secs reached); aborting so the supervisor restarts the node",
                            s.stalled.meaning(),
                            s.idle.as_secs()
                        );
                        // The log writer is a background thread: give it a moment.
                        std::thread::sleep(Duration::from_millis(300));
                        std::process::abort();
                    }
                }
            })
            .map_err(WatchdogError::Spawn)?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one sample interval).
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One log line per stall start and end.
fn report(round: &Round, thresholds: Thresholds) {
    if let Some(gap) = round.gap {
        tracing::warn!(
            gap_ms = gap.as_millis() as u64,
            "watchdog: its own thread did not run for {} ms (process paused or host starved); healthy loops start a fresh wait",
            gap.as_millis()
        );
    }
    for s in &round.started {
        tracing::error!(
            stalled_loop = s.stalled.label(),
            idle_secs = s.idle.as_secs(),
            abort_after_secs = thresholds.abort_after.map(|a| a.as_secs()),
            "watchdog: stall: {} for {} s; /livez and /readyz answer 503",
            s.stalled.meaning(),
            s.idle.as_secs()
        );
    }
    for s in &round.ended {
        tracing::info!(
            stalled_loop = s.stalled.label(),
            idle_secs = s.idle.as_secs(),
            "watchdog: stall ended: {} progresses again after {} s",
            s.stalled.label(),
            s.idle.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 10;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn detector(stall: u64, abort: u64) -> Detector {
        Detector::new(Thresholds::from_secs(stall, abort), secs(3))
    }

    /// Every loop idle and not pending, except `l` with `s`.
    fn only(l: Loop, s: Sample) -> Samples {
        let mut all = [Sample::default(); 4];
        all[l.index()] = s;
        all
    }

    fn pending(progress: u64) -> Sample {
        Sample {
            pending: true,
            progress,
        }
    }

    /// Feeds one round per second from `t0 + from` to `t0 + to` (inclusive).
    fn run(d: &mut Detector, t0: Instant, from: u64, to: u64, s: Samples) -> Round {
        let mut last = Round::default();
        for t in from..=to {
            last = d.observe(t0 + secs(t), &s);
        }
        last
    }

    #[test]
    fn pending_without_progress_stalls_at_exactly_n_seconds() {
        for l in Loop::ALL {
            let mut d = detector(N, 0);
            let t0 = Instant::now();
            // Baseline at 0 with nothing pending, then pending with no progress.
            d.observe(t0, &only(l, Sample::default()));
            let r = run(&mut d, t0, 1, N - 1, only(l, pending(0)));
            assert!(r.stalled.is_empty(), "{l:?} at N-1 s: {r:?}");
            assert!(r.started.is_empty());
            let r = d.observe(t0 + secs(N), &only(l, pending(0)));
            assert_eq!(
                r.started,
                vec![Stall {
                    stalled: l,
                    idle: secs(N)
                }],
                "{l:?}"
            );
            assert_eq!(r.stalled, r.started);
            // Still stalled a second later, but the start is reported only once.
            let r = d.observe(t0 + secs(N + 1), &only(l, pending(0)));
            assert!(r.started.is_empty());
            assert_eq!(r.stalled[0].idle, secs(N + 1));
        }
    }

    #[test]
    fn progress_resumes_and_the_stall_ends_once() {
        let mut d = detector(N, 0);
        let t0 = Instant::now();
        d.observe(t0, &only(Loop::Apply, pending(5)));
        let r = run(&mut d, t0, 1, N + 2, only(Loop::Apply, pending(5)));
        assert_eq!(r.stalled.len(), 1);
        // The applied index moves: healthy at once, the end reported with the idle time.
        let r = d.observe(t0 + secs(N + 3), &only(Loop::Apply, pending(6)));
        assert!(r.stalled.is_empty());
        assert_eq!(
            r.ended,
            vec![Stall {
                stalled: Loop::Apply,
                idle: secs(N + 3)
            }]
        );
        let r = d.observe(t0 + secs(N + 4), &only(Loop::Apply, pending(7)));
        assert!(r.ended.is_empty() && r.stalled.is_empty());
        // A new wait starts from the last progress: N-1 s later still fine.
        let r = run(&mut d, t0, N + 5, 2 * N + 3, only(Loop::Apply, pending(7)));
        assert!(r.stalled.is_empty(), "{r:?}");
        let r = d.observe(t0 + secs(2 * N + 4), &only(Loop::Apply, pending(7)));
        assert_eq!(r.started.len(), 1);
    }

    #[test]
    fn steady_progress_is_never_a_stall() {
        let mut d = detector(N, N);
        let t0 = Instant::now();
        for t in 0..100 {
            let r = d.observe(t0 + secs(t), &only(Loop::Requests, pending(t)));
            assert!(r.stalled.is_empty() && r.abort.is_none());
        }
    }

    #[test]
    fn no_pending_work_is_never_a_stall() {
        let mut d = detector(N, N);
        let t0 = Instant::now();
        let idle = Sample {
            pending: false,
            progress: 3,
        };
        let r = run(&mut d, t0, 0, 10 * N, [idle; 4]);
        assert_eq!(r, Round::default());
        // Pending work that vanishes without a progress counter moving ends a stall too.
        let r = run(
            &mut d,
            t0,
            10 * N + 1,
            11 * N + 1,
            only(Loop::Raft, pending(3)),
        );
        assert_eq!(r.stalled.len(), 1);
        let r = d.observe(t0 + secs(11 * N + 2), &only(Loop::Raft, idle));
        assert_eq!(r.ended.len(), 1);
        assert!(r.stalled.is_empty());
    }

    #[test]
    fn zero_disables_the_watchdog_and_its_abort() {
        let t = Thresholds::from_secs(0, 30);
        assert!(!t.enabled());
        assert_eq!(t.abort_after, None);
        let mut d = Detector::new(t, secs(3));
        let t0 = Instant::now();
        let r = run(&mut d, t0, 0, 1000, [pending(0); 4]);
        assert_eq!(r, Round::default());
    }

    #[test]
    fn abort_only_after_its_own_threshold() {
        let mut d = detector(N, 3 * N);
        let t0 = Instant::now();
        d.observe(t0, &only(Loop::Runtime, pending(1)));
        let r = run(&mut d, t0, 1, 3 * N - 1, only(Loop::Runtime, pending(1)));
        assert_eq!(r.stalled.len(), 1);
        assert_eq!(r.abort, None);
        let r = d.observe(t0 + secs(3 * N), &only(Loop::Runtime, pending(1)));
        assert_eq!(
            r.abort,
            Some(Stall {
                stalled: Loop::Runtime,
                idle: secs(3 * N)
            })
        );
        // Without an abort threshold a stall never aborts.
        let mut d = detector(N, 0);
        let r = run(&mut d, t0, 0, 100 * N, only(Loop::Runtime, pending(1)));
        assert_eq!(r.stalled.len(), 1);
        assert_eq!(r.abort, None);
    }

    #[test]
    fn loops_are_judged_independently() {
        let mut d = detector(N, 0);
        let t0 = Instant::now();
        for t in 0..=N {
            let mut s = [pending(t); 4];
            s[Loop::Apply.index()] = pending(0);
            let r = d.observe(t0 + secs(t), &s);
            if t == N {
                assert_eq!(r.started.len(), 1);
                assert_eq!(r.started[0].stalled, Loop::Apply);
            } else {
                assert!(r.stalled.is_empty());
            }
        }
    }

    #[test]
    fn a_gap_in_the_watchdogs_own_schedule_is_not_a_stall() {
        // The process was paused for a minute (docker pause, SIGSTOP): the heartbeat did
        // not move, but neither did the watchdog; healthy loops start a fresh wait.
        let mut d = detector(N, 2 * N);
        let t0 = Instant::now();
        d.observe(t0, &[pending(1); 4]);
        let r = d.observe(t0 + secs(60), &[pending(1); 4]);
        assert_eq!(r.gap, Some(secs(60)));
        assert!(r.stalled.is_empty() && r.abort.is_none());
        let r = run(&mut d, t0, 61, 60 + N - 1, [pending(1); 4]);
        assert!(r.stalled.is_empty());
        let r = d.observe(t0 + secs(60 + N), &[pending(1); 4]);
        assert_eq!(r.started.len(), 4);
        // A loop already stalled stays stalled across a gap, and the gap counts.
        let r = d.observe(t0 + secs(60 + N + 30), &[pending(1); 4]);
        assert!(r.gap.is_some());
        assert_eq!(r.stalled.len(), 4);
        assert_eq!(r.stalled[0].idle, secs(N + 30));
        assert!(r.abort.is_some());
    }

    #[test]
    fn health_names_the_stalled_loop() {
        let h = Health::default();
        assert_eq!(h.reason(), None);
        h.publish(&Round {
            stalled: vec![Stall {
                stalled: Loop::Requests,
                idle: Duration::from_millis(12_400),
            }],
            ..Round::default()
        });
        assert_eq!(
            h.reason().as_deref(),
            Some("stalled: requests (no progress for 12 s with work pending)")
        );
        h.publish(&Round::default());
        assert_eq!(h.reason(), None);
    }

    #[test]
    fn request_progress_counts_dropped_requests_as_finished() {
        let p = RequestProgress::default();
        assert!(!p.sample().pending);
        let a = p.begin();
        let b = p.begin();
        assert_eq!(
            p.sample(),
            Sample {
                pending: true,
                progress: 0
            }
        );
        drop(a);
        assert_eq!(
            p.sample(),
            Sample {
                pending: true,
                progress: 1
            }
        );
        drop(b);
        assert!(!p.sample().pending);
    }

    #[test]
    fn apply_sample_compares_committed_with_applied() {
        let p = RuntimeProbes::default();
        // Nothing committed yet: nothing pending.
        assert!(!p.apply_sample(None).pending);
        p.committed.store(8, Ordering::Relaxed); // index 7
        assert!(p.apply_sample(Some(6)).pending);
        assert!(!p.apply_sample(Some(7)).pending);
        assert!(p.apply_sample(None).pending);
        assert_ne!(
            p.apply_sample(Some(6)).progress,
            p.apply_sample(Some(7)).progress
        );
    }

    #[test]
    fn the_thread_publishes_a_stall_and_its_end() {
        let health = Arc::new(Health::default());
        let registry = Registry::new();
        let gauge = StallGauge::register(&registry).unwrap();
        let moving = Arc::new(AtomicU64::new(0));
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (m, f) = (moving.clone(), frozen.clone());
        let w = Watchdog::spawn(
            Thresholds {
                stall_after: Some(Duration::from_millis(100)),
                abort_after: None,
            },
            Duration::from_millis(10),
            move || {
                let mut s = [pending(m.fetch_add(1, Ordering::Relaxed)); 4];
                if f.load(Ordering::Relaxed) {
                    s[Loop::Requests.index()] = pending(0);
                }
                s
            },
            health.clone(),
            Some(gauge),
        )
        .unwrap();
        let gauge_value = |l: &str| {
            let mut text = String::new();
            prometheus::TextEncoder::new()
                .encode_utf8(&registry.gather(), &mut text)
                .unwrap();
            let series = format!("kms_watchdog_stalled{{loop=\"{l}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let deadline = Instant::now() + secs(10);
        while health.reason().is_none() {
            assert!(Instant::now() < deadline, "no stall seen");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(health.reason().unwrap().starts_with("stalled: requests"));
        assert_eq!(gauge_value("requests"), Some(1.0));
        assert_eq!(gauge_value("runtime"), Some(0.0));
        frozen.store(false, Ordering::Relaxed);
        while health.reason().is_some() {
            assert!(Instant::now() < deadline, "the stall did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(gauge_value("requests"), Some(0.0));
        w.stop();
    }
}
