//! Events, plugin side: publishing through the core (`CoreClient::publish_event`,
//! `CoreClient::publish`) and receiving deliveries ([`on_event`]).
//!
//! Delivery is at least once, so a subscriber may see an event again (after a retry whose
//! answer was lost, or after the core restarts). [`on_event`] remembers the ids it handled
//! within a window and answers a repeat without calling the handler again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Caller;

/// An event as the core delivers it: a CloudEvents 1.0 envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `1.0`.
    pub specversion: String,
    /// Unique per source: deduplicate by (`source`, `id`).
    pub id: String,
    /// `/plugins/<publisher>`.
    pub source: String,
    /// Event type, e.g. `billing.invoice.created`.
    #[serde(rename = "type")]
    pub ty: String,
    /// What the event is about, within the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the core accepted it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The tenant it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: Value,
}

impl Event {
    /// The payload as `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }

    /// The publishing plugin's name.
    pub fn publisher(&self) -> &str {
        self.source
            .strip_prefix("/plugins/")
            .unwrap_or(&self.source)
    }
}

/// A payload type with its event type, for [`crate::runtime::CoreClient::publish`].
///
/// ```
/// # use serde::Serialize;
/// #[derive(Serialize)]
/// struct InvoiceCreated { invoice: String, total_cents: u64 }
/// impl tessera_sdk::runtime::EventType for InvoiceCreated {
///     const TYPE: &'static str = "billing.invoice.created";
/// }
/// ```
pub trait EventType: Serialize {
    /// The event type (`<plugin>.` first).
    const TYPE: &'static str;
}

/// What the core answered a publish with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The event's id.
    pub id: String,
    /// `/plugins/<name>`.
    pub source: String,
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the core accepted it.
    pub time: String,
    /// True when this id was published before (nothing new was sent).
    pub duplicate: bool,
}

/// Options of a publish beyond type and data.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishOptions {
    /// CloudEvents `subject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Your id for the event: publishing the same id again is accepted once, so a publish
    /// that is retried after a lost answer is not delivered twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tenant the event belongs to (shells of other tenants do not see it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The body of a publish.
pub(super) fn publish_body(ty: &str, data: Value, opts: PublishOptions) -> Value {
    let mut body = json!({"type": ty, "data": data});
    if let (Some(map), Ok(Value::Object(extra))) =
        (body.as_object_mut(), serde_json::to_value(opts))
    {
        map.extend(extra);
    }
    body
}

/// Why a handler did not take an event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Try again later (answered 503: the core retries with backoff).
    #[error("retry: {0}")]
    Retry(String),
    /// Never (answered 422: the core dead-letters the event at once).
    #[error("rejected: {0}")]
    Reject(String),
}

/// Ids handled within a window, and ids being handled now.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    capacity: usize,
    inner: Mutex<DedupInner>,
}

#[derive(Debug, Default)]
struct DedupInner {
    seen: HashMap<(String, String), Instant>,
    order: VecDeque<((String, String), Instant)>,
    running: HashSet<(String, String)>,
}

/// What [`Dedup::begin`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// New: handle it, then [`Dedup::finish`].
    New,
    /// Handled within the window.
    Done,
    /// Being handled right now (a redelivery overtook the first attempt).
    Running,
}

impl Dedup {
    /// Remembers handled ids for `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Dedup {
        Dedup {
            window,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DedupInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `(source, id)` is new; a new one is marked running.
    pub fn begin(&self, source: &str, id: &str) -> Seen {
        let key = (source.to_string(), id.to_string());
        let now = Instant::now();
        let mut g = self.lock();
        while let Some((k, at)) = g.order.front().cloned() {
            if now.duration_since(at) <= self.window && g.order.len() <= self.capacity {
                break;
            }
            g.order.pop_front();
            if g.seen.get(&k) == Some(&at) {
                g.seen.remove(&k);
            }
        }
        if g.seen.contains_key(&key) {
            return Seen::Done;
        }
        if !g.running.insert(key) {
            return Seen::Running;
        }
        Seen::New
    }

    /// Ends handling; `handled` remembers the id for the window.
    pub fn finish(&self, source: &str, id: &str, handled: bool) {
        let key = (source.to_string(), id.to_string());
        let mut g = self.lock();
        g.running.remove(&key);
        if handled {
            let now = Instant::now();
            g.seen.insert(key.clone(), now);
            g.order.push_back((key, now));
        }
    }
}

impl Default for Dedup {
    /// Ten minutes, 100,000 ids.
    fn default() -> Self {
        Dedup::new(Duration::from_secs(600), 100_000)
    }
}

/// An id being handled; finished on drop.
struct Running<'a> {
    dedup: &'a Dedup,
    source: String,
    id: String,
    handled: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.dedup.finish(&self.source, &self.id, self.handled);
    }
}

fn answer(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// A route for a backend subscription (`events.subscribe: [{type, path}]`): checks that the
/// core is delivering an event (call token of kind `event`; a proxied request is refused with
/// 403), parses the CloudEvent, skips ids handled within the last ten minutes, and calls
/// `handler`. `Ok` answers 200 (acknowledged); [`EventError::Retry`] 503 (retried with
/// backoff); [`EventError::Reject`] 422 (dead-lettered).
///
/// ```ignore
/// Router::new().route("/events", on_event(|caller, event| async move {
///     tracing::info!(id = %event.id, tenant = %caller.tenant, "invoice created");
///     Ok(())
/// }))
/// ```
pub fn on_event<F, Fut>(handler: F) -> MethodRouter
where
    F: Fn(Caller, Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    on_event_with(Arc::new(Dedup::default()), handler)
}

/// [`on_event`] with a [`Dedup`] of your own (its window and size, or one shared by routes).
pub fn on_event_with<F, Fut>(dedup: Arc<Dedup>, handler: F) -> MethodRouter
where
    F: Fn(Caller, Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), EventError>> + Send + 'static,
{
    post(move |caller: Caller, body: Bytes| {
        let handler = handler.clone();
        let dedup = dedup.clone();
        async move {
            if caller.kind != "event" || caller.sub != "core" {
                return answer(
                    StatusCode::FORBIDDEN,
                    "not_an_event_delivery",
                    format!(
                        "this route takes event deliveries from the core, not calls of kind \"{}\"",
                        caller.kind
                    ),
                );
            }
            let event: Event = match serde_json::from_slice(&body) {
                Ok(e) => e,
                Err(e) => {
                    return answer(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_event",
                        format!("not a CloudEvent: {e}"),
                    );
                }
            };
            match dedup.begin(&event.source, &event.id) {
                Seen::Done => return StatusCode::OK.into_response(),
                Seen::Running => {
                    return answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "event_in_progress",
                        "this event is being handled",
                    );
                }
                Seen::New => {}
            }
            // Ends "running" however the handler ends: answered, failed, or dropped when the
            // core gave up waiting (a dropped handler's id is tried again on redelivery).
            let mut guard = Running {
                dedup: &dedup,
                source: event.source.clone(),
                id: event.id.clone(),
                handled: false,
            };
            let result = handler(caller, event).await;
            guard.handled = result.is_ok();
            drop(guard);
            match result {
                Ok(()) => StatusCode::OK.into_response(),
                Err(EventError::Retry(why)) => {
                    answer(StatusCode::SERVICE_UNAVAILABLE, "event_retry", why)
                }
                Err(EventError::Reject(why)) => {
                    answer(StatusCode::UNPROCESSABLE_ENTITY, "event_rejected", why)
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_remembers_handled_ids_only() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        assert_eq!(d.begin("/plugins/a", "1"), Seen::New);
        assert_eq!(d.begin("/plugins/a", "1"), Seen::Running);
        d.finish("/plugins/a", "1", false);
        assert_eq!(
            d.begin("/plugins/a", "1"),
            Seen::New,
            "a failed attempt is handled again"
        );
        d.finish("/plugins/a", "1", true);
        assert_eq!(d.begin("/plugins/a", "1"), Seen::Done);
        assert_eq!(d.begin("/plugins/b", "1"), Seen::New, "ids are per source");
    }

    #[test]
    fn a_dropped_handler_leaves_the_id_free() {
        let d = Dedup::new(Duration::from_secs(60), 10);
        assert_eq!(d.begin("s", "1"), Seen::New);
        drop(Running {
            dedup: &d,
            source: "s".into(),
            id: "1".into(),
            handled: false,
        });
        assert_eq!(d.begin("s", "1"), Seen::New, "not stuck as running");
    }

    #[test]
    fn dedup_forgets_past_its_capacity() {
        let d = Dedup::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            let id = i.to_string();
            assert_eq!(d.begin("s", &id), Seen::New);
            d.finish("s", &id, true);
        }
        assert_eq!(d.begin("s", "4"), Seen::Done);
        assert_eq!(d.begin("s", "0"), Seen::New, "the oldest id was forgotten");
    }

    #[test]
    fn publish_bodies_carry_the_options() {
        let b = publish_body(
            "billing.invoice.created",
            json!({"total": 3}),
            PublishOptions {
                id: Some("inv-1".into()),
                tenant: Some("acme".into()),
                subject: None,
            },
        );
        assert_eq!(
            b,
            json!({"type": "billing.invoice.created", "data": {"total": 3}, "id": "inv-1", "tenant": "acme"})
        );
    }
}
