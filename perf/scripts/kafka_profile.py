#!/usr/bin/env python3
"""Where the data plane's time goes in an MQTT -> Kafka run, from a `perf record` with call
graphs (`sluice-perf bench --perf-record --perf-arg=--call-graph=dwarf,16384 ...`).

Reads `perf script` output (stdin, or run on the perf.data named as argument) and puts every
sample in one bucket by its thread and call chain (first match in BUCKETS), then prints the
buckets' shares of all samples, and for the samples under `rd_kafka_producev` (the per-message
send) the share of its parts. The buckets are the question "our code or librdkafka": our sink,
core and MQTT source; librdkafka's send path, its event polling, its own threads.

    perf script -i perf.data | perf/scripts/kafka_profile.py
    perf/scripts/kafka_profile.py path/to/perf.data
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

# (bucket, thread name prefix or None, markers: any frame containing one of them).
BUCKETS: list[tuple[str, str | None, tuple[str, ...]]] = [
    ("librdkafka broker thread: building ProduceRequests", "rdk:", ("rd_kafka_msgset_create_ProduceRequest",)),
    ("librdkafka broker thread: socket writes", "rdk:", ("rd_kafka_transport_socket_sendmsg", "rd_kafka_transport_send")),
    ("librdkafka broker thread: responses, delivery reports", "rdk:", ("rd_kafka_handle_Produce", "rd_kafka_recv", "rd_kafka_dr_msgq", "rd_kafka_transport_io_serve")),
    ("librdkafka broker thread: other", "rdk:", ("",)),
    ("send: librdkafka rd_kafka_producev", None, ("rd_kafka_producev",)),
    ("send: rdkafka crate BaseProducer::send (topic CString, ...)", None, ("BaseProducer<C,Part>::send",)),
    ("sink: KafkaSink::offer (record, headers, slot)", None, ("KafkaSink as sluice_dataplane::sink::Sink>::offer",)),
    ("poll: our delivery callback (SinkContext)", None, ("SinkContext",)),
    ("poll: librdkafka events + rdkafka BaseProducer::poll", None, ("BaseProducer<C,Part>::poll", "rd_kafka_queue_poll", "rd_kafka_event")),
    ("sink: KafkaSink::take_reports (outcomes)", None, ("KafkaSink::take_reports",)),
    ("core: outcomes, PUBACKs to the source", None, ("take_outcomes", "Core<S,K>::complete", "Session::ack")),
    ("MQTT source: decode, messages", None, ("Session::handle_bytes", "MqttSource", "poll_message", "next_frame")),
    ("core: offer, routing", None, ("Core<S,K>::offer", "on_message", "transform::route")),
    ("I/O: io_uring, socket syscalls", None, ("io_uring", "do_syscall_64", "entry_SYSCALL")),
    ("other", None, ("",)),
]

# Parts of rd_kafka_producev, first match from the leaf up.
PRODUCEV_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("clock reads (rd_clock)", ("rd_clock", "clock_gettime", "gettimeofday", "rd_uclock")),
    ("message allocation and copy (rd_kafka_msg_new)", ("rd_kafka_msg_new",)),
    ("partitioner (sticky, toppar lookup)", ("rd_kafka_msg_partitioner",)),
    ("topic lookup by name (rd_kafka_topic_new/destroy)", ("rd_kafka_topic_new", "rd_kafka_topic_destroy", "rd_kafka_topic_find")),
    ("locks", ("pthread_mutex", "pthread_rwlock", "mtx_lock", "mtx_unlock", "rwlock")),
    ("rd_kafka_producev itself and the rest", ("",)),
]


def samples(lines):
    """(thread, [frames leaf first]) per sample of `perf script` output."""
    head = None
    frames: list[str] = []
    for line in lines:
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
            continue
        if not line[0].isspace():
            head = line.split()[0]
            frames = []
        else:
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if head is not None:
        yield head, frames


def bucket(thread: str, frames: list[str]) -> str:
    for name, prefix, markers in BUCKETS:
        if prefix is not None and not thread.startswith(prefix):
            continue
        if prefix is None and thread.startswith("rdk:"):
            continue
        if any(m in f for f in frames for m in markers):
            return name
    return "other"


def producev_part(frames: list[str]) -> str:
    # Only the frames below rd_kafka_producev.
    below = []
    for f in frames:
        if "rd_kafka_producev" in f:
            break
        below.append(f)
    for name, markers in PRODUCEV_PARTS:
        if any(m in f for f in below for m in markers):
            return name
    return PRODUCEV_PARTS[-1][0]


def main() -> int:
    if len(sys.argv) > 1:
        out = subprocess.run(
            ["perf", "script", "-i", sys.argv[1]],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        ).stdout
        lines = out.splitlines()
    else:
        lines = sys.stdin
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for thread, frames in samples(lines):
        total += 1
        b = bucket(thread, frames)
        buckets[b] += 1
        threads[thread.rstrip("0123456789") or thread] += 1
        if b.startswith("send: librdkafka"):
            parts[producev_part(frames)] += 1
    if total == 0:
        print("no samples")
        return 1
    print(f"{total} samples")
    print("\nby thread:")
    for t, n in threads.most_common():
        print(f"  {100 * n / total:5.1f}%  {t}")
    print("\nby bucket (first match):")
    for name, _, _ in BUCKETS:
        if buckets[name]:
            print(f"  {100 * buckets[name] / total:5.1f}%  {name}")
    send = sum(parts.values())
    if send:
        print(f"\nrd_kafka_producev ({100 * send / total:.1f}% of all), its parts:")
        for name, _ in PRODUCEV_PARTS:
            if parts[name]:
                print(f"  {100 * parts[name] / total:5.1f}% of all, {100 * parts[name] / send:5.1f}% of the send  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
