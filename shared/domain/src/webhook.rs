//! Webhooks (docs/webhooks.md) as an aggregate on the stream `webhook-<id>`: the subscription
//! (url, event types, status), its secret sealed under a data key of its own (destroyed when
//! the webhook is deleted), and where its deliveries are. The delivery position lives in the
//! log like a task's progress: a deliverer records `WebhookProgressed` at most about once a
//! second (and at every change of state), optimistic on the stream, which is also how one
//! server at a time holds a webhook (its lease).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Decision, Recorded};
use crate::error::DomainError;
use crate::events::KeyedEvents;
use crate::keys::KeyId;
use crate::{event_set, json_as_is, one_part, two_parts};

/// Prefix of webhook stream names.
pub const WEBHOOK_STREAM_PREFIX: &str = "webhook-";

/// Whether a webhook delivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Delivers (shown `failing` while its last attempt failed).
    #[default]
    Active,
    /// Delivers nothing until resumed; events wait.
    Paused,
}

/// The public part of [`WebhookCreated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookCreatedPublic {
    /// Where deliveries go (`http` or `https`).
    pub url: String,
    /// Event types delivered; empty means every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// The log position deliveries start after (the head at creation).
    pub position: u64,
    /// The data key the secret is sealed under.
    #[serde(default)]
    pub key_id: Option<KeyId>,
}

/// The personal part of [`WebhookCreated`]: the signing secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookSecret {
    /// The HMAC-SHA256 key (as UTF-8 bytes).
    #[serde(default)]
    pub secret: String,
}

/// A webhook was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookCreated {
    /// Stored in clear.
    pub public: WebhookCreatedPublic,
    /// Sealed under the webhook's own key.
    pub personal: WebhookSecret,
}

/// [`WebhookCreated`] as event views show it: the secret is always `null` (`"redacted": true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "WebhookCreated")]
pub struct WebhookCreatedJson {
    /// Where deliveries go.
    pub url: String,
    /// Event types delivered; empty means every type.
    pub types: Vec<String>,
    /// The log position deliveries start after.
    pub position: u64,
    /// The data key the secret is sealed under.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The signing secret, sealed (always shown `null`).
    #[serde(default)]
    pub secret: Option<String>,
}

/// A webhook's url, types or status changed (absent fields stay).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookChanged {
    /// The new url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The new types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// The new status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WebhookStatus>,
}

/// Deliveries go back (or forward) to start after `after`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookReplayed {
    /// The position deliveries start after.
    pub after: u64,
}

/// A deliverer holds the webhook and every event up to `position` is acknowledged (also
/// recorded, with an unchanged position, when a deliverer takes the webhook or renews its
/// lease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookProgressed {
    /// The delivering server's worker id.
    pub worker: String,
    /// Acknowledged through this position.
    pub position: u64,
}

/// A delivery attempt failed; later events wait behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookFailing {
    /// The delivering server's worker id.
    pub worker: String,
    /// Acknowledged through this position.
    pub position: u64,
    /// The receiver's status (`HTTP 500`) or the network error — never the receiver's body.
    pub error: String,
    /// Failed attempts of the waiting delivery so far.
    pub attempts: u32,
}

/// The webhook was deleted; its secret's key is destroyed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDeleted {}

two_parts!(WebhookCreated => (WebhookCreatedPublic, WebhookSecret));
one_part!(public: WebhookChanged, WebhookReplayed, WebhookProgressed, WebhookFailing, WebhookDeleted);
json_as_is!(
    WebhookChanged,
    WebhookReplayed,
    WebhookProgressed,
    WebhookFailing,
    WebhookDeleted
);

impl crate::events::FromJson for WebhookCreated {
    fn from_json(
        _schema_version: u32,
        mut data: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        // Webhooks came after format 1; this reads the merged JSON view all the same.
        let secret = data.remove("secret");
        let public = serde_json::from_value(serde_json::Value::Object(data));
        Ok(WebhookCreated {
            public: public.map_err(|e| e.to_string())?,
            personal: WebhookSecret {
                secret: secret
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            },
        })
    }
}

event_set! {
    /// Every event of a webhook.
    pub enum WebhookEvent {
        /// See [`WebhookCreated`].
        WebhookCreated(WebhookCreated) = 1,
        /// See [`WebhookChanged`].
        WebhookChanged(WebhookChanged) = 1,
        /// See [`WebhookReplayed`].
        WebhookReplayed(WebhookReplayed) = 1,
        /// See [`WebhookProgressed`].
        WebhookProgressed(WebhookProgressed) = 1,
        /// See [`WebhookFailing`].
        WebhookFailing(WebhookFailing) = 1,
        /// See [`WebhookDeleted`].
        WebhookDeleted(WebhookDeleted) = 1,
    }
}

impl KeyedEvents for WebhookEvent {
    fn assign_key(&mut self, key: KeyId) {
        if let WebhookEvent::WebhookCreated(e) = self {
            e.public.key_id = Some(key);
        }
    }

    fn erases_key(&self) -> bool {
        matches!(self, WebhookEvent::WebhookDeleted(_))
    }
}

/// A webhook as its events made it (the read model keeps it without the secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub organization_id: String,
    /// See [`WebhookCreatedPublic::url`].
    pub url: String,
    /// See [`WebhookCreatedPublic::types`].
    pub types: Vec<String>,
    /// Active or paused.
    pub status: WebhookStatus,
    /// Acknowledged through this position (as last recorded).
    pub position: u64,
    /// The last attempt's failure, while the waiting delivery has not succeeded.
    pub last_error: Option<String>,
    /// Failed attempts of the waiting delivery.
    pub attempts: u32,
    /// The worker that last recorded progress (holds the lease).
    pub worker: Option<String>,
    /// When progress (or a failure) was last recorded.
    pub heartbeat_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its url, types or status last changed.
    pub updated_at: DateTime<Utc>,
    /// The secret's data key.
    pub key_id: Option<KeyId>,
    /// The signing secret (never in the read model).
    #[serde(skip)]
    pub secret: String,
    /// Moves on each replay and each change of url or types: a deliverer drops the batch it
    /// holds (and after a replay its position) when it sees a new epoch.
    pub epoch: u64,
    /// The stream version this state is at.
    pub version: u64,
}

impl Webhook {
    /// Whether the webhook delivers event type `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }

    /// Whether it lists `event_type` by name (a `PasswordResetRequested` token is shown only
    /// to webhooks that do).
    pub fn lists(&self, event_type: &str) -> bool {
        self.types.iter().any(|t| t == event_type)
    }

    /// `active`, `paused` or `failing`.
    pub fn status_name(&self) -> &'static str {
        match (self.status, &self.last_error) {
            (WebhookStatus::Paused, _) => "paused",
            (WebhookStatus::Active, Some(_)) => "failing",
            (WebhookStatus::Active, None) => "active",
        }
    }

    fn fold(state: Option<Self>, event: &WebhookEvent, at: Recorded<'_>) -> Option<Self> {
        let mut hook = match (state, event) {
            (_, WebhookEvent::WebhookDeleted(_)) => return None,
            (None, WebhookEvent::WebhookCreated(c)) => Webhook {
                id: at.id.to_owned(),
                organization_id: at.org.to_owned(),
                url: c.public.url.clone(),
                types: c.public.types.clone(),
                status: WebhookStatus::Active,
                position: c.public.position,
                last_error: None,
                attempts: 0,
                worker: None,
                heartbeat_at: at.at,
                created_at: at.at,
                updated_at: at.at,
                key_id: c.public.key_id,
                secret: c.personal.secret.clone(),
                epoch: 0,
                version: at.version,
            },
            (None, _) => return None,
            (Some(hook), WebhookEvent::WebhookCreated(_)) => hook,
            (Some(mut hook), WebhookEvent::WebhookChanged(c)) => {
                if c.url.is_some() || c.types.is_some() {
                    hook.epoch += 1;
                }
                if let Some(url) = &c.url {
                    hook.url.clone_from(url);
                    // A new address: the next attempt starts afresh.
                    hook.last_error = None;
                    hook.attempts = 0;
                }
                if let Some(types) = &c.types {
                    hook.types.clone_from(types);
                }
                if let Some(status) = c.status {
                    hook.status = status;
                }
                hook.updated_at = at.at;
                hook
            }
            (Some(mut hook), WebhookEvent::WebhookReplayed(r)) => {
                hook.position = r.after;
                hook.epoch += 1;
                hook.last_error = None;
                hook.attempts = 0;
                hook.updated_at = at.at;
                hook
            }
            (Some(mut hook), WebhookEvent::WebhookProgressed(p)) => {
                hook.position = p.position;
                hook.last_error = None;
                hook.attempts = 0;
                hook.worker = Some(p.worker.clone());
                hook.heartbeat_at = at.at;
                hook
            }
            (Some(mut hook), WebhookEvent::WebhookFailing(f)) => {
                hook.position = f.position;
                hook.last_error = Some(f.error.clone());
                hook.attempts = f.attempts;
                hook.worker = Some(f.worker.clone());
                hook.heartbeat_at = at.at;
                hook
            }
        };
        hook.version = at.version;
        Some(hook)
    }
}

/// Commands to a webhook (validated at the edge: the url is allowed, the types are known).
#[derive(Clone, Debug)]
pub enum WebhookCommand {
    /// Create it.
    Create(WebhookCreated),
    /// Change its url, types or status.
    Change(WebhookChanged),
    /// Deliver again after a position.
    Replay(WebhookReplayed),
    /// A deliverer's progress, claim or lease renewal.
    Progress(WebhookProgressed),
    /// A failed attempt.
    Fail(WebhookFailing),
    /// Delete it.
    Delete,
}

impl Aggregate for Webhook {
    type Event = WebhookEvent;
    type Command = WebhookCommand;
    const STREAM_PREFIX: &'static str = WEBHOOK_STREAM_PREFIX;

    fn apply(state: Option<Self>, event: &WebhookEvent, at: Recorded<'_>) -> Option<Self> {
        Webhook::fold(state, event, at)
    }

    fn decide(
        state: Option<&Self>,
        command: &WebhookCommand,
    ) -> Result<Decision<WebhookEvent>, DomainError> {
        Ok(match (state, command) {
            (None, WebhookCommand::Create(c)) => {
                Decision::event(WebhookEvent::WebhookCreated(c.clone())).with_fresh_key()
            }
            (Some(_), WebhookCommand::Create(_)) => {
                return Err(DomainError::Conflict("a webhook with this id exists"));
            }
            (None, _) => return Err(DomainError::NotFound),
            (Some(hook), WebhookCommand::Change(c)) => {
                let changed = c.url.as_ref().is_some_and(|u| *u != hook.url)
                    || c.types.as_ref().is_some_and(|t| *t != hook.types)
                    || c.status.is_some_and(|s| s != hook.status);
                Decision::when(changed, || WebhookEvent::WebhookChanged(c.clone()))
            }
            (Some(_), WebhookCommand::Replay(r)) => {
                Decision::event(WebhookEvent::WebhookReplayed(r.clone()))
            }
            (Some(_), WebhookCommand::Progress(p)) => {
                Decision::event(WebhookEvent::WebhookProgressed(p.clone()))
            }
            (Some(_), WebhookCommand::Fail(f)) => {
                Decision::event(WebhookEvent::WebhookFailing(f.clone()))
            }
            (Some(_), WebhookCommand::Delete) => {
                Decision::event(WebhookEvent::WebhookDeleted(WebhookDeleted {}))
            }
        })
    }

    fn data_key(&self) -> Option<KeyId> {
        self.key_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventSet;

    fn at(version: u64) -> Recorded<'static> {
        Recorded {
            id: "w1",
            org: "default",
            at: Utc::now(),
            version,
        }
    }

    fn created() -> Webhook {
        let event = WebhookEvent::WebhookCreated(WebhookCreated {
            public: WebhookCreatedPublic {
                url: "https://example.com/hook".into(),
                types: vec![],
                position: 7,
                key_id: None,
            },
            personal: WebhookSecret {
                secret: "s".repeat(32),
            },
        });
        Webhook::apply(None, &event, at(1)).unwrap()
    }

    #[test]
    fn a_failure_shows_failing_until_progress_clears_it() {
        let hook = created();
        assert_eq!((hook.status_name(), hook.position), ("active", 7));
        let failing = WebhookEvent::WebhookFailing(WebhookFailing {
            worker: "a".into(),
            position: 7,
            error: "HTTP 500".into(),
            attempts: 1,
        });
        let hook = Webhook::apply(Some(hook), &failing, at(2)).unwrap();
        assert_eq!(hook.status_name(), "failing");
        let progressed = WebhookEvent::WebhookProgressed(WebhookProgressed {
            worker: "a".into(),
            position: 9,
        });
        let hook = Webhook::apply(Some(hook), &progressed, at(3)).unwrap();
        assert_eq!((hook.status_name(), hook.position), ("active", 9));
        assert_eq!(hook.last_error, None);
    }

    #[test]
    fn an_unchanged_patch_records_nothing_and_deletion_ends_it() {
        let hook = created();
        let same = WebhookCommand::Change(WebhookChanged {
            status: Some(WebhookStatus::Active),
            ..Default::default()
        });
        assert!(Webhook::decide(Some(&hook), &same).unwrap().is_empty());
        let deleted = Webhook::decide(Some(&hook), &WebhookCommand::Delete).unwrap();
        assert!(EventSet::erases_key(&deleted.events[0]));
        assert_eq!(Webhook::apply(Some(hook), &deleted.events[0], at(2)), None);
        assert_eq!(
            Webhook::decide(None, &WebhookCommand::Delete),
            Err(DomainError::NotFound)
        );
    }
}
