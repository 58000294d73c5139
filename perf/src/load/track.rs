//! Loss, duplicates and order, per publisher, as one receiver saw them: a bitmap of the sequence
//! numbers received (one bit each, grown in 4 KiB steps as they come), the count of repeats and
//! of messages that came after a higher sequence number of the same publisher.
//!
//! Bounds: publishers up to [`MAX_PUBLISHERS`], sequence numbers below [`MAX_SEQ`] (a 128 MiB
//! bitmap at worst per publisher); a stamp outside them is counted as foreign, not tracked, so a
//! hostile payload cannot make the bitmap grow without end. Receivers of one shared
//! subscription (or one Kafka consumer group) each hold a tracker; [`Tracker::merge`] ORs them
//! into the group's view.

/// Publishers tracked (numbers from 0).
pub const MAX_PUBLISHERS: u32 = 100_000;
/// Sequence numbers tracked (from 0).
pub const MAX_SEQ: u64 = 1 << 30;

const WORDS_PER_GROWTH: usize = 512;

/// One publisher's messages as a receiver saw them.
#[derive(Debug, Clone, Default)]
struct Publisher {
    bits: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    /// One past the highest sequence number seen.
    next: u64,
}

/// What a receiver saw of every publisher.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    publishers: Vec<Publisher>,
    /// Messages with a stamp out of range.
    pub foreign: u64,
}

/// Counts over the publishers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct messages received.
    pub distinct: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages received after a higher sequence number of their publisher.
    pub reordered: u64,
}

impl Tracker {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records message `seq` of `publisher`. Returns whether it was new.
    pub fn record(&mut self, publisher: u32, seq: u64) -> bool {
        if publisher >= MAX_PUBLISHERS || seq >= MAX_SEQ {
            self.foreign += 1;
            return false;
        }
        let i = publisher as usize;
        if self.publishers.len() <= i {
            self.publishers.resize_with(i + 1, Publisher::default);
        }
        let p = &mut self.publishers[i];
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if p.bits.len() <= word {
            let len = (word / WORDS_PER_GROWTH + 1) * WORDS_PER_GROWTH;
            p.bits.resize(len, 0);
        }
        if p.bits[word] & bit != 0 {
            p.duplicates += 1;
            return false;
        }
        p.bits[word] |= bit;
        p.distinct += 1;
        if seq + 1 < p.next {
            p.reordered += 1;
        } else {
            p.next = seq + 1;
        }
        true
    }

    /// The counts over all publishers.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for p in &self.publishers {
            c.distinct += p.distinct;
            c.duplicates += p.duplicates;
            c.reordered += p.reordered;
        }
        c
    }

    /// Distinct messages of `publisher` below `sent` (what it sent), and how many of those are
    /// missing.
    pub fn missing(&self, publisher: u32, sent: u64) -> u64 {
        let Some(p) = self.publishers.get(publisher as usize) else {
            return sent;
        };
        let full = (sent / 64) as usize;
        let mut have: u64 = p
            .bits
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let rest = sent % 64;
        if rest > 0
            && let Some(w) = p.bits.get(full)
        {
            have += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
        sent - have
    }

    /// One past the highest sequence number seen per publisher (what a publisher elsewhere sent
    /// at least).
    pub fn seen_per_publisher(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.publishers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.next > 0)
            .map(|(i, p)| (i as u32, p.next))
    }

    /// Adds what another receiver of the same group saw: a message both saw is a duplicate.
    pub fn merge(&mut self, other: &Tracker) {
        self.foreign += other.foreign;
        if self.publishers.len() < other.publishers.len() {
            self.publishers
                .resize_with(other.publishers.len(), Publisher::default);
        }
        for (p, o) in self.publishers.iter_mut().zip(&other.publishers) {
            if p.bits.len() < o.bits.len() {
                p.bits.resize(o.bits.len(), 0);
            }
            let mut both = 0u64;
            for (a, b) in p.bits.iter_mut().zip(&o.bits) {
                both += u64::from((*a & *b).count_ones());
                *a |= *b;
            }
            p.distinct = p.distinct + o.distinct - both;
            p.duplicates += o.duplicates + both;
            p.reordered += o.reordered;
            p.next = p.next.max(o.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_order_are_counted_per_publisher() {
        let mut t = Tracker::new();
        for seq in [0, 1, 3, 2, 3, 5] {
            t.record(0, seq);
        }
        t.record(1, 0);
        assert_eq!(
            t.counts(),
            Counts {
                distinct: 6,
                duplicates: 1,
                reordered: 1
            }
        );
        assert_eq!(t.missing(0, 6), 1, "4 is missing");
        assert_eq!(t.missing(0, 4), 0);
        assert_eq!(t.missing(1, 200), 199);
        assert_eq!(t.missing(7, 10), 10);
        let seen: Vec<_> = t.seen_per_publisher().collect();
        assert_eq!(seen, [(0, 6), (1, 1)]);
    }

    #[test]
    fn a_shared_group_merges_into_one_view() {
        let (mut a, mut b) = (Tracker::new(), Tracker::new());
        for seq in (0..100_000).step_by(2) {
            a.record(3, seq);
        }
        for seq in (1..100_000).step_by(2) {
            b.record(3, seq);
        }
        b.record(3, 0); // both got message 0
        a.merge(&b);
        assert_eq!(a.counts().distinct, 100_000);
        assert_eq!(a.counts().duplicates, 1);
        assert_eq!(a.missing(3, 100_000), 0);
    }

    #[test]
    fn stamps_out_of_range_are_foreign_and_use_no_memory() {
        let mut t = Tracker::new();
        assert!(!t.record(MAX_PUBLISHERS, 0));
        assert!(!t.record(0, MAX_SEQ));
        assert_eq!(t.foreign, 2);
        assert!(t.publishers.is_empty());
    }
}
