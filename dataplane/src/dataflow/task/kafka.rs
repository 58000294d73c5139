//! The Kafka loops of a [`Task`]: the destination's producer ([`Task::kafka_sink_loop`]) and the
//! source's consumer ([`Task::kafka_source_loop`]). Each makes its client (and makes a new one
//! after a fatal error or a refused login, reading the secrets again, after a backoff), fetches
//! managed identity tokens off the event loop, and polls without blocking: the producer every
//! [`KAFKA_POLL`] while records are in flight, else when an offer wakes it or every
//! [`IDLE_TICK`]; the consumer every [`KAFKA_POLL`], or at once while rounds come back full.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::{DestinationIo, IDLE_TICK, KAFKA_ERROR_LOG_EVERY, KAFKA_POLL, Task};
use crate::dataflow::ends::{Destination, Origin};
use crate::message::Side;
use crate::mqtt::connection::Owner as _;
use crate::net::connect::Backoff;
use crate::observe::logs::Escaped;
use crate::secrets::tokens::TokenSource;
use crate::sinks::kafka::{KafkaSink, Notice as KafkaNotice};
use crate::sources::kafka::{KafkaSource, Notice as SourceNotice};

/// A stopping Kafka source polls at least this long after unsubscribing, so that its LeaveGroup
/// goes out before the consumer is closed.
const LEAVE_MIN: Duration = Duration::from_millis(500);
/// ... and at most this long.
const LEAVE_MAX: Duration = Duration::from_secs(3);

/// A managed identity token for a new client or a refresh (`None` without a token source), and
/// when to refresh it.
async fn kafka_token(
    tokens: Option<&TokenSource>,
    refresh_at: &mut Option<SystemTime>,
) -> Result<Option<crate::secrets::tokens::Token>, crate::secrets::AuthError> {
    let Some(tokens) = tokens else {
        return Ok(None);
    };
    let answer = tokens.token().await?;
    *refresh_at = answer.as_ref().and_then(|(_, at)| *at);
    Ok(tokens.cached())
}

/// Drops a librdkafka client on a thread of its own (dropping it waits for librdkafka's
/// threads, and a consumer commits and leaves its group); `done` is called once it is gone.
fn drop_off_loop<T: Send + 'static>(client: T, done: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("sluice-kafka-drop".into())
        .spawn(move || {
            drop(client);
            done();
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a thread to close a Kafka client; it is leaked");
    }
}

impl Task {
    /// The Kafka destination's loop: see the module documentation.
    pub(super) async fn kafka_sink_loop(self: Rc<Self>) {
        let mut backoff = Backoff::default();
        let mut refresh_at: Option<SystemTime> = None;
        let mut last_warn: Option<Instant> = None;
        while !self.stopped.get() {
            if self.with_kafka(|k| k.needs_new_producer()) == Some(true) {
                let old = self.with_kafka(KafkaSink::take_producer).flatten();
                if let Some(old) = old {
                    // What it held comes back to the core; dropping it waits for its threads.
                    self.process();
                    drop_off_loop(old, || {});
                    // A producer replaced after a fatal error or a refused login: not again at
                    // once (a wrong password would make one every few milliseconds).
                    monoio::time::sleep(backoff.next_delay()).await;
                    if self.stopped.get() {
                        break;
                    }
                }
                let token = match kafka_token(self.kafka_tokens.as_ref(), &mut refresh_at).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.with_kafka(|k| k.cannot_create(format!("managed identity: {e}")));
                        self.process();
                        monoio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                match self
                    .with_kafka(|k| k.make_producer(token))
                    .unwrap_or(Ok(()))
                {
                    Ok(()) => {
                        debug!(dataflow = %self.key, core = self.core_id, "Kafka producer made");
                        self.process();
                    }
                    Err(e) => {
                        self.with_kafka(|k| k.cannot_create(e));
                        self.process();
                        monoio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let token_wanted = self.with_kafka(KafkaSink::take_token_wanted) == Some(true);
            if self.kafka_tokens.is_some()
                && (token_wanted || refresh_at.is_some_and(|at| SystemTime::now() >= at))
            {
                match kafka_token(self.kafka_tokens.as_ref(), &mut refresh_at).await {
                    Ok(Some(token)) => {
                        self.with_kafka(|k| k.set_token(token));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(dataflow = %self.key, core = self.core_id, error = %Escaped(&e.to_string()), "cannot refresh the managed identity token");
                        refresh_at = Some(SystemTime::now() + backoff.next_delay());
                    }
                }
            }
            self.with_kafka(KafkaSink::poll);
            self.process();
            if last_warn.is_some_and(|t| t.elapsed() >= KAFKA_ERROR_LOG_EVERY) {
                last_warn = None;
            }
            if self.kafka_notices(&mut last_warn) {
                // Up: the next replacement starts its backoff over.
                backoff.reset();
            }
            let in_flight = self.with_kafka(|k| k.in_flight()).unwrap_or(0) > 0;
            let DestinationIo::Kafka(wake) = &self.dst else {
                break;
            };
            if in_flight {
                monoio::time::sleep(KAFKA_POLL).await;
            } else {
                let _ = monoio::time::timeout(IDLE_TICK, wake.notified()).await;
            }
        }
        // Stopped: what is still in flight is left unacknowledged at the source.
        if let Some(producer) = self.with_kafka(KafkaSink::take_producer).flatten() {
            drop_off_loop(producer, || {});
        }
        self.kafka_done.set(true);
    }

    /// Runs `f` on the Kafka sink; `None` when the destination is not Kafka (the Kafka loop
    /// runs only for a Kafka destination).
    fn with_kafka<T>(&self, f: impl FnOnce(&mut KafkaSink) -> T) -> Option<T> {
        match self.core.borrow_mut().sink_mut() {
            Destination::Kafka(k) => Some(f(k)),
            Destination::Mqtt(_) | Destination::Parquet(_) => None,
        }
    }

    /// Logs and counts what the Kafka producer reported; returns whether it came up.
    fn kafka_notices(&self, last_warn: &mut Option<Instant>) -> bool {
        let mut up = false;
        while let Some(notice) = self.with_kafka(KafkaSink::poll_notice).flatten() {
            match notice {
                KafkaNotice::Up => {
                    up = true;
                    if self.kafka_was_up.replace(true) {
                        self.metrics.on_reconnect(Side::Destination);
                    }
                    self.metrics.set_connected(Side::Destination, true);
                    info!(dataflow = %self.key, core = self.core_id, "destination connected (Kafka)");
                }
                KafkaNotice::Down => {
                    self.metrics.set_connected(Side::Destination, false);
                    warn!(dataflow = %self.key, core = self.core_id, "destination disconnected (Kafka): no broker reachable; records wait in the producer and are retried");
                }
                KafkaNotice::Error { code, reason } => {
                    if last_warn.is_none() {
                        *last_warn = Some(Instant::now());
                        warn!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error (further ones within 10 s are logged at debug level)");
                    } else {
                        debug!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error");
                    }
                }
                KafkaNotice::RecordError { code, class } => {
                    let what = match class {
                        crate::kafka::errors::ErrorClass::Final(_) => "dropped (final)",
                        _ => "offered again after a backoff",
                    };
                    warn!(dataflow = %self.key, core = self.core_id, ?code, "Kafka did not take records: {what}");
                }
                KafkaNotice::CannotCreate { reason } => {
                    self.metrics.set_connected(Side::Destination, false);
                    warn!(dataflow = %self.key, core = self.core_id, reason = %Escaped(&reason), "cannot make the Kafka producer; retrying");
                }
            }
        }
        up
    }

    /// The Kafka source's loop: see the module documentation.
    pub(super) async fn kafka_source_loop(self: Rc<Self>) {
        let mut backoff = Backoff::default();
        let mut refresh_at: Option<SystemTime> = None;
        let mut last_warn: Option<Instant> = None;
        while !self.stopped.get() {
            if self.with_kafka_source(|k| k.needs_new_consumer()) == Some(true) {
                if let Some(old) = self.with_kafka_source(KafkaSource::take_consumer).flatten() {
                    drop_off_loop(old, || {});
                    // Replaced after a fatal error or a refused login: not again at once.
                    monoio::time::sleep(backoff.next_delay()).await;
                    if self.stopped.get() {
                        break;
                    }
                }
                let token =
                    match kafka_token(self.kafka_source_tokens.as_ref(), &mut refresh_at).await {
                        Ok(t) => t,
                        Err(e) => {
                            self.with_kafka_source(|k| {
                                k.cannot_create(format!("managed identity: {e}"));
                            });
                            self.kafka_source_notices(&mut last_warn);
                            monoio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    };
                match self
                    .with_kafka_source(|k| k.make_consumer(token))
                    .unwrap_or(Ok(()))
                {
                    Ok(()) => {
                        debug!(dataflow = %self.key, core = self.core_id, "Kafka consumer made");
                    }
                    Err(e) => {
                        self.with_kafka_source(|k| k.cannot_create(e));
                        self.kafka_source_notices(&mut last_warn);
                        monoio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let token_wanted = self.with_kafka_source(KafkaSource::take_token_wanted) == Some(true);
            if self.kafka_source_tokens.is_some()
                && (token_wanted || refresh_at.is_some_and(|at| SystemTime::now() >= at))
            {
                match kafka_token(self.kafka_source_tokens.as_ref(), &mut refresh_at).await {
                    Ok(Some(token)) => {
                        self.with_kafka_source(|k| k.set_token(token));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(dataflow = %self.key, core = self.core_id, error = %Escaped(&e.to_string()), "cannot refresh the managed identity token");
                        refresh_at = Some(SystemTime::now() + backoff.next_delay());
                    }
                }
            }
            self.with_kafka_source(KafkaSource::begin_round);
            self.process();
            self.with_kafka_source(KafkaSource::service);
            if last_warn.is_some_and(|t| t.elapsed() >= KAFKA_ERROR_LOG_EVERY) {
                last_warn = None;
            }
            if self.kafka_source_notices(&mut last_warn) {
                backoff.reset();
            }
            if self.with_kafka_source(|k| k.round_was_full()) == Some(true) {
                // More records are waiting: poll again after the other tasks had a turn.
                monoio::time::sleep(Duration::ZERO).await;
            } else {
                monoio::time::sleep(KAFKA_POLL).await;
            }
        }
        // Stopped (drained, or out of time): the watermarks reached are stored, the group is
        // left (its revocation commits them; at most 2 s), and closing the consumer commits
        // again; what is still unacknowledged is read again by the group.
        if self.with_kafka_source(KafkaSource::leave_group) == Some(true) {
            // The revocation is served by polls, and librdkafka sends LeaveGroup once it is
            // done; closing before that would leave a static member in the group (its
            // partitions would wait for the group to time it out, which tansu never does). So
            // poll at least LEAVE_MIN and until the assignment is gone, at most LEAVE_MAX.
            let started = Instant::now();
            while started.elapsed() < LEAVE_MAX
                && (started.elapsed() < LEAVE_MIN
                    || self.with_kafka_source(|k| k.has_assignment()) == Some(true))
            {
                self.with_kafka_source(KafkaSource::serve_events);
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            self.kafka_source_notices(&mut last_warn);
        }
        let done = std::rc::Rc::clone(&self.kafka_source_done);
        match self.with_kafka_source(KafkaSource::take_consumer).flatten() {
            Some(consumer) => {
                let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let flag = std::sync::Arc::clone(&closed);
                drop_off_loop(consumer, move || {
                    flag.store(true, std::sync::atomic::Ordering::Release);
                });
                // The task's stop waits (with its deadline) until the consumer is closed.
                while !closed.load(std::sync::atomic::Ordering::Acquire) {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                }
                done.set(true);
            }
            None => done.set(true),
        }
    }

    /// Runs `f` on the Kafka source; `None` when the source is not Kafka.
    fn with_kafka_source<T>(&self, f: impl FnOnce(&mut KafkaSource) -> T) -> Option<T> {
        match self.core.borrow_mut().source_mut() {
            Origin::Kafka(k) => Some(f(k)),
            Origin::Mqtt(_) => None,
        }
    }

    /// Logs and counts what the Kafka consumer reported; returns whether it came up.
    fn kafka_source_notices(&self, last_warn: &mut Option<Instant>) -> bool {
        let mut up = false;
        if let Some(n) = self.with_kafka_source(KafkaSource::take_headers_dropped)
            && n > 0
        {
            self.metrics.on_kafka_headers_dropped(n);
        }
        while let Some(notice) = self.with_kafka_source(KafkaSource::poll_notice).flatten() {
            match notice {
                SourceNotice::Up => {
                    up = true;
                    if self.kafka_source_was_up.replace(true) {
                        self.metrics.on_reconnect(Side::Source);
                    }
                    self.metrics.set_connected(Side::Source, true);
                    info!(dataflow = %self.key, core = self.core_id, "source connected (Kafka)");
                }
                SourceNotice::Down => {
                    self.metrics.set_connected(Side::Source, false);
                    warn!(dataflow = %self.key, core = self.core_id, "source disconnected (Kafka): no broker reachable; the consumer reconnects by itself");
                }
                SourceNotice::Error { code, reason } => {
                    if last_warn.is_none() {
                        *last_warn = Some(Instant::now());
                        warn!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error (further ones within 10 s are logged at debug level)");
                    } else {
                        debug!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error");
                    }
                }
                SourceNotice::Rebalanced {
                    assigned,
                    partitions,
                } => {
                    let what = if assigned { "assigned" } else { "revoked" };
                    info!(dataflow = %self.key, core = self.core_id, partitions, "Kafka partitions {what}");
                }
                SourceNotice::RebalanceFailed { reason } => {
                    warn!(dataflow = %self.key, core = self.core_id, reason = %Escaped(&reason), "Kafka consumer group rebalance failed");
                }
                SourceNotice::CommitFailed { failures, reason } => {
                    self.metrics.on_kafka_commit_failures(failures);
                    warn!(dataflow = %self.key, core = self.core_id, failures, reason = %Escaped(&reason), "Kafka offset commit failed; offsets are committed again later (records after the last commit may be delivered twice)");
                }
                SourceNotice::CannotCreate { reason } => {
                    self.metrics.set_connected(Side::Source, false);
                    warn!(dataflow = %self.key, core = self.core_id, reason = %Escaped(&reason), "cannot make the Kafka consumer; retrying");
                }
            }
        }
        up
    }
}
