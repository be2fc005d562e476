//! Simulated load: several services sending events at varying, bursty rates to several nodes
//! (the log monitoring seed's simulator), the engine of `logmesh sim` and `logmesh e2e`.
//!
//! Each service is one task: every [`TICK`] it draws its current rate from a [`RateModel`]
//! (a slow random walk around the base rate, with occasional bursts), sends that many events
//! as one batch through the shared [`Sender`] and waits for the outcome before the next tick.
//! So a node that sheds load (503 + `Retry-After`) slows the services down instead of
//! being hammered, and no service has more than one request in flight.

use super::{ClientEvent, NodeCounts, Outcome, Sender};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a service decides how much to send.
pub const TICK: Duration = Duration::from_millis(100);
/// Service names the simulation uses, in order (`--services` takes the first N, then
/// numbered ones).
const SERVICE_NAMES: [&str; 8] = [
    "checkout",
    "payments",
    "auth",
    "search",
    "inventory",
    "shipping",
    "email",
    "gateway",
];
/// Severities with weights: mostly info, some noise, rare fatal.
const SEVERITIES: [(&str, u32); 6] = [
    ("info", 60),
    ("debug", 15),
    ("warn", 14),
    ("error", 8),
    ("trace", 2),
    ("fatal", 1),
];
const MESSAGES: [&str; 6] = [
    "request served",
    "order paid",
    "cache miss",
    "upstream timed out",
    "retrying connection",
    "user signed in",
];

/// The shape of the simulated load, shared by `sim` and `e2e`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// How many simulated services.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub services: u32,
    /// Each service's base rate in events per second; actual rates wander around it and burst
    /// to several times it.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
}

/// A service's rate over time: a bounded random walk around the base rate, and now and then
/// a burst of a few times the base rate for a second or three.
#[derive(Debug, Clone)]
pub struct RateModel {
    base: f64,
    /// Multiplier of the base rate outside bursts, wandering within 0.3 ..= 1.7.
    level: f64,
    burst_ticks_left: u32,
    burst_factor: f64,
    /// Fractional events carried to the next tick, so that low rates still send.
    carry: f64,
}

/// Chance per tick that a burst starts (about one every 5 s per service).
const BURST_CHANCE: f64 = 0.02;

impl RateModel {
    pub fn new(base_per_second: f64) -> RateModel {
        RateModel {
            base: base_per_second,
            level: 1.0,
            burst_ticks_left: 0,
            burst_factor: 1.0,
            carry: 0.0,
        }
    }

    /// How many events to send in the next tick of `tick`.
    pub fn next_batch(&mut self, tick: Duration, rng: &mut impl Rng) -> usize {
        self.level = (self.level + rng.random_range(-0.05..0.05)).clamp(0.3, 1.7);
        if self.burst_ticks_left > 0 {
            self.burst_ticks_left -= 1;
        } else if rng.random_bool(BURST_CHANCE) {
            self.burst_ticks_left = rng.random_range(10..30);
            self.burst_factor = rng.random_range(3.0..8.0);
        }
        let factor = if self.burst_ticks_left > 0 {
            self.burst_factor
        } else {
            self.level
        };
        let wanted = self.base * factor * tick.as_secs_f64() + self.carry;
        let whole = wanted.floor();
        self.carry = wanted - whole;
        whole as usize
    }
}

/// What a simulation needs to know besides the sender.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Prefixes every event id, so the ids of one run are unique and recognisable.
    pub id_prefix: String,
    /// The full service names, one task each.
    pub services: Vec<String>,
    pub base_rate: u32,
    pub duration: Duration,
    /// Added to every event, e.g. `{"run":"…"}`.
    pub attributes: Option<String>,
}

impl Simulation {
    /// `services` service names from [`SERVICE_NAMES`], each with `prefix` in front.
    pub fn service_names(prefix: &str, services: u32) -> Vec<String> {
        (0..services as usize)
            .map(|i| match SERVICE_NAMES.get(i) {
                Some(name) => format!("{prefix}{name}"),
                None => format!("{prefix}service{i}"),
            })
            .collect()
    }
}

/// Totals of a simulation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimSummary {
    pub seconds: f64,
    pub events_sent: u64,
    pub events_acknowledged: u64,
    pub events_rejected: u64,
    /// Events of batches no node acknowledged in time.
    pub events_not_acknowledged: u64,
    pub acknowledged_per_second: f64,
    pub nodes: Vec<NodeCounts>,
}

/// Told about every batch once its outcome is known (e2e keeps its tally here).
pub type Observer = Arc<dyn Fn(&[ClientEvent], &Outcome) + Send + Sync>;

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    not_acknowledged: AtomicU64,
}

/// Runs the simulation to its end; every batch's outcome goes to `observer`.
pub async fn simulate(
    simulation: &Simulation,
    sender: Arc<Sender>,
    observer: Observer,
    progress: &ProgressBar,
) -> SimSummary {
    let started = Instant::now();
    let deadline = started + simulation.duration;
    let totals = Arc::new(Totals::default());
    let sequence = Arc::new(AtomicU64::new(0));
    let attributes = simulation
        .attributes
        .as_ref()
        .map(|text| RawValue::from_string(text.clone()).expect("simulation attributes are JSON"));
    let mut tasks = Vec::new();
    for service in &simulation.services {
        let (sender, observer, totals, sequence) = (
            sender.clone(),
            observer.clone(),
            totals.clone(),
            sequence.clone(),
        );
        let (service, prefix, attributes) = (
            service.clone(),
            simulation.id_prefix.clone(),
            attributes.clone(),
        );
        let base = f64::from(simulation.base_rate);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(rand::random());
            let mut rates = RateModel::new(base);
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                ticker.tick().await;
                let n = rates.next_batch(TICK, &mut rng);
                if n == 0 {
                    continue;
                }
                let events: Vec<ClientEvent> = (0..n)
                    .map(|_| {
                        let id = sequence.fetch_add(1, Ordering::Relaxed);
                        ClientEvent {
                            id: format!("{prefix}{id}"),
                            timestamp: None,
                            service: service.clone(),
                            severity: pick_severity(&mut rng).to_owned(),
                            message: format!(
                                "{} #{id}",
                                MESSAGES[rng.random_range(0..MESSAGES.len())]
                            ),
                            attributes: attributes.clone(),
                        }
                    })
                    .collect();
                totals.sent.fetch_add(n as u64, Ordering::Relaxed);
                let outcome = sender.send(&events).await;
                let counter = match outcome {
                    Outcome::Acknowledged { .. } => &totals.acknowledged,
                    Outcome::Rejected { .. } => &totals.rejected,
                    Outcome::GaveUp { .. } => &totals.not_acknowledged,
                };
                counter.fetch_add(n as u64, Ordering::Relaxed);
                observer(&events, &outcome);
            }
        }));
    }
    let ticker = {
        let (totals, progress) = (totals.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                progress.set_position(started.elapsed().as_millis() as u64);
                progress.set_message(format!(
                    "{} events acknowledged, {} rejected, {} not acknowledged",
                    totals.acknowledged.load(Ordering::Relaxed),
                    totals.rejected.load(Ordering::Relaxed),
                    totals.not_acknowledged.load(Ordering::Relaxed)
                ));
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    ticker.abort();
    let seconds = started.elapsed().as_secs_f64();
    let acknowledged = totals.acknowledged.load(Ordering::Relaxed);
    SimSummary {
        seconds,
        events_sent: totals.sent.load(Ordering::Relaxed),
        events_acknowledged: acknowledged,
        events_rejected: totals.rejected.load(Ordering::Relaxed),
        events_not_acknowledged: totals.not_acknowledged.load(Ordering::Relaxed),
        acknowledged_per_second: acknowledged as f64 / seconds.max(1e-9),
        nodes: sender.counts(),
    }
}

pub(crate) fn pick_severity(rng: &mut impl Rng) -> &'static str {
    let total: u32 = SEVERITIES.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (name, weight) in SEVERITIES {
        if roll < weight {
            return name;
        }
        roll -= weight;
    }
    "info"
}

/// A progress bar on stderr over `duration` (drawn only when stderr is a terminal).
pub fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar
}

/// A short random tag for a run: 8 hex digits.
pub fn run_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl SimSummary {
    /// The summary for the terminal: totals, then one line per node.
    pub fn render(&self) -> String {
        let mut out = format!(
            "sent {} events in {:.1} s: {} acknowledged, {} rejected, {} not acknowledged; \
             {:.0} events/s\n",
            self.events_sent,
            self.seconds,
            self.events_acknowledged,
            self.events_rejected,
            self.events_not_acknowledged,
            self.acknowledged_per_second
        );
        for node in &self.nodes {
            out.push_str(&format!(
                "  {}: {} sent, {} acknowledged, {} rejected, {} requests shed (503), {} failed\n",
                node.url,
                node.events_sent,
                node.events_acknowledged,
                node.events_rejected,
                node.requests_shed_503,
                node.requests_failed
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_wander_and_burst_but_average_near_the_base() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut model = RateModel::new(100.0);
        let ticks = 10 * 600; // ten minutes
        let batches: Vec<usize> = (0..ticks)
            .map(|_| model.next_batch(TICK, &mut rng))
            .collect();
        let total: usize = batches.iter().sum();
        let mean_per_second = total as f64 / (ticks as f64 * TICK.as_secs_f64());
        assert!(
            (60.0..400.0).contains(&mean_per_second),
            "mean {mean_per_second}/s"
        );
        let max = *batches.iter().max().unwrap();
        assert!(max >= 30, "no burst in ten minutes: max batch {max}");
        assert!(batches.iter().any(|&n| n < 10), "the rate never dipped");
    }

    #[test]
    fn low_rates_still_send_thanks_to_the_carry() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut model = RateModel::new(1.0);
        let total: usize = (0..600).map(|_| model.next_batch(TICK, &mut rng)).sum();
        assert!(total > 20, "{total} events in a minute at ~1/s");
    }

    #[test]
    fn severities_follow_their_weights() {
        let mut rng = StdRng::seed_from_u64(3);
        let picks: Vec<&str> = (0..10_000).map(|_| pick_severity(&mut rng)).collect();
        let info = picks.iter().filter(|s| **s == "info").count();
        assert!((5_000..7_000).contains(&info), "{info} info of 10,000");
        assert!(picks.contains(&"fatal"));
    }

    #[test]
    fn service_names_are_prefixed_and_numbered_past_the_list() {
        let names = Simulation::service_names("e2e-ab12-", 10);
        assert_eq!(names[0], "e2e-ab12-checkout");
        assert_eq!(names[9], "e2e-ab12-service9");
    }
}
