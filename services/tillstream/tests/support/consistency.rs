//! Whether the log and the read models are whole after faults: JetStream holds every
//! committed event exactly once, and the live read models equal a rebuild from scratch.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use tillstream_events::EventEnvelope;
use tillstream_events::envelope::message_id;
use tillstream_projections::checksum::{ReadModelChecksum, checksum};
use tillstream_projections::{ApplyOutcome, Projector};
use tillstream_testkit::{TestEnv, eventually};

use super::DEADLINE;

/// The `Nats-Msg-Id` of every event committed to the test's two event stores.
pub async fn stored_message_ids(env: &TestEnv) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for store in ["users", "orders"] {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence FROM events")
                .fetch_all(&env.connect(store))
                .await
                .expect("event store answers");
        ids.extend(
            rows.into_iter()
                .map(|(kind, id, sequence)| message_id(&kind, &id, sequence as u64)),
        );
    }
    ids
}

/// What the EVENTS stream holds compared with the event stores.
pub struct LogAudit {
    /// Events committed to the stores.
    pub stored: usize,
    /// Messages in the stream.
    pub messages: usize,
    /// Distinct `Nats-Msg-Id`s among them.
    pub distinct: usize,
    /// Committed but not in the stream.
    pub missing: Vec<String>,
    /// In the stream more than once.
    pub duplicated: Vec<String>,
    /// In the stream but committed nowhere.
    pub unknown: Vec<String>,
    /// Every message, in stream order.
    pub envelopes: Vec<EventEnvelope>,
}

impl LogAudit {
    /// Every committed event is in the stream, once, and nothing else is.
    pub fn exactly_once(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.unknown.is_empty()
            && self.messages == self.stored
    }

    /// How many ways the stream is off (0 when exactly once).
    pub fn mismatches(&self) -> usize {
        self.missing.len() + self.duplicated.len() + self.unknown.len()
    }
}

impl std::fmt::Debug for LogAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {}, messages {}, distinct ids {}, missing {:?}, duplicated {:?}, unknown {:?}",
            self.stored, self.messages, self.distinct, self.missing, self.duplicated, self.unknown
        )
    }
}

async fn stream_messages(js: &jetstream::Context, env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let mut stream = js
        .get_stream(env.namespace.events_stream())
        .await
        .expect("EVENTS stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(raw) = stream.get_raw_message(sequence).await else {
            continue; // a gap in stream sequences (deleted): nothing stored there
        };
        let id = raw
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, raw.payload.to_vec()));
    }
    out
}

/// Compares the stream with the stores, once.
pub async fn audit_log(js: &jetstream::Context, env: &TestEnv) -> LogAudit {
    let stored = stored_message_ids(env).await;
    let messages = stream_messages(js, env).await;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &messages {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let envelopes = messages
        .iter()
        .map(|(id, body)| {
            serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("message {id} is not an event envelope: {e}"))
        })
        .collect();
    LogAudit {
        stored: stored.len(),
        messages: messages.len(),
        distinct: seen.len(),
        missing: stored
            .iter()
            .filter(|id| !seen.contains_key(id.as_str()))
            .cloned()
            .collect(),
        duplicated: seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| format!("{id} ×{n}"))
            .collect(),
        unknown: seen
            .keys()
            .filter(|id| !stored.contains(**id))
            .map(|id| id.to_string())
            .collect(),
        envelopes,
    }
}

/// Awaits the stream holding at least as many messages as the stores hold events (the
/// relays caught up), then audits it.
pub async fn await_log(js: &jetstream::Context, env: &TestEnv) -> LogAudit {
    eventually(
        DEADLINE,
        "the relays to publish every committed event",
        || async {
            let stored = stored_message_ids(env).await.len() as u64;
            let mut stream = js.get_stream(env.namespace.events_stream()).await.ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages >= stored).then_some(())
        },
    )
    .await;
    audit_log(js, env).await
}

/// Awaits the live projector having applied all `events` (its checkpoints add up to them:
/// sequences are gapless from 1 per aggregate).
pub async fn await_projected(env: &TestEnv, events: usize) {
    let reads = env.connect("reads");
    eventually(DEADLINE, "the projector to apply every event", || async {
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT sum(sequence)::bigint FROM projection_checkpoints WHERE projection = 'main'",
        )
        .fetch_one(&reads)
        .await
        .ok()?;
        (applied.unwrap_or(0) as usize >= events).then_some(())
    })
    .await;
}

/// Projects `envelopes` (the whole log, in stream order) into a fresh read-model database
/// with a fresh projector, and returns its checksum.
pub async fn rebuild(
    env: &TestEnv,
    nats: async_nats::Client,
    envelopes: &[EventEnvelope],
) -> ReadModelChecksum {
    let (_, pool) = env.database("rebuild").await;
    tillstream_projections::migrate(&pool)
        .await
        .expect("read-model schema");
    let projector = Projector::new(pool.clone(), nats, env.namespace.clone(), 1);
    for envelope in envelopes {
        let outcome = projector
            .apply(envelope)
            .await
            .unwrap_or_else(|e| panic!("rebuild cannot apply {}: {e}", envelope.message_id()));
        assert_eq!(
            outcome,
            ApplyOutcome::Applied,
            "rebuild: {} applies once, in order",
            envelope.message_id()
        );
    }
    checksum(&pool).await.expect("checksum of the rebuild")
}

/// The read-model tables where the live projection differs from a rebuild of the log in
/// `audit` (empty when equal), and the live checksum.
pub async fn compare_with_rebuild(
    env: &TestEnv,
    nats: async_nats::Client,
    audit: &LogAudit,
) -> (Vec<String>, ReadModelChecksum) {
    let live = checksum(&env.connect("reads"))
        .await
        .expect("checksum of the live read models");
    let rebuilt = rebuild(env, nats.clone(), &audit.envelopes).await;
    let mut differences = live.differences(&rebuilt);
    // And the product's own blue-green rebuild (`tillstream projections rebuild`), in place,
    // gives the same tables back.
    let reads = env.connect("reads");
    let report = tillstream_projections::rebuild::rebuild(
        &reads,
        nats,
        &env.namespace,
        "main",
        false,
        &tillstream_projections::rebuild::Quiet,
    )
    .await
    .expect("blue-green rebuild");
    assert!(report.applied > 0, "{report:?}");
    let swapped = checksum(&reads)
        .await
        .expect("checksum after the blue-green rebuild");
    differences.extend(
        live.differences(&swapped)
            .into_iter()
            .map(|d| format!("blue-green rebuild: {d}")),
    );
    (differences, live)
}
