//! The librdkafka mock cluster (`rdkafka::mocking`): an in-process Kafka for fast tests of the
//! Kafka sink and source, no broker process needed. This test checks that it carries one message,
//! key and headers included, from a `BaseProducer` to a `BaseConsumer` within a bounded time.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "sluice-mock";
/// Bound on every wait: delivery of the message, then its arrival at the consumer.
const TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A producer context that keeps each delivery report: the (partition, offset) the message got,
/// or the error.
#[derive(Default)]
struct DeliveryReports(Mutex<Vec<Result<(i32, i64), KafkaError>>>);

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        let report = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((err, _message)) => Err(err.clone()),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(report);
    }
}

impl DeliveryReports {
    fn take(&self) -> Vec<Result<(i32, i64), KafkaError>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[test]
fn mock_cluster_carries_one_message_from_producer_to_consumer() -> Result<()> {
    let cluster = MockCluster::new(1).context("start the mock cluster")?;
    cluster
        .create_topic(TOPIC, 1, 1)
        .context("create the topic")?;
    let bootstrap = cluster.bootstrap_servers();

    let producer: BaseProducer<DeliveryReports> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create_with_context(DeliveryReports::default())
        .context("create the producer")?;
    let headers = OwnedHeaders::new().insert(Header {
        key: "origin",
        value: Some("sluice"),
    });
    producer
        .send(
            BaseRecord::to(TOPIC)
                .key("k1")
                .payload("hello mock")
                .headers(headers),
        )
        .map_err(|(err, _record)| err)
        .context("enqueue the message")?;
    producer.flush(TIMEOUT).context("flush the producer")?;
    let reports = producer.context().take();
    let [report] = reports.as_slice() else {
        return Err(anyhow!("expected one delivery report, got {reports:?}"));
    };
    let (partition, offset) = report.clone().context("delivery report")?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "sluice-mock")
        .set("enable.auto.commit", "false")
        .create()
        .context("create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, partition, Offset::Offset(offset))?;
    consumer
        .assign(&assignment)
        .context("assign the partition")?;

    let deadline = Instant::now() + TIMEOUT;
    let message = loop {
        let remaining = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| anyhow!("no message within {TIMEOUT:?}"))?;
        if let Some(message) = consumer.poll(remaining.min(POLL_INTERVAL)) {
            break message.context("consume")?;
        }
    };

    let got = (message.topic(), message.partition(), message.offset());
    ensure!(got == (TOPIC, partition, offset), "consumed at {got:?}");
    let got = (message.key(), message.payload());
    ensure!(
        got == (Some(b"k1".as_slice()), Some(b"hello mock".as_slice())),
        "key and payload {got:?}"
    );
    let headers = message.headers().context("no headers")?;
    let got: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
    ensure!(
        got == [("origin", Some(b"sluice".as_slice()))],
        "headers {got:?}"
    );
    Ok(())
}
