//! `mqtt-inspect`'s command line (here so that `sluice-gen` can write its completions and man
//! page; the program is src/bin/mqtt-inspect.rs).

use clap::{Parser, ValueEnum};
use sluice_codec::{ProtocolVersion, Role};

/// Decodes MQTT control packets and prints one JSON object per frame.
#[derive(Debug, Parser)]
#[command(name = "mqtt-inspect", version = env!("SLUICE_VERSION"))]
#[command(
    after_help = "Exit status: 0 if every frame decoded, 1 if any failed, 2 on a usage error."
)]
pub struct Options {
    /// Protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.0 (also 3.1.1 and 5.0) [default: 5; without
    /// it a CONNECT's own protocol level is used]
    #[arg(short, long, value_name = "4|5", value_parser = parse_protocol)]
    pub protocol: Option<ProtocolVersion>,
    /// Which side's packets the input holds
    #[arg(short, long, value_enum, default_value_t = Direction::ToServer)]
    pub direction: Direction,
    /// Input is a raw byte stream; otherwise hex, one or more frames per line (whitespace, ':',
    /// ',' and 0x prefixes ignored; '#' starts a comment)
    #[arg(long)]
    pub raw: bool,
    /// Refuse frames longer than this [default: no limit beyond the protocol's 268435460]
    #[arg(long, value_name = "BYTES")]
    pub max_packet_size: Option<u32>,
    /// Input file; '-' or absent reads standard input
    #[arg(value_name = "FILE")]
    pub input: Option<String>,
}

/// Which side's packets the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Packets a client sends (CONNECT, SUBSCRIBE, ...), decoded as a server does.
    ToServer,
    /// Packets a server sends (CONNACK, SUBACK, ...), decoded as a client does.
    ToClient,
}

impl Options {
    /// The protocol level, 5.0 unless given.
    pub fn version(&self) -> ProtocolVersion {
        self.protocol.unwrap_or(ProtocolVersion::V5)
    }

    /// The role whose packets are decoded.
    pub fn role(&self) -> Role {
        match self.direction {
            Direction::ToServer => Role::Server,
            Direction::ToClient => Role::Client,
        }
    }
}

fn parse_protocol(v: &str) -> Result<ProtocolVersion, String> {
    match v {
        "4" | "3.1.1" => Ok(ProtocolVersion::V311),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        _ => Err("must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0)".to_owned()),
    }
}
