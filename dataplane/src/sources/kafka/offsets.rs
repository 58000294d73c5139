//! Per-partition watermarks of a Kafka source: the Kafka twin of PUBACKs in receive order. Each
//! record handed to the core is remembered in its partition's window, in the order it was read;
//! acknowledgements come back in any order; the watermark is the offset of the last record
//! below which every record of the partition is acknowledged, and only it is ever stored for
//! commit. So nothing is committed past an unacknowledged record, whatever order the
//! destination acknowledges in.
//!
//! A revoked partition (a rebalance gave it to another consumer) gets a new epoch: the
//! acknowledgements of records read before are ignored (those records are left uncommitted, for
//! the new owner to read again), and its window is emptied.
//!
//! No I/O and no clock: [`super::KafkaSource`] stores what [`Offsets::take_to_store`] gives.
//! Memory: one entry (9 bytes, rounded to 16) per record in flight, bounded by the dataflow
//! core's window, plus one slot per partition ever assigned to this consumer.

use std::collections::VecDeque;

use sluice_codec::ByteStr;

/// What acknowledges one record: its partition's slot, the slot's epoch when it was read, and
/// its place in the partition's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KafkaAck {
    slot: u32,
    epoch: u32,
    seq: u64,
}

#[derive(Debug)]
struct Partition {
    /// The topic, as the messages' topic (shared, not copied per message).
    topic: ByteStr,
    partition: i32,
    /// Bumped on every revocation.
    epoch: u32,
    assigned: bool,
    /// The window's first entry's sequence number.
    base_seq: u64,
    /// `(offset, acknowledged)` of each record in flight, in the order read.
    window: VecDeque<(i64, bool)>,
    /// The watermark reached and not yet stored.
    to_store: Option<i64>,
    /// A record came since the partition was assigned (librdkafka knows its position).
    started: bool,
    /// Paused in librdkafka by this source (a mark that outlives a revocation: librdkafka keeps
    /// a partition paused across rebalances).
    paused: bool,
}

/// The watermarks of one consumer's partitions. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    partitions: Vec<Partition>,
    /// The slot of the last record read: consecutive records mostly share a partition.
    last: usize,
    unacked: usize,
}

impl Offsets {
    /// No partitions.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        let hit = |p: &Partition| p.partition == partition && p.topic.as_str() == topic;
        if self.partitions.get(self.last).is_some_and(hit) {
            return Some(self.last);
        }
        self.partitions.iter().position(hit)
    }

    /// `topic`'s `partition` is this consumer's (again); its window starts empty.
    pub(crate) fn assign(&mut self, topic: &str, partition: i32) -> usize {
        let slot = match self.find(topic, partition) {
            Some(slot) => slot,
            None => {
                self.partitions.push(Partition {
                    topic: ByteStr::from(topic.to_owned()),
                    partition,
                    epoch: 0,
                    assigned: false,
                    base_seq: 0,
                    window: VecDeque::new(),
                    to_store: None,
                    started: false,
                    paused: false,
                });
                self.partitions.len() - 1
            }
        };
        let p = &mut self.partitions[slot];
        p.assigned = true;
        p.started = false;
        slot
    }

    /// `topic`'s `partition` is no longer this consumer's: what was read from it is forgotten,
    /// uncommitted, and its acknowledgements will be ignored.
    pub(crate) fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(slot) = self.find(topic, partition) {
            self.revoke_slot(slot);
        }
    }

    /// Every partition is revoked (the consumer is gone).
    pub(crate) fn revoke_all(&mut self) {
        for slot in 0..self.partitions.len() {
            self.revoke_slot(slot);
        }
    }

    fn revoke_slot(&mut self, slot: usize) {
        let p = &mut self.partitions[slot];
        if !p.assigned && p.window.is_empty() {
            return;
        }
        self.unacked -= p.window.len();
        p.base_seq += p.window.len() as u64;
        p.window.clear();
        p.epoch = p.epoch.wrapping_add(1);
        p.assigned = false;
        p.to_store = None;
    }

    /// A record of `topic`'s `partition` at `offset` was read: its slot (a partition not seen
    /// assigned yet is assigned now) and what acknowledges it.
    pub(crate) fn received(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (usize, KafkaAck) {
        let slot = match self.find(topic, partition) {
            Some(slot) if self.partitions[slot].assigned => slot,
            _ => self.assign(topic, partition),
        };
        self.last = slot;
        let p = &mut self.partitions[slot];
        p.started = true;
        let seq = p.base_seq + p.window.len() as u64;
        p.window.push_back((offset, false));
        self.unacked += 1;
        let ack = KafkaAck {
            slot: slot as u32,
            epoch: p.epoch,
            seq,
        };
        (slot, ack)
    }

    /// The destination has the record of `ack` (or it was dropped on purpose). Returns whether
    /// the watermark of its partition moved.
    pub(crate) fn ack(&mut self, ack: KafkaAck) -> bool {
        let Some(p) = self.partitions.get_mut(ack.slot as usize) else {
            return false;
        };
        if p.epoch != ack.epoch || ack.seq < p.base_seq {
            return false;
        }
        let Some(entry) = p.window.get_mut((ack.seq - p.base_seq) as usize) else {
            return false;
        };
        if entry.1 {
            return false;
        }
        entry.1 = true;
        let mut moved = false;
        while let Some(&(offset, true)) = p.window.front() {
            p.window.pop_front();
            p.base_seq += 1;
            self.unacked -= 1;
            p.to_store = Some(offset);
            moved = true;
        }
        moved
    }

    /// The slot's topic, for the messages read from it.
    pub(crate) fn topic(&self, slot: usize) -> &ByteStr {
        &self.partitions[slot].topic
    }

    /// Calls `store` with each partition whose watermark moved since the last call: topic,
    /// partition and the offset of the last record acknowledged in order (librdkafka commits
    /// the next one as the position to resume from).
    pub(crate) fn take_to_store(&mut self, mut store: impl FnMut(&str, i32, i64)) {
        for p in &mut self.partitions {
            if let Some(offset) = p.to_store.take() {
                store(p.topic.as_str(), p.partition, offset);
            }
        }
    }

    /// Whether any partition has a watermark to store.
    pub(crate) fn has_to_store(&self) -> bool {
        self.partitions.iter().any(|p| p.to_store.is_some())
    }

    /// Records read and not yet acknowledged, over the assigned partitions.
    pub(crate) fn unacked(&self) -> usize {
        self.unacked
    }

    /// Marks as paused, and gives, the assigned partitions that have started (a record came
    /// since their assignment) and are not paused yet. A partition is not paused before its
    /// first record: librdkafka loses a partition paused while it still looks up where to start
    /// (its answer is discarded as outdated, and the partition never fetches again).
    pub(crate) fn mark_paused(&mut self) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for p in &mut self.partitions {
            if p.assigned && p.started && !p.paused {
                p.paused = true;
                out.push((p.topic.as_str().to_owned(), p.partition));
            }
        }
        out
    }

    /// Whether the slot's partition is paused by this source.
    #[cfg(test)]
    pub(crate) fn is_paused(&self, slot: usize) -> bool {
        self.partitions[slot].paused
    }

    /// Clears, and gives, every partition marked paused (assigned or not).
    pub(crate) fn take_paused(&mut self) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for p in &mut self.partitions {
            if std::mem::take(&mut p.paused) {
                out.push((p.topic.as_str().to_owned(), p.partition));
            }
        }
        out
    }

    /// The partitions assigned now.
    #[cfg(test)]
    pub(crate) fn assigned(&self) -> impl Iterator<Item = (&str, i32)> {
        self.partitions
            .iter()
            .filter(|p| p.assigned)
            .map(|p| (p.topic.as_str(), p.partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(o: &mut Offsets) -> Vec<(String, i32, i64)> {
        let mut v = Vec::new();
        o.take_to_store(|t, p, off| v.push((t.to_owned(), p, off)));
        v
    }

    #[test]
    fn the_watermark_waits_for_every_record_below_it() {
        let mut o = Offsets::new();
        o.assign("t", 0);
        let acks: Vec<KafkaAck> = (10..15).map(|off| o.received("t", 0, off).1).collect();
        assert_eq!(o.unacked(), 5);
        // Out of order: 12 and 11 first; nothing passes 10.
        assert!(!o.ack(acks[2]));
        assert!(!o.ack(acks[1]));
        assert!(stored(&mut o).is_empty(), "10 is not acknowledged");
        assert!(o.ack(acks[0]));
        assert_eq!(stored(&mut o), [("t".into(), 0, 12)], "10, 11, 12 in order");
        assert!(stored(&mut o).is_empty(), "stored once");
        assert!(!o.ack(acks[0]), "a second ack changes nothing");
        assert!(o.ack(acks[3]));
        assert!(o.ack(acks[4]));
        assert_eq!(stored(&mut o), [("t".into(), 0, 14)]);
        assert_eq!(o.unacked(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_in_offsets_are_fine() {
        let mut o = Offsets::new();
        let (_, a) = o.received("t", 0, 100);
        let (_, b) = o.received("t", 1, 7);
        let (_, c) = o.received("u", 0, 3);
        // Compaction or transaction markers leave gaps: the next record is what counts.
        let (_, a2) = o.received("t", 0, 105);
        assert!(o.ack(b));
        assert!(!o.ack(a2), "100 first");
        assert!(o.ack(a));
        assert!(o.ack(c));
        let mut s = stored(&mut o);
        s.sort();
        assert_eq!(
            s,
            [("t".into(), 0, 105), ("t".into(), 1, 7), ("u".into(), 0, 3)]
        );
        assert_eq!(
            o.assigned().count(),
            3,
            "read records imply their partition"
        );
    }

    #[test]
    fn a_revoked_partition_forgets_what_it_read_and_ignores_late_acks() {
        let mut o = Offsets::new();
        o.assign("t", 0);
        let (_, first) = o.received("t", 0, 0);
        let (_, second) = o.received("t", 0, 1);
        assert!(o.ack(first));
        o.revoke("t", 0);
        assert_eq!(o.unacked(), 0);
        assert!(
            stored(&mut o).is_empty(),
            "a watermark not stored before the revocation is gone"
        );
        assert!(!o.ack(second), "the new owner reads it again");
        assert_eq!(o.assigned().count(), 0);
        // Assigned again: reading resumes at the committed offset, with a new epoch.
        o.assign("t", 0);
        let (_, again) = o.received("t", 0, 1);
        assert!(!o.ack(second), "still ignored");
        assert!(o.ack(again));
        assert_eq!(stored(&mut o), [("t".into(), 0, 1)]);
        o.revoke_all();
        assert_eq!(o.assigned().count(), 0);
    }

    #[test]
    fn only_started_partitions_are_paused_and_marks_outlive_revocation() {
        let mut o = Offsets::new();
        o.assign("t", 0);
        o.assign("t", 1);
        let (slot, _) = o.received("t", 0, 5);
        assert_eq!(o.mark_paused(), [("t".to_owned(), 0)], "1 has not started");
        assert!(o.is_paused(slot));
        assert!(o.mark_paused().is_empty(), "once");
        let (slot1, _) = o.received("t", 1, 0);
        assert!(!o.is_paused(slot1));
        assert_eq!(
            o.mark_paused(),
            [("t".to_owned(), 1)],
            "paused at its first record"
        );
        o.revoke("t", 0);
        let mut resumed = o.take_paused();
        resumed.sort();
        assert_eq!(
            resumed,
            [("t".to_owned(), 0), ("t".to_owned(), 1)],
            "revoked ones too"
        );
        assert!(o.take_paused().is_empty());
    }
}
