//! Writes the seed corpus `fuzz/seeds/<target>/`. For the codec's targets (this file): from the
//! sample captures (`samples/*.bin`, split into frames with the codec) and from the hex frames of
//! the mqtt-packet fixtures (`tests/vectors/mqtt-packet/fixtures.json`, or the path in
//! `SLUICE_FIXTURES`); for the others, see `targets.rs`.
//!
//! Each codec seed is the selector byte of `sluice_fuzz::codec_for` followed by:
//! - one frame: to keep the set small (a few dozen files), one per target, codec and packet type,
//!   the longest of those that the codec decodes, since it carries the most fields and
//!   properties, or a refused frame where no other is known (AUTH in 3.1.1, for instance);
//! - a whole capture (to a server from a server awaiting CONNECT);
//! - framed input (`sluice_fuzz::reframe`): each capture, and per codec the fixture frames
//!   that it decodes.
//!
//! Every seed then goes through `sluice_fuzz::decode_stream`, the targets' checks. Run it
//! from `fuzz/` with `cargo run --example gen_seeds`; it replaces the `.bin` files in the folders
//! but `regression-*.bin`: inputs that once failed, kept by hand.

mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use sluice_codec::{Codec, PacketType, ProtocolVersion, Role, decode_varint};
use sluice_fuzz::{FRAMED, SEPARATOR, codec_for, decode_stream};

/// Selector bytes (see `sluice_fuzz::codec_for`).
const SEL_V311: u8 = 0;
const SEL_V5: u8 = 1;
const SEL_AWAIT_CONNECT: u8 = 2;

/// Frames for one target's codec, with the role that decodes them.
type Frames = (Role, Vec<Vec<u8>>);

#[derive(Default)]
struct Seeds {
    /// (target, file name) to contents; a frame's name is its slot: codec and packet type.
    files: BTreeMap<(&'static str, String), (Role, Vec<u8>)>,
    /// The slots whose frame the codec refuses, to be replaced by any frame it decodes.
    refused: BTreeSet<(&'static str, String)>,
}

impl Seeds {
    fn insert(&mut self, role: Role, name: String, seed: Vec<u8>) {
        self.files.insert((target(role), name), (role, seed));
    }

    /// Adds `frame` unless a longer one (or, for a frame the codec refuses, any) holds its slot.
    fn add_frame(&mut self, role: Role, sel: u8, frame: &[u8]) {
        let Some(packet) = PacketType::from_nibble(frame[0] >> 4) else {
            return;
        };
        let refused = !decodes(role, sel, frame);
        let name = format!("{}-{}.bin", mode(sel), packet.name().to_ascii_lowercase());
        let key = (target(role), name);
        let better = match self.files.get(&key) {
            None => true,
            Some(_) if refused => false,
            Some((_, held)) => self.refused.contains(&key) || held.len() < frame.len() + 1,
        };
        if better {
            if refused {
                self.refused.insert(key.clone());
            } else {
                self.refused.remove(&key);
            }
            self.files.insert(key, (role, [&[sel][..], frame].concat()));
        }
    }

    fn write(&self, root: &Path) -> Result<(), Box<dyn Error>> {
        for target in [target(Role::Server), target(Role::Client)] {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.ends_with(".bin") && !name.starts_with("regression-") {
                    std::fs::remove_file(path)?;
                }
            }
        }
        for ((target, name), (_, bytes)) in &self.files {
            std::fs::write(root.join(target).join(name), bytes)?;
        }
        Ok(())
    }
}

fn target(role: Role) -> &'static str {
    match role {
        Role::Server => "decode_to_server",
        Role::Client => "decode_to_client",
    }
}

fn mode(sel: u8) -> &'static str {
    match sel {
        SEL_V311 => "v311",
        SEL_V5 => "v5",
        _ => "await",
    }
}

fn selector(version: ProtocolVersion) -> u8 {
    match version {
        ProtocolVersion::V311 => SEL_V311,
        ProtocolVersion::V5 => SEL_V5,
    }
}

/// Whether the codec that `sel` chooses decodes `frame`, all of it.
fn decodes(role: Role, sel: u8, frame: &[u8]) -> bool {
    let mut buf = BytesMut::from(frame);
    matches!(codec_for(role, sel).decode(&mut buf), Ok(Some(_))) && buf.is_empty()
}

/// Splits a capture into whole frames with the codec's framing.
fn frames<'a>(codec: &Codec, mut bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, Box<dyn Error>> {
    let mut out = Vec::new();
    while let Some(frame) = codec.next_frame(bytes)? {
        out.push(frame.bytes);
        bytes = &bytes[frame.len()..];
    }
    if !bytes.is_empty() {
        return Err(format!("{} trailing bytes after the last frame", bytes.len()).into());
    }
    Ok(out)
}

/// Framed input of `frames` for the codec `sel`: each frame without its remaining length.
fn framed(sel: u8, frames: &[&[u8]]) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut out = vec![sel | FRAMED];
    for (i, frame) in frames.iter().enumerate() {
        let (_, n) = decode_varint(&frame[1..])?.ok_or("frame without a whole remaining length")?;
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.push(frame[0]);
        out.extend_from_slice(&frame[1 + n..]);
    }
    Ok(out)
}

fn add_samples(seeds: &mut Seeds, dir: &Path) -> Result<(), Box<dyn Error>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(stem) = name.strip_suffix(".bin") else {
            continue;
        };
        let version = if stem.contains("-v5.") {
            ProtocolVersion::V5
        } else if stem.contains("-v311.") {
            ProtocolVersion::V311
        } else {
            return Err(format!("{name}: no protocol version in the name").into());
        };
        let role = if stem.ends_with(".to-server") {
            Role::Server
        } else if stem.ends_with(".to-client") {
            Role::Client
        } else {
            return Err(format!("{name}: no direction in the name").into());
        };
        let bytes = std::fs::read(&path)?;
        let frames = frames(&Codec::new(role, version), &bytes)?;
        for frame in &frames {
            seeds.add_frame(role, selector(version), frame);
        }
        // The whole session too: to a server as it really starts, awaiting CONNECT.
        let sel = match role {
            Role::Server => SEL_AWAIT_CONNECT,
            Role::Client => selector(version),
        };
        let stream = stem.replace('.', "-");
        let file = format!("{}-stream-{stream}.bin", mode(sel));
        seeds.insert(role, file, [&[sel][..], &bytes].concat());
        let file = format!("framed-{}-stream-{stream}.bin", mode(sel));
        seeds.insert(role, file, framed(sel, &frames)?);
    }
    Ok(())
}

fn add_fixtures(seeds: &mut Seeds, path: &Path) -> Result<(), Box<dyn Error>> {
    let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(path)?)?;
    // Per (target, selector): the frames other than CONNECT that the codec decodes, in order.
    let mut decodable: BTreeMap<(&str, u8), Frames> = BTreeMap::new();
    for record in &records {
        if !record["kind"]
            .as_str()
            .unwrap_or_default()
            .starts_with("parse")
        {
            continue;
        }
        let hex = record["bytes"]["hex"]
            .as_str()
            .or_else(|| record["fixture"]["hex"].as_str());
        let Some(hex) = hex else { continue };
        let frame = decode_hex(hex)?;
        let Some(packet) = frame.first().and_then(|b| PacketType::from_nibble(b >> 4)) else {
            continue;
        };
        let v5 = record["opts"]["protocolVersion"].as_u64() == Some(5);
        for role in [Role::Server, Role::Client] {
            if !packet.sent_to(role) {
                continue;
            }
            let sel = if packet == PacketType::Connect {
                SEL_AWAIT_CONNECT
            } else if v5 {
                SEL_V5
            } else {
                SEL_V311
            };
            seeds.add_frame(role, sel, &frame);
            if sel != SEL_AWAIT_CONNECT && decodes(role, sel, &frame) {
                let entry = decodable
                    .entry((target(role), sel))
                    .or_insert((role, vec![]));
                entry.1.push(frame.clone());
            }
        }
    }
    for ((_, sel), (role, frames)) in decodable {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let file = format!("framed-{}-fixtures.bin", mode(sel));
        seeds.insert(role, file, framed(sel, &frames)?);
    }
    Ok(())
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd-length hex: {hex}").into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&hex[i..i + 2], 16)?))
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The copy in the repository when there is one, else the shared vectors beside it.
    let fixtures = std::env::var_os("SLUICE_FIXTURES").map_or_else(
        || fuzz_dir.join("../tests/vectors/mqtt-packet/fixtures.json"),
        PathBuf::from,
    );
    let mut seeds = Seeds::default();
    add_samples(&mut seeds, &fuzz_dir.join("../samples"))?;
    add_fixtures(&mut seeds, &fixtures)?;
    let mut per_target = BTreeMap::<&str, usize>::new();
    for ((target, _), (role, seed)) in &seeds.files {
        decode_stream(*role, seed);
        *per_target.entry(target).or_default() += 1;
    }
    seeds.write(&fuzz_dir.join("seeds"))?;
    let others = targets::write(&fuzz_dir.join("seeds"))?;
    for (target, n) in per_target.into_iter().chain(others) {
        println!("fuzz/seeds/{target}: {n} files, each passes the target's checks");
    }
    Ok(())
}
