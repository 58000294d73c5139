//! The open-loop send schedule of one publisher connection. Send times are fixed before the run
//! and never wait for the broker: connection `i` of `n` at a total rate `r` sends message `k` of
//! a step at `step start + i/r + k·n/r`, so the connections' sends interleave evenly. A
//! publisher that falls behind (a full in-flight window, a slow socket, a busy core) sends the
//! messages that are due as soon as it can, each stamped with the time it was *scheduled*: the
//! receiving side counts the wait as latency (coordinated omission corrected).
//!
//! A run is a list of steps (one for a fixed rate; several for a ramp), each with a total rate
//! (or none: as fast as the connection goes, for finding a ceiling) and a duration, and
//! optionally a cap on the messages of this connection. Sans-IO: times are nanoseconds since
//! the run's start, given by the caller.

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Messages per second over all publisher connections; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// How long the step lasts, nanoseconds.
    pub duration_ns: u64,
}

/// What the publisher should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send a message now, stamped with this scheduled time (nanoseconds since the start); then
    /// call [`Schedule::sent`].
    Due(u64),
    /// Nothing is due before this time.
    At(u64),
    /// The run is over for this connection.
    Done,
}

/// The schedule of connection `conn` of `conns`.
#[derive(Debug, Clone)]
pub struct Schedule {
    steps: Vec<Step>,
    /// Where each step starts (ns since the run's start), and where the last ends.
    starts: Vec<u64>,
    conn: u64,
    conns: u64,
    /// The most messages this connection sends, over all steps.
    cap: Option<u64>,
    step: usize,
    /// Messages of the current step sent so far.
    k: u64,
    total: u64,
}

impl Schedule {
    /// The schedule of connection `conn` (from 0) of `conns`, over `steps`; `cap` bounds the
    /// messages of this connection.
    ///
    /// # Panics
    /// When `conn >= conns` or a rate is not positive.
    pub fn new(steps: &[Step], conn: u32, conns: u32, cap: Option<u64>) -> Self {
        assert!(conn < conns, "connection {conn} of {conns}");
        assert!(
            steps
                .iter()
                .all(|s| s.rate.is_none_or(|r| r > 0.0 && r.is_finite())),
            "rates must be positive"
        );
        let starts = boundaries(steps);
        Self {
            steps: steps.to_vec(),
            starts,
            conn: u64::from(conn),
            conns: u64::from(conns),
            cap,
            step: 0,
            k: 0,
            total: 0,
        }
    }

    /// What to do at `now` (ns since the start).
    pub fn next(&mut self, now: u64) -> Next {
        loop {
            if self.cap.is_some_and(|c| self.total >= c) {
                return Next::Done;
            }
            let Some(step) = self.steps.get(self.step) else {
                return Next::Done;
            };
            let (start, end) = (self.starts[self.step], self.starts[self.step + 1]);
            let at = match step.rate {
                // As fast as possible: every message is due at once, until the step's end.
                None => now.max(start),
                Some(rate) => {
                    let per_msg = 1e9 / rate;
                    let offset = (self.conn as f64 + self.k as f64 * self.conns as f64) * per_msg;
                    start.saturating_add(offset as u64)
                }
            };
            if at >= end {
                self.step += 1;
                self.k = 0;
                continue;
            }
            return if at <= now {
                Next::Due(at)
            } else {
                Next::At(at)
            };
        }
    }

    /// The message [`Next::Due`] gave was sent.
    pub fn sent(&mut self) {
        self.k += 1;
        self.total += 1;
    }

    /// Messages sent so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When the last step ends (ns since the start).
    pub fn end(&self) -> u64 {
        *self.starts.last().expect("at least the start")
    }
}

/// Where each step starts, and where the last one ends (`steps.len() + 1` values, from 0).
pub fn boundaries(steps: &[Step]) -> Vec<u64> {
    let mut at = 0u64;
    let mut v = Vec::with_capacity(steps.len() + 1);
    v.push(0);
    for s in steps {
        at = at.saturating_add(s.duration_ns);
        v.push(at);
    }
    v
}

/// The step a scheduled time falls in (the last one for a time after the end).
pub fn step_of(boundaries: &[u64], t: u64) -> usize {
    let steps = boundaries.len().saturating_sub(1);
    boundaries[1..]
        .partition_point(|&end| end <= t)
        .min(steps.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn run(s: &mut Schedule, until: u64) -> Vec<u64> {
        let mut sent = Vec::new();
        loop {
            match s.next(until) {
                Next::Due(t) => {
                    sent.push(t);
                    s.sent();
                }
                Next::At(t) => {
                    assert!(t > until);
                    return sent;
                }
                Next::Done => return sent,
            }
        }
    }

    #[test]
    fn connections_interleave_at_the_total_rate() {
        let steps = [Step {
            rate: Some(1000.0),
            duration_ns: S,
        }];
        let mut all: Vec<u64> = (0..4)
            .flat_map(|c| run(&mut Schedule::new(&steps, c, 4, None), 10 * S))
            .collect();
        all.sort_unstable();
        assert_eq!(all.len(), 1000);
        // One message every millisecond, over the four connections together.
        for (i, t) in all.iter().enumerate() {
            assert_eq!(*t, i as u64 * 1_000_000);
        }
    }

    #[test]
    fn a_late_publisher_gets_every_missed_message_with_its_scheduled_time() {
        let steps = [Step {
            rate: Some(100.0),
            duration_ns: S,
        }];
        let mut s = Schedule::new(&steps, 0, 1, None);
        assert_eq!(s.next(0), Next::Due(0));
        s.sent();
        assert_eq!(s.next(5_000_000), Next::At(10_000_000));
        // Asleep for half a second: 49 messages are due, with their own times.
        let due = run(&mut s, 500 * 1_000_000);
        assert_eq!(due.len(), 50);
        assert_eq!(due[0], 10_000_000);
        assert_eq!(due[49], 500_000_000);
    }

    #[test]
    fn a_ramp_steps_through_its_rates_and_a_cap_ends_it_early() {
        let steps = [
            Step {
                rate: Some(10.0),
                duration_ns: S,
            },
            Step {
                rate: Some(100.0),
                duration_ns: S,
            },
        ];
        let b = boundaries(&steps);
        let sent = run(&mut Schedule::new(&steps, 0, 1, None), 3 * S);
        assert_eq!(sent.len(), 110);
        assert_eq!(sent.iter().filter(|&&t| step_of(&b, t) == 1).count(), 100);
        assert_eq!(step_of(&b, 5 * S), 1);
        let mut capped = Schedule::new(&steps, 0, 1, Some(15));
        assert_eq!(run(&mut capped, 3 * S).len(), 15);
        assert_eq!(capped.next(3 * S), Next::Done);
    }

    #[test]
    fn unlimited_steps_are_due_until_their_end() {
        let steps = [Step {
            rate: None,
            duration_ns: S,
        }];
        let mut s = Schedule::new(&steps, 0, 2, None);
        for _ in 0..1000 {
            assert_eq!(s.next(7), Next::Due(7));
            s.sent();
        }
        assert_eq!(s.next(S), Next::Done);
        assert_eq!(s.total(), 1000);
    }
}
