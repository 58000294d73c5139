//! Benchmark support, not an API: a connected client `Session` fed with broker bytes, so that
//! `dataplane/benches/session.rs` can measure `Session::handle_bytes` from outside the crate.
//! [`load`] lends the client session to the load tool (`sluice-perf load`); [`fuzz`] holds the
//! entry points of the fuzz targets (`fuzz/`); [`parquet`] the LocalStorage destination's batch
//! path (`benches/parquet.rs`).

pub mod fuzz;
pub mod load;
pub mod parquet;

use std::num::NonZeroU16;
use std::time::Instant;

use bytes::BytesMut;
use sluice_codec::{ByteStr, Codec, ConnAck, Packet, ProtocolVersion, Role};

use crate::mqtt::session::{AckToken, Event, Session, SessionConfig};

/// A client session that a broker codec has connected (CONNACK without Session Present, no
/// subscriptions). See [`SessionBench::feed`].
#[derive(Debug)]
pub struct SessionBench {
    session: Session,
    tokens: Vec<AckToken>,
    scratch: BytesMut,
    now: Instant,
}

impl SessionBench {
    /// A session of `protocol` connected to a fake broker, with a Receive Maximum of 65,535 so
    /// that a buffer of up to that many QoS 1 messages is taken as a broker would send it.
    ///
    /// # Panics
    /// If the session refuses its configuration or the CONNACK (a bug).
    pub fn connected(protocol: ProtocolVersion) -> Self {
        let now = Instant::now();
        let mut config = SessionConfig::new(protocol, ByteStr::from_static("bench"));
        config.receive_maximum = NonZeroU16::MAX;
        let mut session = Session::new(config, now).expect("valid configuration");
        session.handle_connected(now);
        let broker = Codec::new(Role::Server, protocol);
        let mut buf = BytesMut::new();
        broker
            .encode(&Packet::ConnAck(ConnAck::new(false)), &mut buf)
            .expect("CONNACK encodes");
        session.handle_bytes(&mut buf, now);
        let mut scratch = BytesMut::new();
        session.poll_transmit(&mut scratch);
        while session.poll_event().is_some() {}
        assert!(session.is_connected(), "the CONNACK was taken");
        Self {
            session,
            tokens: Vec::new(),
            scratch,
            now,
        }
    }

    /// The timed part: gives `buf` to `Session::handle_bytes`, then takes every event, keeping
    /// the QoS 1 tokens and dropping the messages (as a consumer that copied them onward
    /// would). Returns the number of messages.
    pub fn feed(&mut self, buf: &mut BytesMut) -> usize {
        self.session.handle_bytes(buf, self.now);
        let mut n = 0;
        while let Some(event) = self.session.poll_event() {
            if let Event::Message { publish, ack } = event {
                std::hint::black_box(&publish);
                self.tokens.extend(ack);
                n += 1;
            }
        }
        n
    }

    /// The untimed part: acknowledges every message [`SessionBench::feed`] took, so that their
    /// packet identifiers are free again, and throws away the PUBACKs.
    ///
    /// # Panics
    /// If the connection closed (the frames were refused).
    pub fn ack_all(&mut self) {
        for token in self.tokens.drain(..) {
            self.session.ack(token, self.now);
        }
        self.scratch.clear();
        self.session.poll_transmit(&mut self.scratch);
        assert!(
            self.session.is_connected(),
            "the session closed the connection"
        );
    }
}
