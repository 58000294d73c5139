//! Says what a fuzz corpus reaches: for each input file, decodes the stream as the target does
//! and counts the packet types decoded and the kinds of `DecodeError` that ended a stream. A rough
//! map of coverage in the codec's own terms (libFuzzer's `cov:` counts edges, not meaning).
//!
//! `cargo run --release --example corpus_stats -- decode_to_server corpus/decode_to_server ...`
//! (a target name, then its folders; repeat for the other target).

use std::collections::BTreeMap;
use std::error::Error;

use bytes::BytesMut;
use sluice_codec::Role;

#[derive(Default)]
struct Tally {
    inputs: usize,
    packets: BTreeMap<String, usize>,
    errors: BTreeMap<&'static str, usize>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut role = None;
    let mut target = String::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "decode_to_server" => (role, target) = (Some(Role::Server), arg.clone()),
            "decode_to_client" => (role, target) = (Some(Role::Client), arg.clone()),
            dir => {
                let role = role.ok_or("name a target before its folders")?;
                let tally = tallies.entry(target.clone()).or_default();
                for entry in std::fs::read_dir(dir)? {
                    let data = std::fs::read(entry?.path())?;
                    let Some((&sel, stream)) = data.split_first() else {
                        continue;
                    };
                    tally.inputs += 1;
                    let mut codec = sluice_fuzz::codec_for(role, sel);
                    let mut buf = if sel & sluice_fuzz::FRAMED != 0 {
                        BytesMut::from(&sluice_fuzz::reframe(stream)[..])
                    } else {
                        BytesMut::from(stream)
                    };
                    loop {
                        match codec.decode(&mut buf) {
                            Ok(Some(p)) => {
                                let v = codec.version().map_or(0, |v| v.level());
                                let name = format!("{} (level {v})", p.packet_type().name());
                                *tally.packets.entry(name).or_default() += 1;
                            }
                            Ok(None) => break,
                            Err(e) => {
                                *tally.errors.entry(e.kind()).or_default() += 1;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    for (target, t) in &tallies {
        println!("{target}: {} inputs", t.inputs);
        println!("  packets decoded ({} kinds):", t.packets.len());
        for (name, n) in &t.packets {
            println!("    {name:<24} {n}");
        }
        println!("  errors that ended a stream ({} kinds):", t.errors.len());
        for (name, n) in &t.errors {
            println!("    {name:<28} {n}");
        }
    }
    Ok(())
}
