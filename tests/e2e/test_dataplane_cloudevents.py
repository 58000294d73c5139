"""CloudEvents through the data plane, checked at the destination broker with paho-mqtt (MQTT 5):
`cloudEventAttributes: CreateOrRemap` fills in the attributes a message lacks, as User Properties
with the attribute names of the CloudEvents MQTT binding (specversion, type, source, id, subject,
time) and keeps those it has; `Propagate` passes a message's attributes through unchanged.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from dataplane import (
    Harness,
    dataflow,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    publish_props,
    write_manifests,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_create_or_remap_and_propagate(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    docs = [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint("dst-create", dst.host, cloudEventAttributes="CreateOrRemap"),
        mqtt_endpoint("dst-propagate", dst.host, cloudEventAttributes="Propagate"),
        profile(),
        dataflow("create", "src", ["create/#"], "dst-create", "created/${inputTopic.2}"),
        dataflow("propagate", "src", ["keep/#"], "dst-propagate", "kept/${inputTopic.2}"),
    ]
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=1)
    sluice.agent(config, dp, src.host)
    dp.wait_ready(timeout=20)

    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["created/#", "kept/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "create/probe", "created/probe")
    probe_until_flowing(pub, sub, "keep/probe", "kept/probe")

    before = datetime.now(timezone.utc)
    # No attributes: every one is created.
    pub.publish("create/line1", b'{"t": 21}', properties=publish_props(ContentType="application/json"))
    # Some attributes: those present are kept, the rest created.
    own_id = str(uuid.uuid4())
    pub.publish(
        "create/line2",
        b"22",
        properties=publish_props(UserProperty=[("id", own_id), ("source", "plant-7")]),
    )
    # Propagate: attributes (here a complete set) pass as they are; nothing is added.
    complete = [
        ("specversion", "1.0"),
        ("type", "com.example.reading"),
        ("source", "sensor-9"),
        ("id", "reading-1"),
    ]
    pub.publish("keep/line3", b"23", properties=publish_props(UserProperty=complete))

    msgs = sub.wait_for(
        "the three messages",
        lambda ms: (
            got
            if len(got := {m.topic: m for m in ms if not m.payload.startswith(b"probe")}) == 3
            else None
        ),
        timeout=15,
    )

    first = dict(msgs["created/line1"].properties.get("UserProperty", []))
    assert first["specversion"] == "1.0"
    assert first["type"] == "ms.aio-dataflow.telemetry"
    assert first["source"] == "aio://create"
    assert UUID.match(first["id"]), first
    assert first["subject"] == "created/line1"
    sent_at = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert abs((sent_at - before).total_seconds()) < 60, first["time"]
    assert msgs["created/line1"].properties.get("ContentType") == "application/json"

    second = msgs["created/line2"].properties.get("UserProperty", [])
    as_dict = dict(second)
    assert as_dict["id"] == own_id and as_dict["source"] == "plant-7", second
    assert as_dict["specversion"] == "1.0" and as_dict["type"] == "ms.aio-dataflow.telemetry"
    assert [k for k, _ in second].count("id") == 1, "a present attribute is not added twice"

    third = msgs["kept/line3"].properties.get("UserProperty", [])
    assert third == complete, third
