//! The load tool's workers: one thread per core, each with its own monoio event loop (io_uring,
//! or epoll where io_uring is not allowed), as the data plane runs, so that the load generator
//! is not what limits a run. Connections are spread over the workers; each is the data plane's
//! sans-IO MQTT [`Session`] with four small tasks around it: a reader (bytes in, events out:
//! latencies recorded, QoS 1 messages acknowledged at once), a writer (the session's bytes out,
//! through TLS and WebSocket when asked), a timer (keep alive, the stop) and, for a publisher,
//! the schedule (see [`super::schedule`]).
//!
//! Nothing is allocated per message on the publishing path but the payload's share of a pooled
//! 256 KiB buffer (and the topic, for a pattern with `%s` or `%r`); receiving records into
//! histograms and bitmaps sized up front or grown in 4 KiB steps. Bounds: one read buffer of
//! 256 KiB per connection; what a publisher queues is capped at [`TX_LIMIT`] bytes (the
//! publisher waits, and its messages are late, which the latency shows).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use sluice_codec::{ByteStr, Publish, PublishProperties, QoS};
use sluice_dataplane::bench_support::load::{
    Event, IoDriver, Notify, PublishError, Session, SessionConfig,
};
use sluice_dataplane::net::transport::Transport;

use super::args::{Endpoint, Sizes, Timer, TopicPattern};
use super::schedule::{Next, Schedule, step_of};
use super::shared::{Counters, Recorder, Report, Shared, ThreadResult};
use super::stamp::{self, Format, Stamp};
use super::ticker::Ticker;
use super::track::Tracker;

/// Read buffer per connection.
const READ_BUFFER: usize = 256 << 10;
/// The most bytes a publisher leaves queued for its writer before it waits.
pub const TX_LIMIT: usize = 1 << 20;
/// Payload buffers are carved from pooled chunks of this size.
const POOL_CHUNK: usize = 256 << 10;
/// Messages published before the publisher lets the writer run.
const BATCH: u32 = 256;

/// A publisher's part.
#[derive(Debug)]
pub struct PublisherPlan {
    /// Its number (in the stamp, and `%c`).
    pub index: u32,
    /// When to send.
    pub schedule: Schedule,
    /// The topic pattern.
    pub topic: Arc<TopicPattern>,
    /// `%r`'s bound.
    pub topic_random: u32,
    /// Payload sizes.
    pub sizes: Arc<Sizes>,
    /// Payload format.
    pub format: Format,
    /// Filler for payloads (at least the largest size).
    pub filler: Arc<[u8]>,
    /// QoS of the publishes.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
}

/// One connection to set up and run.
#[derive(Debug)]
pub struct ConnPlan {
    /// Client id, for messages.
    pub name: String,
    /// Where to connect.
    pub endpoint: Arc<Endpoint>,
    /// The session (subscriptions included for a subscriber).
    pub session: SessionConfig,
    /// `Some` for a publisher.
    pub publisher: Option<PublisherPlan>,
    /// For a subscriber: the group its tracker belongs to.
    pub group: Option<String>,
    /// How long connecting and subscribing may take.
    pub connect_timeout: Duration,
}

/// One worker thread's part of the run.
#[derive(Debug)]
pub struct WorkerPlan {
    /// The worker's number (its counters).
    pub index: usize,
    /// Pin to this CPU.
    pub cpu: Option<usize>,
    /// I/O driver.
    pub driver: IoDriver,
    /// Its connections.
    pub conns: Vec<ConnPlan>,
    /// How publishers wait.
    pub timer: Timer,
}

/// Starts a worker thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    plan: WorkerPlan,
    shared: Arc<Shared>,
    reports: Sender<Report>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("load-{}", plan.index))
        .spawn(move || {
            if let Some(cpu) = plan.cpu {
                let mut set = rustix::thread::CpuSet::new();
                set.set(cpu);
                let _ = rustix::thread::sched_setaffinity(None, &set);
            }
            let uring = match plan.driver {
                IoDriver::Epoll => false,
                IoDriver::Auto | IoDriver::IoUring => monoio::utils::detect_uring(),
            };
            let errors_to = Arc::clone(&shared);
            let main = worker_main(plan, shared, reports.clone());
            if uring
                && let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(1024)
                    .enable_timer()
                    .build()
            {
                rt.block_on(main);
                return;
            }
            match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
            {
                Ok(mut rt) => rt.block_on(main),
                Err(e) => {
                    errors_to.error(&format!("cannot start an event loop: {e}"));
                    let _ = reports.send(Report::Done(Box::new(ThreadResult {
                        total: super::shared::histogram(),
                        from_send: super::shared::histogram(),
                        steps: Vec::new(),
                        lateness: super::shared::histogram(),
                        receivers: Vec::new(),
                        sent: Vec::new(),
                        sent_steps: Vec::new(),
                        errors: vec![format!("cannot start an event loop: {e}")],
                    })));
                }
            }
        })
}

/// What the connections of one worker share.
struct Worker {
    index: usize,
    shared: Arc<Shared>,
    recorder: RefCell<Recorder>,
    ticker: Rc<Ticker>,
    timer: Timer,
    lateness: RefCell<Histogram<u64>>,
    receivers: RefCell<Vec<(String, Tracker)>>,
    sent: RefCell<Vec<(u32, u64)>>,
    sent_steps: RefCell<Vec<u64>>,
    errors: RefCell<Vec<String>>,
}

impl Worker {
    fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    fn error(&self, e: String) {
        self.shared.error(&e);
        let mut errors = self.errors.borrow_mut();
        // Bounded: a storm of failures keeps the first ones and a count.
        if errors.len() < 100 {
            errors.push(e);
        }
    }
}

async fn worker_main(plan: WorkerPlan, shared: Arc<Shared>, reports: Sender<Report>) {
    let steps = shared.boundaries.len().saturating_sub(1);
    let ticker = match Ticker::start(&format!("load-{}-ticker", plan.index)) {
        Ok(t) => t,
        Err(e) => {
            shared.error(&format!("cannot start a timer thread: {e}"));
            shared.stop();
            return;
        }
    };
    let ticker_task = monoio::spawn(Rc::clone(&ticker).run());
    let w = Rc::new(Worker {
        index: plan.index,
        shared,
        recorder: RefCell::new(Recorder::new(steps)),
        ticker,
        timer: plan.timer,
        lateness: RefCell::new(super::shared::histogram()),
        receivers: RefCell::new(Vec::new()),
        sent: RefCell::new(Vec::new()),
        sent_steps: RefCell::new(vec![0; steps.max(1)]),
        errors: RefCell::new(Vec::new()),
    });
    let done = Rc::new(Notify::new());
    let ticker = {
        let (w, done, reports) = (Rc::clone(&w), Rc::clone(&done), reports.clone());
        monoio::spawn(async move {
            // Once a second, and once more at the end (at once: no waiting out the second).
            while monoio::time::timeout(Duration::from_secs(1), done.notified())
                .await
                .is_err()
            {
                let h = w.recorder.borrow_mut().take_interval();
                let _ = reports.send(Report::Interval(h));
            }
        })
    };
    let handles: Vec<_> = plan
        .conns
        .into_iter()
        .map(|c| monoio::spawn(run_conn(c, Rc::clone(&w))))
        .collect();
    for h in handles {
        h.await;
    }
    done.notify();
    ticker.await;
    w.ticker.stop();
    ticker_task.await;
    let mut rec = w.recorder.borrow_mut();
    let last = rec.take_interval();
    let _ = reports.send(Report::Interval(last));
    let result = ThreadResult {
        total: rec.total.clone(),
        from_send: rec.from_send.clone(),
        steps: rec.steps.clone(),
        lateness: w.lateness.borrow().clone(),
        receivers: std::mem::take(&mut *w.receivers.borrow_mut()),
        sent: std::mem::take(&mut *w.sent.borrow_mut()),
        sent_steps: std::mem::take(&mut *w.sent_steps.borrow_mut()),
        errors: std::mem::take(&mut *w.errors.borrow_mut()),
    };
    let _ = reports.send(Report::Done(Box::new(result)));
}

/// One connection's state, shared by its tasks (one thread).
struct Conn {
    name: String,
    session: RefCell<Session>,
    transport: RefCell<Option<Transport>>,
    /// Wakes the writer.
    tx: Notify,
    /// Wakes the publisher (window or queue space freed) and the setup wait.
    wake: Notify,
    connected: Cell<bool>,
    subscribed: Cell<bool>,
    /// The connection is over (closed by either side).
    closed: Cell<bool>,
    /// We are ending it: the writer flushes and shuts the socket.
    closing: Cell<bool>,
    writer_done: Cell<bool>,
    canceller: RefCell<Option<Canceller>>,
    tracker: RefCell<Tracker>,
}

impl Conn {
    fn close(&self) {
        self.closed.set(true);
        self.tx.notify();
        self.wake.notify();
    }
}

async fn run_conn(plan: ConnPlan, w: Rc<Worker>) {
    let subscriber = plan.group.is_some();
    let ready_counter = if subscriber {
        &w.shared.receivers_ready
    } else {
        &w.shared.publishers_ready
    };
    let conn = match setup(&plan, &w).await {
        Ok(c) => c,
        Err(e) => {
            w.error(format!("{}: {e}", plan.name));
            w.shared
                .setup_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ready_counter.fetch_add(1, std::sync::atomic::Ordering::Release);
            if let Some(p) = &plan.publisher {
                w.sent.borrow_mut().push((p.index, 0));
            }
            return;
        }
    };
    ready_counter.fetch_add(1, std::sync::atomic::Ordering::Release);
    if let Some(p) = plan.publisher {
        let index = p.index;
        let sent = publish_loop(p, &plan.session.client_id, &conn, &w).await;
        w.sent.borrow_mut().push((index, sent));
        if let Some((start, _)) = w.shared.start() {
            let done_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            w.shared
                .publishers_last_done_ns
                .fetch_max(done_ns, std::sync::atomic::Ordering::AcqRel);
        }
        w.shared
            .publishers_done
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    // Stay connected (receiving, acknowledging) until the run stops.
    while !w.shared.stopped() && !conn.closed.get() {
        let _ = monoio::time::timeout(Duration::from_millis(50), conn.wake.notified()).await;
    }
    finish(&conn).await;
    if let Some(group) = plan.group {
        let t = std::mem::take(&mut *conn.tracker.borrow_mut());
        w.receivers.borrow_mut().push((group, t));
    }
}

/// Connects, starts the reader, writer and timer, and waits for CONNACK (and SUBACK).
async fn setup(plan: &ConnPlan, w: &Rc<Worker>) -> Result<Rc<Conn>, String> {
    let deadline = Instant::now() + plan.connect_timeout;
    let ep = &plan.endpoint;
    let stream = monoio::time::timeout(
        plan.connect_timeout,
        TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| format!("no TCP connection to {} within the connect timeout", ep.url))?
    .map_err(|e| format!("cannot connect to {}: {e}", ep.url))?;
    let _ = stream.set_nodelay(true);
    let transport = if ep.tls.is_some() || ep.ws.is_some() {
        Some(Transport::new(ep.tls.clone(), ep.ws.clone()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let now = Instant::now();
    let mut session = Session::new(plan.session.clone(), now).map_err(|e| e.to_string())?;
    session.handle_connected(now);
    let conn = Rc::new(Conn {
        name: plan.name.clone(),
        session: RefCell::new(session),
        transport: RefCell::new(transport),
        tx: Notify::new(),
        wake: Notify::new(),
        connected: Cell::new(false),
        subscribed: Cell::new(plan.group.is_none()),
        closed: Cell::new(false),
        closing: Cell::new(false),
        writer_done: Cell::new(false),
        canceller: RefCell::new(Some(Canceller::new())),
        tracker: RefCell::new(Tracker::new()),
    });
    let (rd, wr) = stream.into_split();
    monoio::spawn(read_loop(Rc::clone(&conn), Rc::clone(w), rd));
    monoio::spawn(write_loop(Rc::clone(&conn), wr));
    monoio::spawn(timer_loop(Rc::clone(&conn), Rc::clone(w)));
    conn.tx.notify();
    while !(conn.connected.get() && conn.subscribed.get()) {
        if conn.closed.get() {
            return Err(format!("connection to {} closed during setup", ep.url));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || w.shared.stopped() {
            conn.closing.set(true);
            conn.close();
            cancel(&conn);
            return Err(format!(
                "no {} from {} within the connect timeout",
                if conn.connected.get() {
                    "SUBACK"
                } else {
                    "CONNACK"
                },
                ep.url
            ));
        }
        let _ =
            monoio::time::timeout(left.min(Duration::from_millis(50)), conn.wake.notified()).await;
    }
    Ok(conn)
}

fn cancel(conn: &Conn) {
    if let Some(c) = conn.canceller.borrow_mut().take() {
        c.cancel();
    }
}

/// Sends DISCONNECT, lets the writer flush it, and ends the reader.
async fn finish(conn: &Rc<Conn>) {
    if !conn.closed.get() {
        conn.session.borrow_mut().disconnect(Instant::now());
    }
    conn.closing.set(true);
    conn.tx.notify();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !conn.writer_done.get() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    cancel(conn);
    conn.close();
}

/// Publishes on schedule until the schedule ends, the run stops or the connection is lost.
/// Returns how many messages were handed to the session.
async fn publish_loop(mut p: PublisherPlan, client_id: &ByteStr, conn: &Conn, w: &Worker) -> u64 {
    let Some((start, start_unix)) = w.shared.wait_start().await else {
        return 0;
    };
    let mut rng = fastrand::Rng::with_seed(u64::from(p.index) ^ SEED);
    let mut pool = BytesMut::with_capacity(POOL_CHUNK);
    let mut topic_buf = String::new();
    let fixed_topic = (!p.topic.per_message()).then(|| {
        let mut s = String::new();
        p.topic.render(p.index, client_id, 0, 0, &mut s);
        ByteStr::from(s)
    });
    let (_, largest) = p.sizes.bounds();
    let counters = w.counters();
    let mut lateness = super::shared::histogram();
    loop {
        if w.shared.stopped() || conn.closed.get() {
            break;
        }
        let now = Instant::now();
        let t = u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX);
        let mut wait_until = None;
        let mut blocked = false;
        let mut done = false;
        let mut n = 0;
        {
            let mut s = conn.session.borrow_mut();
            loop {
                match p.schedule.next(t) {
                    Next::Due(at) => {
                        if (p.qos == QoS::AtLeastOnce && !s.can_publish())
                            || s.transmit_len() >= TX_LIMIT
                        {
                            blocked = true;
                            break;
                        }
                        let seq = p.schedule.total();
                        let len = p.sizes.sample(&mut rng).min(largest);
                        if pool.capacity() - pool.len() < len {
                            pool = BytesMut::with_capacity(POOL_CHUNK.max(len));
                        }
                        stamp::write(
                            p.format,
                            Stamp {
                                publisher: p.index,
                                seq,
                                sent_ns: start_unix + at,
                                actual_ns: start_unix + t,
                            },
                            len,
                            &p.filler,
                            &mut pool,
                        );
                        let payload: Bytes = pool.split().freeze();
                        let topic = match &fixed_topic {
                            Some(t) => t.clone(),
                            None => {
                                topic_buf.clear();
                                let r = rng.u32(0..p.topic_random.max(1));
                                p.topic.render(p.index, client_id, seq, r, &mut topic_buf);
                                ByteStr::from(topic_buf.clone())
                            }
                        };
                        let publish = Publish {
                            dup: false,
                            qos: p.qos,
                            retain: p.retain,
                            topic,
                            packet_id: None,
                            properties: PublishProperties::new(),
                            payload,
                        };
                        match s.publish(publish, now) {
                            Ok(_) => {}
                            Err(PublishError::Full) => {
                                blocked = true;
                                break;
                            }
                            Err(PublishError::NotConnected) => {
                                done = true;
                                break;
                            }
                            Err(e) => {
                                drop(s);
                                w.error(format!("{}: cannot publish: {e}", conn.name));
                                return p.schedule.total();
                            }
                        }
                        p.schedule.sent();
                        Counters::add(&counters.sent, 1);
                        lateness.saturating_record(t.saturating_sub(at).max(1));
                        if let Some(c) = w
                            .sent_steps
                            .borrow_mut()
                            .get_mut(step_of(&w.shared.boundaries, at))
                        {
                            *c += 1;
                        }
                        n += 1;
                        if n >= BATCH {
                            break;
                        }
                    }
                    Next::At(at) => {
                        wait_until = Some(at);
                        break;
                    }
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
        }
        conn.tx.notify();
        if done {
            break;
        }
        if blocked {
            let _ = monoio::time::timeout(Duration::from_millis(20), conn.wake.notified()).await;
        } else if let Some(at) = wait_until {
            let target = start + Duration::from_nanos(at);
            match w.timer {
                Timer::Precise => w.ticker.sleep_until(target).await,
                Timer::Wheel => {
                    let left = target.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        monoio::time::sleep(left).await;
                    }
                }
            }
        } else {
            yield_now().await;
        }
    }
    let _ = w.lateness.borrow_mut().add(&lateness);
    p.schedule.total()
}

/// Mixed with the publisher's number to seed its sizes and `%r` topics: runs repeat.
const SEED: u64 = 0x5eed_10ad;

/// Lets the other tasks of this thread run once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

async fn read_loop(conn: Rc<Conn>, w: Rc<Worker>, mut rd: OwnedReadHalf<TcpStream>) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let layered = conn.transport.borrow().is_some();
    let mut app = if layered {
        BytesMut::with_capacity(READ_BUFFER)
    } else {
        BytesMut::new()
    };
    let counters = w.counters();
    loop {
        if conn.closed.get() {
            break;
        }
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
            break;
        };
        let start = buf.len();
        let (res, slice) = rd.cancelable_read(buf.slice_mut(start..), handle).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                lost(&conn, &w, "the broker closed the connection");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                lost(&conn, &w, &format!("read failed: {e}"));
                break;
            }
        }
        let input = if layered {
            let r = conn
                .transport
                .borrow_mut()
                .as_mut()
                .map(|t| t.read(&mut buf, &mut app));
            conn.tx.notify();
            if let Some(Err(e)) = r {
                lost(&conn, &w, &format!("transport: {e}"));
                break;
            }
            &mut app
        } else {
            &mut buf
        };
        let now = Instant::now();
        let mut s = conn.session.borrow_mut();
        s.handle_bytes(input, now);
        let mut ended = None;
        let start = w.shared.start();
        let now_unix = w.shared.unix_ns(now);
        let mut received = 0;
        let mut foreign = 0;
        let mut acked = 0;
        let mut refused = 0;
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Message { publish, ack } => {
                    match (stamp::read(&publish.payload), start) {
                        (Some(st), Some((_, start_unix))) if st.sent_ns >= start_unix => {
                            let step = step_of(&w.shared.boundaries, st.sent_ns - start_unix);
                            w.recorder.borrow_mut().record(now_unix, &st, step);
                            conn.tracker.borrow_mut().record(st.publisher, st.seq);
                            received += 1;
                        }
                        _ => foreign += 1,
                    }
                    if let Some(token) = ack {
                        s.ack(token, now);
                    }
                }
                Event::Connected { .. } => conn.connected.set(true),
                Event::Subscribed { reason_codes } => {
                    if let Some(rc) = reason_codes.iter().find(|rc| rc.is_error()) {
                        ended = Some(format!("subscription refused: {rc:?}"));
                    } else {
                        conn.subscribed.set(true);
                    }
                }
                Event::Acked { .. } => acked += 1,
                Event::Refused { reason_code, .. } => {
                    refused += 1;
                    if refused == 1 {
                        w.error(format!("{}: publish refused: {reason_code:?}", conn.name));
                    }
                }
                Event::Reauthenticated => {}
                Event::Closed { reason } => ended = Some(reason.to_string()),
            }
        }
        drop(s);
        Counters::add(&counters.received, received);
        Counters::add(&counters.foreign, foreign);
        Counters::add(&counters.acked, acked);
        Counters::add(&counters.refused, refused);
        conn.tx.notify();
        conn.wake.notify();
        if let Some(reason) = ended {
            lost(&conn, &w, &reason);
            break;
        }
    }
    conn.close();
}

/// The connection ended: counted as lost unless the run is stopping.
fn lost(conn: &Conn, w: &Worker, why: &str) {
    if !conn.closing.get() && !w.shared.stopped() && !conn.closed.get() {
        Counters::add(&w.counters().disconnects, 1);
        w.error(format!("{}: connection lost: {why}", conn.name));
    }
    conn.close();
}

async fn write_loop(conn: Rc<Conn>, mut wr: OwnedWriteHalf<TcpStream>) {
    let mut app = BytesMut::with_capacity(64 << 10);
    let mut out = BytesMut::with_capacity(64 << 10);
    loop {
        {
            let mut s = conn.session.borrow_mut();
            let mut t = conn.transport.borrow_mut();
            match t.as_mut() {
                None => {
                    s.poll_transmit(&mut out);
                }
                Some(t) => {
                    if s.poll_transmit(&mut app) {
                        let _ = t.write(&app);
                        app.clear();
                    }
                    if conn.closing.get() && s.transmit_len() == 0 {
                        t.close();
                    }
                    t.poll_write(&mut out);
                }
            }
        }
        if out.is_empty() {
            if conn.closing.get() || conn.closed.get() {
                break;
            }
            conn.tx.notified().await;
            continue;
        }
        let (res, b) = wr.write_all(out).await;
        out = b;
        out.clear();
        conn.wake.notify();
        if res.is_err() {
            conn.close();
            break;
        }
    }
    let _ = wr.shutdown().await;
    conn.writer_done.set(true);
}

async fn timer_loop(conn: Rc<Conn>, w: Rc<Worker>) {
    loop {
        if conn.closed.get() {
            break;
        }
        let next = conn.session.borrow().poll_timeout();
        let now = Instant::now();
        let wait = next
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .min(Duration::from_millis(100));
        if !wait.is_zero() {
            monoio::time::sleep(wait).await;
        }
        if conn.closed.get() {
            break;
        }
        let now = Instant::now();
        let ended = {
            let mut s = conn.session.borrow_mut();
            let mut ended = None;
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
                while let Some(ev) = s.poll_event() {
                    if let Event::Closed { reason } = ev {
                        ended = Some(reason.to_string());
                    }
                }
            }
            ended
        };
        conn.tx.notify();
        if let Some(reason) = ended {
            lost(&conn, &w, &reason);
            // Let the writer send the DISCONNECT, then end the reader.
            conn.closing.set(true);
            monoio::time::sleep(Duration::from_millis(100)).await;
            cancel(&conn);
            break;
        }
    }
}
