//! The JetStream behaviour the writer relies on, checked against the installed nats-server.

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use roster_testsupport::NatsServer;

async fn fresh_stream(name: &str) -> (jetstream::Context, String) {
    let client = async_nats::connect(NatsServer::shared().url())
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let subject = format!("raw.{name}");
    js.create_stream(stream::Config {
        name: format!("RAW_{name}_{}", std::process::id()),
        subjects: vec![format!("{subject}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    (js, subject)
}

/// A publish retried with the same `Nats-Msg-Id` and the same (now stale)
/// `Nats-Expected-Last-Sequence` — as after a lost acknowledgement — is never stored twice.
/// How it is answered depends on the server: nats-server 2.9 de-duplicates first (a duplicate
/// acknowledgement at the first one's sequence); 2.10 and later check the expected sequence
/// first (`wrong last sequence`). The writer relies on neither answer: on either it reads
/// what is stored at its place and compares the origin (`nats/writer.rs`, `resolve`).
#[tokio::test]
async fn a_retried_publish_is_stored_once() {
    let (js, subject) = fresh_stream("dedupe").await;
    let first = js
        .send_publish(
            format!("{subject}.a"),
            PublishMessage::build().payload("0".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!(first.sequence, 1);
    let attempt = || {
        PublishMessage::build()
            .payload("1".into())
            .message_id("tx-1")
            .expected_last_sequence(1)
    };
    let stored = js
        .send_publish(format!("{subject}.a"), attempt())
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!((stored.sequence, stored.duplicate), (2, false));
    let retried = js
        .send_publish(format!("{subject}.a"), attempt())
        .await
        .expect("publish")
        .await;
    match retried {
        Ok(ack) => assert_eq!((ack.sequence, ack.duplicate), (2, true), "2.9: a duplicate"),
        Err(e) => assert_eq!(e.kind(), PublishErrorKind::WrongLastSequence, "2.10+: {e}"),
    }
    // Another message expecting the same place is refused.
    let other = js
        .send_publish(
            format!("{subject}.b"),
            PublishMessage::build()
                .payload("2".into())
                .message_id("tx-2")
                .expected_last_sequence(1),
        )
        .await
        .expect("publish")
        .await
        .expect_err("the place after 1 is taken");
    assert_eq!(other.kind(), PublishErrorKind::WrongLastSequence);
}

/// `Nats-Expected-Last-Subject-Sequence: 0` (used for the genesis message) is enforced.
#[tokio::test]
async fn expected_last_subject_sequence_zero_is_enforced() {
    let (js, subject) = fresh_stream("genesis").await;
    let genesis = |id: &str| {
        PublishMessage::build()
            .payload("g".into())
            .message_id(id)
            .expected_last_subject_sequence(0)
    };
    let g = format!("{subject}.genesis");
    js.send_publish(g.clone(), genesis("g1"))
        .await
        .expect("publish")
        .await
        .expect("the first genesis is stored");
    let late = js
        .send_publish(g, genesis("g2"))
        .await
        .expect("publish")
        .await
        .expect_err("a second genesis is refused");
    assert_ne!(late.kind(), PublishErrorKind::TimedOut);
}
