//! A small blocking MQTT client on `sluice-codec`, for tests and for measuring the replay broker
//! alone. [`Client::drain`] is the "trivial reader": big reads, frames walked in place with
//! [`Codec::next_frame`], PUBACKs written once per read. It is not a general MQTT client: no
//! reconnects, no keep alive, no QoS 2.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use sluice_codec::{
    ByteStr, Codec, ConnAck, Connect, Packet, PacketType, ProtocolVersion, PubAck, Publish, QoS,
    Role, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
};

use crate::payload;
use crate::readbuf::ReadBuf;

/// A connected client.
#[derive(Debug)]
pub struct Client {
    sock: TcpStream,
    codec: Codec,
    rbuf: ReadBuf,
    next_id: u16,
}

/// What [`Client::drain`] received.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// PUBLISHes received.
    pub messages: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Sequence numbers, in arrival order, when asked for.
    pub seqs: Vec<u64>,
    /// Time of the first read that held a PUBLISH.
    pub first: Option<Instant>,
    /// Time of the last read that held a PUBLISH.
    pub last: Option<Instant>,
}

impl Drained {
    /// Messages per second from the first to the last read.
    pub fn per_sec(&self) -> Option<f64> {
        let secs = self
            .last?
            .checked_duration_since(self.first?)?
            .as_secs_f64();
        (secs > 0.0).then(|| self.messages as f64 / secs)
    }
}

const READ_BUF_BYTES: usize = 256 * 1024;

impl Client {
    /// Connects, sends CONNECT (clean start, the given Receive Maximum in 5.0) and waits for
    /// CONNACK.
    ///
    /// # Errors
    /// I/O errors, a refused or malformed CONNACK.
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        receive_maximum: Option<u16>,
    ) -> anyhow::Result<(Self, ConnAck)> {
        let sock = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        sock.set_nodelay(true)?;
        let mut client = Self {
            sock,
            codec: Codec::new(Role::Client, version),
            rbuf: ReadBuf::new(READ_BUF_BYTES),
            next_id: 0,
        };
        let mut connect = Connect::new(version, ByteStr::from(client_id.to_owned()), 0);
        if version == ProtocolVersion::V5 {
            connect.properties.receive_maximum = receive_maximum.and_then(NonZeroU16::new);
        }
        client.send(&Packet::Connect(Box::new(connect)))?;
        match client.recv()? {
            Packet::ConnAck(ack) if !ack.reason_code.is_error() => Ok((client, ack)),
            Packet::ConnAck(ack) => bail!("CONNACK refused: {:?}", ack.reason_code),
            other => bail!("expected CONNACK, got {:?}", other.packet_type()),
        }
    }

    /// Sets the socket's read timeout (`None` blocks).
    ///
    /// # Errors
    /// From the socket.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    /// Encodes and writes one packet.
    ///
    /// # Errors
    /// Encoding or I/O errors.
    pub fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        self.codec.encode(packet, &mut buf)?;
        self.sock.write_all(&buf)?;
        Ok(())
    }

    /// Publishes one message; at QoS 1 with the next packet identifier (the PUBACK is not
    /// awaited). Returns the packet identifier.
    ///
    /// # Errors
    /// Encoding or I/O errors.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
    ) -> anyhow::Result<Option<NonZeroU16>> {
        let mut p = Publish::new(
            ByteStr::from(topic.to_owned()),
            Bytes::copy_from_slice(payload),
        );
        if qos != QoS::AtMostOnce {
            p.qos = qos;
            p.packet_id = Some(self.packet_id());
        }
        let id = p.packet_id;
        self.send(&Packet::Publish(p))?;
        Ok(id)
    }

    /// Subscribes to one filter and waits for its SUBACK.
    ///
    /// # Errors
    /// I/O errors, or another packet before the SUBACK.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<SubAck> {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            filters: vec![Subscription {
                filter: ByteStr::from(filter.to_owned()),
                options: SubscriptionOptions::qos(qos),
            }],
        }))?;
        match self.recv()? {
            Packet::SubAck(ack) if ack.packet_id == packet_id => Ok(ack),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    fn packet_id(&mut self) -> NonZeroU16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        NonZeroU16::new(self.next_id).unwrap_or(NonZeroU16::MIN)
    }

    /// Reads until one whole packet is there and decodes it.
    ///
    /// # Errors
    /// I/O errors (a read timeout gives `WouldBlock` / `TimedOut`), end of stream, decode errors.
    pub fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(frame) = self.codec.next_frame(self.rbuf.data())? {
                let (len, header_len) = (frame.len(), frame.header_len);
                let bytes = Bytes::copy_from_slice(frame.bytes);
                self.rbuf.consume(len);
                return Ok(self.codec.decode_frame(&bytes, header_len)?);
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer; errors at the end of the stream.
    fn fill(&mut self) -> anyhow::Result<usize> {
        let n = self.sock.read(self.rbuf.spare())?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.rbuf.filled(n);
        Ok(n)
    }

    /// The trivial reader: receives PUBLISHes (acknowledging QoS 1 ones when `ack` is set,
    /// with one write per read) until `done(received_so_far)` says so. `done` is asked after
    /// every read and whenever a read times out (see [`Client::set_read_timeout`]), so a shared
    /// counter can end several readers. Other packets are decoded and dropped.
    ///
    /// # Errors
    /// I/O errors other than a read timeout, decode errors, the end of the stream.
    pub fn drain(
        &mut self,
        ack: bool,
        keep_seqs: bool,
        mut done: impl FnMut(u64) -> bool,
    ) -> anyhow::Result<Drained> {
        let mut out = Drained::default();
        let mut acks = BytesMut::new();
        loop {
            let now = Instant::now();
            let before = out.messages;
            while let Some(frame) = self.codec.next_frame(self.rbuf.data())? {
                let len = frame.len();
                if frame.packet_type == PacketType::Publish {
                    let p = self.codec.decode_publish(&frame)?;
                    out.messages += 1;
                    out.payload_bytes += p.payload.len() as u64;
                    if keep_seqs {
                        out.seqs
                            .push(payload::parse_seq(p.payload).context("a sequence number")?);
                    }
                    if let (true, Some(id)) = (ack, p.packet_id) {
                        self.codec
                            .encode(&Packet::PubAck(PubAck::new(id)), &mut acks)?;
                    }
                } else {
                    let bytes = Bytes::copy_from_slice(frame.bytes);
                    let header_len = frame.header_len;
                    self.codec.decode_frame(&bytes, header_len)?;
                }
                self.rbuf.consume(len);
            }
            if out.messages > before {
                out.first.get_or_insert(now);
                out.last = Some(now);
            }
            if !acks.is_empty() {
                self.sock.write_all(&acks)?;
                acks.clear();
            }
            if done(out.messages) {
                break;
            }
            if let Err(e) = self.fill() {
                match e.downcast_ref::<io::Error>().map(io::Error::kind) {
                    Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    _ => return Err(e),
                }
            }
        }
        Ok(out)
    }
}
