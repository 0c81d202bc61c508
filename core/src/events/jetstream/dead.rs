//! Dead letters on JetStream: the stream `TESSERA_DEAD_LETTERS` (subjects
//! `tessera.dead.<plugin>`), one message a dead letter, its subscription and reason in headers;
//! its id is the message's sequence, the same through every replica.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream;

use super::{DEAD, DEAD_SCAN, Jet, consumer_name, err, redrive_subject};
use crate::events::outbox::{DeadLetter, DeadQuery};
use crate::events::subs::SubKey;

impl Jet {
    pub(super) async fn dead_letter(
        &self,
        key: &SubKey,
        attempts: u32,
        reason: &str,
        envelope: &str,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert("Tessera-Plugin", key.plugin.as_str());
        headers.insert("Tessera-Subscription", key.pattern.as_str());
        headers.insert("Tessera-Path", key.path.as_str());
        headers.insert("Tessera-Consumer", consumer_name(key).as_str());
        headers.insert("Tessera-Attempts", attempts.to_string().as_str());
        headers.insert("Tessera-Reason", reason.replace(['\r', '\n'], " ").as_str());
        self.js
            .publish_with_headers(
                format!("tessera.dead.{}", key.plugin),
                headers,
                envelope.to_string().into(),
            )
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The dead-letter list, newest first.
    pub async fn dead_letters(&self, q: &DeadQuery) -> Result<Vec<DeadLetter>, String> {
        let mut stream = self.js.get_stream(DEAD).await.map_err(err)?;
        let state = stream.info().await.map_err(err)?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.last_sequence;
        let floor = state
            .first_sequence
            .max(state.last_sequence.saturating_sub(DEAD_SCAN));
        while seq >= floor && seq > 0 && out.len() < q.limit as usize {
            if let Ok(m) = stream.get_raw_message(seq).await
                && let Some(d) = dead_letter_of(&m)
                && q.plugin.as_ref().is_none_or(|p| *p == d.plugin)
                && q.ty
                    .as_ref()
                    .is_none_or(|t| d.event_type() == Some(t.as_str()))
            {
                out.push(d);
            }
            seq -= 1;
        }
        Ok(out)
    }

    /// Dead letters by subscription.
    pub async fn dead_counts(&self) -> Result<Vec<(SubKey, u64)>, String> {
        let all = self
            .dead_letters(&DeadQuery {
                plugin: None,
                ty: None,
                limit: u32::try_from(DEAD_SCAN).unwrap_or(u32::MAX),
            })
            .await?;
        let mut counts: BTreeMap<SubKey, u64> = BTreeMap::new();
        for d in all {
            *counts
                .entry(SubKey {
                    plugin: d.plugin,
                    pattern: d.subscription,
                    path: d.path,
                })
                .or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    /// Sends a dead letter again to its subscription only; false when there is none.
    pub async fn redrive(&self, id: i64) -> Result<bool, String> {
        let Ok(seq) = u64::try_from(id) else {
            return Ok(false);
        };
        let stream = self.js.get_stream(DEAD).await.map_err(err)?;
        let Ok(m) = stream.get_raw_message(seq).await else {
            return Ok(false);
        };
        let Some(consumer) = m.headers.get("Tessera-Consumer").map(|v| v.to_string()) else {
            return Ok(false);
        };
        self.js
            .publish(redrive_subject(&consumer), m.payload.clone())
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        stream.delete_message(seq).await.map_err(err)?;
        Ok(true)
    }

    /// Deletes a dead letter; false when there is none.
    pub async fn discard(&self, id: i64) -> Result<bool, String> {
        let Ok(seq) = u64::try_from(id) else {
            return Ok(false);
        };
        let stream = self.js.get_stream(DEAD).await.map_err(err)?;
        if stream.get_raw_message(seq).await.is_err() {
            return Ok(false);
        }
        Ok(stream.delete_message(seq).await.is_ok())
    }
}

fn dead_letter_of(m: &jetstream::message::StreamMessage) -> Option<DeadLetter> {
    let h = |k: &str| m.headers.get(k).map(|v| v.to_string());
    let nanos = m.time.unix_timestamp_nanos();
    let ms = i64::try_from(nanos / 1_000_000).unwrap_or(0);
    Some(DeadLetter {
        id: m.sequence.to_string(),
        plugin: h("Tessera-Plugin")?,
        subscription: h("Tessera-Subscription")?,
        path: h("Tessera-Path")?,
        attempts: h("Tessera-Attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        reason: h("Tessera-Reason").unwrap_or_default(),
        dead_at: tessera_sdk::time::rfc3339_ms(ms),
        event: serde_json::value::RawValue::from_string(
            String::from_utf8_lossy(&m.payload).into_owned(),
        )
        .ok()?,
    })
}
