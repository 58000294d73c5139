//! The blackhole's topics and partitions: what each partition received, its offsets, and the
//! idempotent producers' sequence numbers per (producer id, partition).
//!
//! Nothing is stored but counters: a partition is two atomics for the snapshot and a small
//! mutex-guarded state (the next offset and one entry per producer id), locked once per
//! partition per Produce request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use uuid::Uuid;

/// How many of a producer's latest batches per partition are remembered to recognise a
/// retried batch (Kafka keeps five, the most a producer may have in flight with idempotence).
pub(super) const RECENT_BATCHES: usize = 5;

/// A topic: its name, a topic id for Metadata v10 and later, and its partitions.
#[derive(Debug)]
pub(super) struct Topic {
    pub(super) name: String,
    pub(super) id: Uuid,
    pub(super) partitions: Box<[Partition]>,
}

/// What one partition received.
#[derive(Debug, Default)]
pub(super) struct Partition {
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) batches: AtomicU64,
    log: Mutex<Log>,
}

impl Partition {
    /// The partition's offsets and producer states, for one request's batches.
    pub(super) fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts appended batches (not the duplicates).
    pub(super) fn count(&self, batches: u64, records: u64, bytes: u64) {
        self.batches.fetch_add(batches, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A partition's offsets and the sequence state of every producer id that wrote to it.
#[derive(Debug, Default)]
pub(super) struct Log {
    next_offset: i64,
    producers: HashMap<i64, ProducerState>,
}

#[derive(Debug)]
struct ProducerState {
    epoch: i16,
    /// The last sequence number appended; `None` before the first batch of this epoch.
    last_seq: Option<i32>,
    recent: [Option<RecentBatch>; RECENT_BATCHES],
    next_slot: usize,
}

impl ProducerState {
    fn new(epoch: i16) -> Self {
        Self {
            epoch,
            last_seq: None,
            recent: [None; RECENT_BATCHES],
            next_slot: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecentBatch {
    base_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

/// The fields of a record batch header that the log looks at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batch {
    /// -1 for a producer that is not idempotent: no sequence checks.
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) base_sequence: i32,
    /// At least 1.
    pub(super) records: i32,
}

/// What became of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Appended {
    /// The batch's first offset: a new one, or for a duplicate the one it was given first.
    pub(super) base_offset: i64,
    pub(super) seq: Seq,
}

/// The sequence check of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seq {
    /// Producer id -1: not checked.
    Unchecked,
    /// The base sequence follows the previous batch's last (or is 0 for a new producer or
    /// epoch).
    InOrder,
    /// The base sequence is ahead of the expected one by this many: records missing. Appended
    /// (a broker would answer OUT_OF_ORDER_SEQUENCE_NUMBER).
    Gap { expected: i32, missing: u64 },
    /// The base sequence is behind the expected one without being one of the recent batches:
    /// appended and counted (a broker would answer OUT_OF_ORDER_SEQUENCE_NUMBER); the producer's
    /// state does not move back.
    Behind { expected: i32 },
    /// The same base and last sequence as one of the producer's recent batches: not appended,
    /// answered DUPLICATE_SEQUENCE_NUMBER.
    Duplicate,
    /// An epoch below the producer id's current one: appended and counted (a broker would
    /// answer INVALID_PRODUCER_EPOCH).
    StaleEpoch { current: i16 },
}

impl Log {
    /// Appends one batch: its offsets and, for an idempotent producer, its sequence check.
    pub(super) fn append(&mut self, b: &Batch) -> Appended {
        let count = i64::from(b.records);
        if b.producer_id < 0 {
            let base_offset = self.next_offset;
            self.next_offset += count;
            return Appended {
                base_offset,
                seq: Seq::Unchecked,
            };
        }
        let last = last_sequence(b.base_sequence, b.records);
        let state = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerState::new(b.producer_epoch));
        if b.producer_epoch > state.epoch {
            // A new epoch (the producer id was bumped): its sequence starts over at 0.
            *state = ProducerState::new(b.producer_epoch);
        } else if b.producer_epoch < state.epoch {
            let current = state.epoch;
            let base_offset = self.next_offset;
            self.next_offset += count;
            return Appended {
                base_offset,
                seq: Seq::StaleEpoch { current },
            };
        }
        if let Some(dup) = state
            .recent
            .iter()
            .flatten()
            .find(|r| r.base_seq == b.base_sequence && r.last_seq == last)
        {
            return Appended {
                base_offset: dup.base_offset,
                seq: Seq::Duplicate,
            };
        }
        let expected = state.last_seq.map_or(0, next_sequence);
        let distance = seq_distance(expected, b.base_sequence);
        let seq = if distance == 0 {
            Seq::InOrder
        } else if distance < 1 << 30 {
            Seq::Gap {
                expected,
                missing: u64::from(distance),
            }
        } else {
            Seq::Behind { expected }
        };
        let base_offset = self.next_offset;
        self.next_offset += count;
        // A batch behind is counted but, as a broker would have refused it, it moves neither
        // the expected sequence nor the recent batches.
        if !matches!(seq, Seq::Behind { .. }) {
            state.last_seq = Some(last);
            state.recent[state.next_slot] = Some(RecentBatch {
                base_seq: b.base_sequence,
                last_seq: last,
                base_offset,
            });
            state.next_slot = (state.next_slot + 1) % RECENT_BATCHES;
        }
        Appended { base_offset, seq }
    }
}

/// The last sequence number of a batch of `records` records from `base`; sequence numbers wrap
/// from `i32::MAX` to 0, as in Kafka.
pub(super) fn last_sequence(base: i32, records: i32) -> i32 {
    let delta = records.saturating_sub(1).max(0);
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

/// The sequence number after `seq`.
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// How far `to` is ahead of `from` in the sequence space (0 to 2^31 - 1, wrapping); half of it
/// and more is read as "behind".
fn seq_distance(from: i32, to: i32) -> u32 {
    (i64::from(to) - i64::from(from)).rem_euclid(1 << 31) as u32
}

/// Whether Kafka would accept `name` as a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or
/// `..`.
pub(super) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Every topic the blackhole knows, created on first mention (Metadata or Produce).
#[derive(Debug)]
pub(super) struct Topics {
    partitions: usize,
    inner: RwLock<TopicsInner>,
}

#[derive(Debug, Default)]
struct TopicsInner {
    by_name: HashMap<String, Arc<Topic>>,
    /// In order of creation (the snapshot's and the all-topics Metadata's order).
    all: Vec<Arc<Topic>>,
}

impl Topics {
    pub(super) fn new(partitions: usize) -> Self {
        Self {
            partitions,
            inner: RwLock::new(TopicsInner::default()),
        }
    }

    /// The topic called `name`, created with the configured partition count if it is new;
    /// `None` when the name is not a valid Kafka topic name.
    pub(super) fn get_or_create(&self, name: &str) -> Option<Arc<Topic>> {
        if let Some(t) = self.read().by_name.get(name) {
            return Some(Arc::clone(t));
        }
        if !valid_topic_name(name) {
            return None;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = inner.by_name.get(name) {
            return Some(Arc::clone(t));
        }
        // Topic ids only have to be unique and not zero: the creation index, plus one.
        let id = Uuid::from_u128(inner.all.len() as u128 + 1);
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            id,
            partitions: (0..self.partitions).map(|_| Partition::default()).collect(),
        });
        inner.by_name.insert(name.to_owned(), Arc::clone(&topic));
        inner.all.push(Arc::clone(&topic));
        Some(topic)
    }

    /// The topic with this id, if it exists.
    pub(super) fn by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read().all.iter().find(|t| t.id == id).cloned()
    }

    /// Every topic, in order of creation.
    pub(super) fn all(&self) -> Vec<Arc<Topic>> {
        self.read().all.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TopicsInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, base: i32, records: i32) -> Batch {
        Batch {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: base,
            records,
        }
    }

    #[test]
    fn offsets_grow_by_the_record_count() {
        let mut log = Log::default();
        assert_eq!(log.append(&batch(-1, -1, -1, 10)).base_offset, 0);
        assert_eq!(log.append(&batch(-1, -1, -1, 5)).base_offset, 10);
        let a = log.append(&batch(-1, -1, -1, 1));
        assert_eq!(a.base_offset, 15);
        assert_eq!(a.seq, Seq::Unchecked);
    }

    #[test]
    fn sequences_in_order_gap_behind_duplicate() {
        let mut log = Log::default();
        assert_eq!(log.append(&batch(7, 0, 0, 10)).seq, Seq::InOrder);
        assert_eq!(log.append(&batch(7, 0, 10, 10)).seq, Seq::InOrder);
        // The exact batch again: the first offset it was given.
        assert_eq!(
            log.append(&batch(7, 0, 10, 10)),
            Appended {
                base_offset: 10,
                seq: Seq::Duplicate
            }
        );
        // 20..=24 skipped.
        let gap = log.append(&batch(7, 0, 25, 5));
        assert_eq!(
            gap.seq,
            Seq::Gap {
                expected: 20,
                missing: 5
            }
        );
        assert_eq!(gap.base_offset, 20, "duplicates take no offsets");
        // Overlapping an earlier batch without being one of them.
        assert_eq!(
            log.append(&batch(7, 0, 5, 3)).seq,
            Seq::Behind { expected: 30 }
        );
        assert_eq!(log.append(&batch(7, 0, 30, 1)).seq, Seq::InOrder);
        // Another producer on the same partition has its own sequence.
        assert_eq!(log.append(&batch(8, 0, 0, 1)).seq, Seq::InOrder);
        assert_eq!(
            log.append(&batch(9, 0, 3, 1)).seq,
            Seq::Gap {
                expected: 0,
                missing: 3
            }
        );
    }

    #[test]
    fn epochs_reset_or_are_stale() {
        let mut log = Log::default();
        assert_eq!(log.append(&batch(1, 0, 0, 4)).seq, Seq::InOrder);
        assert_eq!(log.append(&batch(1, 1, 0, 4)).seq, Seq::InOrder);
        assert_eq!(
            log.append(&batch(1, 0, 4, 4)).seq,
            Seq::StaleEpoch { current: 1 }
        );
        assert_eq!(log.append(&batch(1, 1, 4, 4)).seq, Seq::InOrder);
    }

    #[test]
    fn only_the_recent_batches_are_duplicates() {
        let mut log = Log::default();
        for k in 0..(RECENT_BATCHES as i32 + 1) {
            assert_eq!(log.append(&batch(1, 0, k, 1)).seq, Seq::InOrder);
        }
        assert_eq!(
            log.append(&batch(1, 0, 0, 1)).seq,
            Seq::Behind { expected: 6 }
        );
        assert_eq!(log.append(&batch(1, 0, 1, 1)).seq, Seq::Duplicate);
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(last_sequence(0, 1), 0);
        assert_eq!(last_sequence(10, 5), 14);
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 4), 1);
        let mut log = Log::default();
        log.append(&batch(1, 0, 0, 1));
        log.producers.get_mut(&1).unwrap().last_seq = Some(i32::MAX - 2);
        assert_eq!(log.append(&batch(1, 0, i32::MAX - 1, 4)).seq, Seq::InOrder);
        assert_eq!(log.append(&batch(1, 0, 2, 1)).seq, Seq::InOrder);
    }

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("bench.out_1-x"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
        let topics = Topics::new(3);
        let a = topics.get_or_create("a").unwrap();
        assert_eq!(a.partitions.len(), 3);
        assert!(Arc::ptr_eq(&a, &topics.get_or_create("a").unwrap()));
        assert!(topics.get_or_create("a b").is_none());
        let b = topics.get_or_create("b").unwrap();
        assert_ne!(a.id, b.id);
        assert!(Arc::ptr_eq(&topics.by_id(b.id).unwrap(), &b));
        assert_eq!(topics.all().len(), 2);
    }
}
