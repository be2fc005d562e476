//! The tally of what a run sent and what the nodes acknowledged, and the verdict: does what the
//! cluster holds match it? Plain data in, plain data out; the HTTP that fills [`Observed`]
//! lives in `observe.rs`.
//!
//! What must hold for a run to pass:
//! - every acknowledged id is in `service_logs` exactly once;
//! - nothing of the run is stored that the run never sent;
//! - per service and severity, `service_severity` = rows in `service_logs` = events the run
//!   had acknowledged (plus events stored whose 202 never arrived, see below);
//! - every member's event log file holds every acknowledged event.
//!
//! An event whose request failed without an answer (a node killed mid-request) may have been
//! made durable before the node died. Such "in doubt" events may be stored and are then counted
//! like acknowledged ones; they are never required.

use crate::client::ClientEvent;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many example ids a problem names.
const EXAMPLES: usize = 5;

/// (service, severity)
pub type Key = (String, String);

/// Every event the run sent, and which were acknowledged.
#[derive(Debug, Default)]
pub struct Tally {
    sent: HashMap<String, Key>,
    acknowledged: HashSet<String>,
}

impl Tally {
    /// Notes a batch and whether a node answered 202 for it.
    pub fn record(&mut self, events: &[ClientEvent], acknowledged: bool) {
        for event in events {
            self.sent.insert(
                event.id.clone(),
                (event.service.clone(), event.severity.clone()),
            );
            if acknowledged {
                self.acknowledged.insert(event.id.clone());
            }
        }
    }

    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.len() as u64
    }

    pub fn sent(&self) -> u64 {
        self.sent.len() as u64
    }
}

/// One id as the store's search reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub service: String,
    pub severity: String,
    /// How many rows carried this id (more than one is a failure).
    pub rows: u64,
}

/// What the cluster holds for the run.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// The run's `service_severity` rows.
    pub stats: BTreeMap<Key, i64>,
    /// The run's `service_logs` rows, by id.
    pub stored: HashMap<String, StoredRow>,
    /// Per cluster member: how many lines of its event log carry each id of the run.
    pub event_logs: BTreeMap<String, HashMap<String, u64>>,
    /// Problems met while observing (a member that could not be read, say).
    pub errors: Vec<String>,
}

/// Per service and severity: the three numbers that must agree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyCounts {
    pub service: String,
    pub severity: String,
    pub acknowledged: u64,
    /// Stored although their 202 never arrived (allowed, see the module doc).
    pub stored_in_doubt: u64,
    pub service_logs_rows: u64,
    pub service_severity_count: i64,
}

/// One member's event log file against the tally.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventLogCheck {
    pub member: String,
    pub lines: u64,
    pub acknowledged_missing: u64,
    /// Lines for an id already logged: allowed (a retried request is logged again; the store
    /// keeps one row).
    pub repeated_lines: u64,
}

/// The verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub passed: bool,
    pub events_sent: u64,
    pub acknowledged: u64,
    pub service_logs_rows: u64,
    pub service_severity_total: i64,
    pub stored_in_doubt: u64,
    pub missing_from_store: u64,
    pub stored_more_than_once: u64,
    pub stored_but_never_sent: u64,
    pub counts: Vec<KeyCounts>,
    pub event_logs: Vec<EventLogCheck>,
    /// Every failed check, one sentence each.
    pub problems: Vec<String>,
}

/// Adds "<n> <what> (e.g. a few ids)" to `problems` when `ids` is not empty; returns n.
fn note_ids(problems: &mut Vec<String>, mut ids: Vec<&String>, what: &str) -> u64 {
    if !ids.is_empty() {
        ids.sort();
        let shown: Vec<&str> = ids.iter().take(EXAMPLES).map(|s| s.as_str()).collect();
        problems.push(format!("{} {what} (e.g. {})", ids.len(), shown.join(", ")));
    }
    ids.len() as u64
}

/// Compares what the cluster holds with what the run sent and had acknowledged.
pub fn verify(tally: &Tally, observed: &Observed) -> Verification {
    let mut problems = observed.errors.clone();
    let missing = note_ids(
        &mut problems,
        tally
            .acknowledged
            .iter()
            .filter(|id| !observed.stored.contains_key(*id))
            .collect(),
        "acknowledged events are not in service_logs",
    );
    let twice = note_ids(
        &mut problems,
        observed
            .stored
            .iter()
            .filter(|(_, row)| row.rows > 1)
            .map(|(id, _)| id)
            .collect(),
        "events are in service_logs more than once",
    );
    let never_sent = note_ids(
        &mut problems,
        observed
            .stored
            .keys()
            .filter(|id| !tally.sent.contains_key(*id))
            .collect(),
        "events of the run are in service_logs but were never sent",
    );
    let mut wrong_key = Vec::new();
    let mut counts: BTreeMap<Key, KeyCounts> = BTreeMap::new();
    fn slot<'a>(counts: &'a mut BTreeMap<Key, KeyCounts>, key: &Key) -> &'a mut KeyCounts {
        counts.entry(key.clone()).or_insert_with(|| KeyCounts {
            service: key.0.clone(),
            severity: key.1.clone(),
            acknowledged: 0,
            stored_in_doubt: 0,
            service_logs_rows: 0,
            service_severity_count: 0,
        })
    }
    for id in &tally.acknowledged {
        slot(&mut counts, &tally.sent[id]).acknowledged += 1;
    }
    let mut in_doubt = 0;
    for (id, row) in &observed.stored {
        let key = (row.service.clone(), row.severity.clone());
        slot(&mut counts, &key).service_logs_rows += row.rows;
        match tally.sent.get(id) {
            Some(sent) if *sent != key => wrong_key.push(id),
            Some(_) if !tally.acknowledged.contains(id) => {
                in_doubt += 1;
                slot(&mut counts, &key).stored_in_doubt += 1;
            }
            _ => {}
        }
    }
    note_ids(
        &mut problems,
        wrong_key,
        "events are stored with another service or severity than sent",
    );
    for (key, count) in &observed.stats {
        slot(&mut counts, key).service_severity_count = *count;
    }
    for key in counts.values() {
        let expected = key.acknowledged + key.stored_in_doubt;
        if key.service_logs_rows != expected || key.service_severity_count != expected as i64 {
            problems.push(format!(
                "{} {}: {} acknowledged (+{} in doubt), {} rows in service_logs, count {} in \
                 service_severity",
                key.service,
                key.severity,
                key.acknowledged,
                key.stored_in_doubt,
                key.service_logs_rows,
                key.service_severity_count
            ));
        }
    }
    let mut event_logs = Vec::new();
    for (member, ids) in &observed.event_logs {
        let missing = note_ids(
            &mut problems,
            tally
                .acknowledged
                .iter()
                .filter(|id| !ids.contains_key(*id))
                .collect(),
            &format!("acknowledged events are missing from {member}'s event log"),
        );
        event_logs.push(EventLogCheck {
            member: member.clone(),
            lines: ids.values().sum(),
            acknowledged_missing: missing,
            repeated_lines: ids.values().map(|n| n.saturating_sub(1)).sum(),
        });
    }
    if observed.event_logs.is_empty() {
        problems.push("no cluster member's event log could be read".into());
    }
    let service_logs_rows = observed.stored.values().map(|row| row.rows).sum();
    Verification {
        passed: problems.is_empty(),
        events_sent: tally.sent(),
        acknowledged: tally.acknowledged(),
        service_logs_rows,
        service_severity_total: observed.stats.values().sum(),
        stored_in_doubt: in_doubt,
        missing_from_store: missing,
        stored_more_than_once: twice,
        stored_but_never_sent: never_sent,
        counts: counts.into_values().collect(),
        event_logs,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, service: &str, severity: &str) -> ClientEvent {
        ClientEvent {
            id: id.into(),
            timestamp: None,
            service: service.into(),
            severity: severity.into(),
            message: "m".into(),
            attributes: None,
        }
    }

    /// A run of four events, three acknowledged, and a cluster that holds exactly them.
    fn consistent() -> (Tally, Observed) {
        let mut tally = Tally::default();
        tally.record(
            &[event("r-0", "a", "info"), event("r-1", "a", "warn")],
            true,
        );
        tally.record(&[event("r-2", "b", "info")], true);
        tally.record(&[event("r-3", "b", "info")], false);
        let mut observed = Observed::default();
        for (id, service, severity) in [
            ("r-0", "a", "info"),
            ("r-1", "a", "warn"),
            ("r-2", "b", "info"),
        ] {
            observed.stored.insert(
                id.into(),
                StoredRow {
                    service: service.into(),
                    severity: severity.into(),
                    rows: 1,
                },
            );
        }
        observed.stats.insert(("a".into(), "info".into()), 1);
        observed.stats.insert(("a".into(), "warn".into()), 1);
        observed.stats.insert(("b".into(), "info".into()), 1);
        let log: HashMap<String, u64> = ["r-0", "r-1", "r-2"]
            .iter()
            .map(|id| (id.to_string(), 1))
            .collect();
        observed.event_logs.insert("node-0".into(), log.clone());
        observed.event_logs.insert("node-1".into(), log);
        (tally, observed)
    }

    #[test]
    fn a_consistent_cluster_passes() {
        let (tally, observed) = consistent();
        let verdict = verify(&tally, &observed);
        assert!(verdict.passed, "{:?}", verdict.problems);
        assert_eq!(verdict.acknowledged, 3);
        assert_eq!(verdict.events_sent, 4);
        assert_eq!(verdict.service_logs_rows, 3);
        assert_eq!(verdict.service_severity_total, 3);
        assert_eq!(verdict.counts.len(), 3);
    }

    #[test]
    fn a_missing_acknowledged_event_fails_naming_it() {
        let (tally, mut observed) = consistent();
        observed.stored.remove("r-2");
        let verdict = verify(&tally, &observed);
        assert!(!verdict.passed);
        assert_eq!(verdict.missing_from_store, 1);
        assert!(
            verdict.problems.iter().any(|p| p.contains("r-2")),
            "{:?}",
            verdict.problems
        );
    }

    #[test]
    fn a_row_stored_twice_fails() {
        let (tally, mut observed) = consistent();
        observed.stored.get_mut("r-0").unwrap().rows = 2;
        *observed
            .stats
            .get_mut(&("a".into(), "info".into()))
            .unwrap() = 2;
        let verdict = verify(&tally, &observed);
        assert!(!verdict.passed);
        assert_eq!(verdict.stored_more_than_once, 1);
    }

    #[test]
    fn counts_that_disagree_with_the_rows_fail() {
        let (tally, mut observed) = consistent();
        *observed
            .stats
            .get_mut(&("b".into(), "info".into()))
            .unwrap() = 2;
        let verdict = verify(&tally, &observed);
        assert!(!verdict.passed);
        assert!(
            verdict.problems.iter().any(|p| p.starts_with("b info")),
            "{:?}",
            verdict.problems
        );
    }

    #[test]
    fn an_event_stored_without_its_202_is_allowed_and_counted() {
        let (tally, mut observed) = consistent();
        observed.stored.insert(
            "r-3".into(),
            StoredRow {
                service: "b".into(),
                severity: "info".into(),
                rows: 1,
            },
        );
        *observed
            .stats
            .get_mut(&("b".into(), "info".into()))
            .unwrap() = 2;
        let verdict = verify(&tally, &observed);
        assert!(verdict.passed, "{:?}", verdict.problems);
        assert_eq!(verdict.stored_in_doubt, 1);
    }

    #[test]
    fn a_stored_event_never_sent_fails() {
        let (tally, mut observed) = consistent();
        observed.stored.insert(
            "r-99".into(),
            StoredRow {
                service: "a".into(),
                severity: "info".into(),
                rows: 1,
            },
        );
        let verdict = verify(&tally, &observed);
        assert!(!verdict.passed);
        assert_eq!(verdict.stored_but_never_sent, 1);
    }

    #[test]
    fn an_event_log_missing_an_acknowledged_event_fails_but_repeats_are_fine() {
        let (tally, mut observed) = consistent();
        observed.event_logs.get_mut("node-1").unwrap().remove("r-1");
        *observed
            .event_logs
            .get_mut("node-0")
            .unwrap()
            .get_mut("r-0")
            .unwrap() = 2;
        let verdict = verify(&tally, &observed);
        assert!(!verdict.passed);
        assert_eq!(verdict.problems.len(), 1, "{:?}", verdict.problems);
        assert!(verdict.problems[0].starts_with("1 acknowledged events are missing from node-1's"));
        assert_eq!(verdict.event_logs[0].repeated_lines, 1);
    }
}
