//! Exec-gate counters and latency samples for `guardctl status`.
use std::collections::VecDeque;

use crate::protocol::{GateStats, Latency};

const SAMPLES: usize = 4096;

/// The last `SAMPLES` values, for percentiles.
#[derive(Debug, Default)]
pub struct Samples(VecDeque<u64>);

impl Samples {
    pub fn push(&mut self, value: u64) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(value);
    }

    pub fn summary(&self) -> Latency {
        let mut sorted: Vec<u64> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        let pick = |q: f64| {
            let at = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
            sorted.get(at).copied().unwrap_or(0)
        };
        Latency {
            samples: sorted.len(),
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The exec gate's counters and latencies (`guardctl status`, `stats`).
#[derive(Debug, Default)]
pub struct ExecStats {
    pub counts: GateStats,
    /// Kernel stop -> the daemon handles the event.
    pub event_us: Samples,
    /// Kernel stop -> decision made (process resumed, killed or held).
    pub decision_us: Samples,
    /// The same for the API-client gate's stops.
    pub api_decision_us: Samples,
}

impl ExecStats {
    pub fn view(&self) -> GateStats {
        GateStats {
            event_latency: self.event_us.summary(),
            decision_latency: self.decision_us.summary(),
            api_decision_latency: self.api_decision_us.summary(),
            ..self.counts.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut samples = Samples::default();
        assert_eq!(samples.summary().max_us, 0);
        for value in 1..=100 {
            samples.push(value);
        }
        let summary = samples.summary();
        assert_eq!(
            (
                summary.samples,
                summary.p50_us,
                summary.p99_us,
                summary.max_us
            ),
            (100, 51, 99, 100)
        );
        for _ in 0..SAMPLES {
            samples.push(7);
        }
        assert_eq!(samples.summary().max_us, 7, "old samples are dropped");
    }
}
