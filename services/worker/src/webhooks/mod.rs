//! Webhook delivery (docs/webhooks.md): each active webhook is held by one deliverer, which
//! reads the log after the webhook's position, sends its organization's events of the
//! webhook's types in batches (≤ 100 events, ≤ 1 MiB), in log order, one batch at a time, and
//! retries a failed batch with doubling delays and jitter while later events wait.
//!
//! The position lives on the webhook's stream: `WebhookProgressed` is appended (optimistic on
//! the stream's version) at most about once a second while batches are acknowledged, at each
//! change between failing and delivering, and — on NATS, where several servers deliver —
//! every third of the lease while idle. That append is the lease: a server takes a webhook
//! only when no other has recorded anything for a lease's length, and a deliverer whose
//! append conflicts reloads the webhook and lets go of it if another took it. After a crash
//! deliveries resume after the last recorded position: at least once, never lost.

pub mod address;
pub mod send;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use parking_lot::Mutex;
use rand::Rng;
use roster_core::events::resource;
use roster_core::{Core, Loaded};
use roster_domain::OrgId;
use roster_domain::user::{Purpose, UserEvent};
use roster_domain::webhook::{
    WEBHOOK_STREAM_PREFIX, Webhook, WebhookCommand, WebhookFailing, WebhookProgressed,
    WebhookStatus,
};
use roster_eventlog::{Position, RecordedEvent};
use roster_projections::{AnyEvent, EventMeta};

use self::address::Target;
use self::send::{Attempt, Sender};

/// Most events in one delivery.
pub const MAX_EVENTS: usize = 100;
/// Largest delivery body (a single larger event goes alone).
pub const MAX_BODY: usize = 1024 * 1024;
/// A deliverer records its position at most this often while batches succeed.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// The first retry comes within this long.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Retries never wait longer than this.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Records read from the log per look.
const READ_CHUNK: usize = 512;
/// The event type whose token a webhook sees only when it lists the type by name.
const RESET_REQUESTED: &str = "PasswordResetRequested";

/// Runs the deliveries of this server.
#[derive(Clone)]
pub struct Webhooks {
    core: Core,
    /// This server's worker id, recorded in `WebhookProgressed`.
    worker: String,
    /// The only server of its store (embedded): it takes every webhook at once.
    exclusive: bool,
    lease: Duration,
    sender: Sender,
    running: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Webhooks {
    /// Deliveries for `core`; `allow_private` lifts the address rule.
    pub fn new(
        core: Core,
        worker: String,
        exclusive: bool,
        lease: Duration,
        allow_private: bool,
    ) -> Self {
        Self {
            core,
            worker,
            exclusive,
            lease,
            sender: Sender::new(allow_private),
            running: Arc::default(),
        }
    }

    /// Runs until the returned task is aborted (shutdown: an unacknowledged batch is sent
    /// again by the next holder).
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        let mut deliveries = tokio::task::JoinSet::new();
        loop {
            while deliveries.try_join_next().is_some() {}
            match self.core.models().webhooks(None) {
                Ok(hooks) => {
                    for hook in hooks.into_iter().filter(|h| self.may_take(h)) {
                        let key = (hook.organization_id.clone(), hook.id.clone());
                        if !self.running.lock().insert(key.clone()) {
                            continue;
                        }
                        let this = self.clone();
                        deliveries.spawn(async move {
                            if let Ok(org) = OrgId::parse(&key.0) {
                                this.deliver(org, key.1.clone()).await;
                            }
                            this.running.lock().remove(&key);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list webhooks"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether this server may take `hook` (as the read model shows it).
    fn may_take(&self, hook: &Webhook) -> bool {
        hook.status == WebhookStatus::Active
            && (self.exclusive
                || hook.worker.as_deref().is_none_or(|w| w == self.worker)
                || self.lease_expired(hook))
    }

    fn lease_expired(&self, hook: &Webhook) -> bool {
        Utc::now() - hook.heartbeat_at > chrono::Duration::from_std(self.lease).unwrap_or_default()
    }

    /// Delivers one webhook until it is paused, deleted or taken by another server.
    async fn deliver(&self, org: OrgId, id: String) {
        let mut holder = match Holder::take(self, org, id).await {
            Some(h) => h,
            None => return,
        };
        match holder.run().await {
            // Paused: what was acknowledged is recorded, so a resume does not send it again.
            // (A conflicting append — the webhook resumed meanwhile — is tried again.)
            Err(e) if e == PAUSED => {
                for _ in 0..3 {
                    if holder.position == holder.hook().position {
                        break;
                    }
                    if let Err(e) = holder.record_position().await
                        && e != PAUSED
                    {
                        break;
                    }
                }
            }
            Err(e) => tracing::info!(webhook = %holder.id, reason = %e, "webhook let go"),
            Ok(()) => {}
        }
    }
}

/// A batch waiting to be acknowledged.
struct Batch {
    delivery_id: String,
    body: Bytes,
    /// Acknowledging it moves the position here.
    last: Position,
}

/// What the log holds after a position for a webhook.
enum Next {
    /// Events to send.
    Batch(Batch),
    /// Nothing for this webhook up to here; `true` when the range held more than webhooks'
    /// own events (those never make a deliverer record: its records would feed each other).
    Skip(Position, bool),
    /// Nothing yet.
    Idle,
}

/// One webhook, held by this server.
struct Holder<'a> {
    hooks: &'a Webhooks,
    org: OrgId,
    id: String,
    loaded: Loaded<Webhook>,
    target: Target,
    /// Acknowledged through here (ahead of the recorded position by up to a second).
    position: Position,
    /// When this holder last appended to the webhook's stream.
    recorded_at: Instant,
    /// Whether the position moved in a way worth recording.
    dirty: bool,
    /// The kept-alive connection to the receiver.
    conn: Option<send::Connection>,
}

/// Why a holder lets go.
type Stop = String;

/// The [`Stop`] of a paused webhook.
const PAUSED: &str = "paused";

impl<'a> Holder<'a> {
    /// Loads the webhook and records this server as its holder; `None` if it is not to be
    /// delivered here (gone, paused, or held by another server).
    async fn take(hooks: &'a Webhooks, org: OrgId, id: String) -> Option<Holder<'a>> {
        let loaded = hooks.core.repo().load::<Webhook>(&org, &id).await.ok()?;
        let hook = loaded.state.clone()?;
        let held_elsewhere = !hooks.exclusive
            && hook.worker.as_deref().is_some_and(|w| w != hooks.worker)
            && !hooks.lease_expired(&hook);
        if hook.status != WebhookStatus::Active || held_elsewhere {
            return None;
        }
        let target = address::parse(&hook.url).ok()?;
        let mut holder = Holder {
            hooks,
            position: hook.position,
            org,
            id,
            loaded,
            target,
            recorded_at: Instant::now(),
            dirty: false,
            conn: None,
        };
        // Already this server's (a loop that stopped on an error, started again): no claim,
        // so that a webhook stuck on an error does not write a claim a second.
        let ours =
            hook.worker.as_deref() == Some(hooks.worker.as_str()) && !hooks.lease_expired(&hook);
        if !ours {
            let claim = WebhookCommand::Progress(WebhookProgressed {
                worker: hooks.worker.clone(),
                position: hook.position,
            });
            holder.record(claim).await.ok()?;
        }
        Some(holder)
    }

    fn hook(&self) -> &Webhook {
        self.loaded.state.as_ref().expect("a held webhook exists")
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let mut head = self.hooks.core.log().watch_head();
        let mut waiting: Option<Batch> = None;
        let mut attempts = 0u32;
        let mut epoch = self.hook().epoch;
        loop {
            self.changed_elsewhere().await?;
            if self.hook().epoch != epoch {
                // Replayed, re-pointed or re-filtered (seen here, or when an append of this
                // holder conflicted): what waited is no longer what is due.
                epoch = self.hook().epoch;
                waiting = None;
                attempts = 0;
                self.conn = None;
            }
            let batch = match waiting.take() {
                Some(b) => b,
                None => match self.next_batch().await? {
                    Next::Batch(b) => b,
                    Next::Skip(to, dirty) => {
                        self.position = to;
                        self.dirty |= dirty;
                        self.record_progress(false).await?;
                        continue;
                    }
                    Next::Idle => {
                        self.record_progress(false).await?;
                        let _ = tokio::time::timeout(Duration::from_secs(1), head.changed()).await;
                        continue;
                    }
                },
            };
            let hook = self.loaded.state.as_ref().expect("a held webhook exists");
            let sent = self
                .hooks
                .sender
                .send(
                    &mut self.conn,
                    Attempt {
                        target: &self.target,
                        webhook_id: &hook.id,
                        delivery_id: &batch.delivery_id,
                        secret: &hook.secret,
                        body: batch.body.clone(),
                    },
                )
                .await;
            match sent {
                Ok(()) => {
                    self.position = batch.last;
                    self.dirty = true;
                    let was_failing = attempts > 0;
                    attempts = 0;
                    self.record_progress(was_failing).await?;
                }
                Err(error) => {
                    attempts += 1;
                    tracing::info!(webhook = %self.id, attempts, %error, "webhook delivery failed");
                    self.record(WebhookCommand::Fail(WebhookFailing {
                        worker: self.hooks.worker.clone(),
                        position: self.position,
                        error,
                        attempts,
                    }))
                    .await?;
                    waiting = Some(batch);
                    self.back_off(attempts).await?;
                }
            }
        }
    }

    /// Waits before retry `attempts` + 1 (the first within 5 s, then doubling to 1 h, with
    /// jitter), letting go early if the webhook is paused, deleted or taken.
    async fn back_off(&mut self, attempts: u32) -> Result<(), Stop> {
        let base = FIRST_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(12));
        let base = base.min(MAX_RETRY);
        // Full jitter over the upper half: spread, and never a retry storm at one instant.
        let wait = base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        let until = Instant::now() + wait;
        while Instant::now() < until {
            let version = self.models_version();
            if version != Some(self.loaded.version) {
                let epoch = self.hook().epoch;
                self.changed_elsewhere().await?;
                if self.hook().epoch != epoch {
                    return Ok(());
                }
            }
            self.renew_lease().await?;
            tokio::time::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            )
            .await;
        }
        Ok(())
    }

    /// The read model's version of the webhook (cheap: one row).
    fn models_version(&self) -> Option<u64> {
        self.hooks
            .core
            .models()
            .webhook(self.org.as_str(), &self.id)
            .ok()
            .flatten()
            .map(|h| h.version)
    }

    /// Reloads the webhook if its stream moved (an error when this server must let go).
    async fn changed_elsewhere(&mut self) -> Result<(), Stop> {
        let fresh = self
            .hooks
            .core
            .repo()
            .load::<Webhook>(&self.org, &self.id)
            .await
            .map_err(|e| e.detail)?;
        if fresh.version == self.loaded.version {
            return Ok(());
        }
        self.adopt(fresh)
    }

    /// Takes a newer state of the webhook as this holder's. A new epoch (replay, url or
    /// types changed) moves the position to the recorded one: after a replay, where it starts
    /// again; after a change, up to a second of acknowledged events is delivered again.
    fn adopt(&mut self, fresh: Loaded<Webhook>) -> Result<(), Stop> {
        let Some(hook) = fresh.state.as_ref() else {
            return Err("deleted".into());
        };
        if hook.status == WebhookStatus::Paused {
            self.loaded = fresh;
            return Err(PAUSED.into());
        }
        if hook.worker.as_deref() != Some(self.hooks.worker.as_str()) {
            return Err("taken by another server".into());
        }
        let new_epoch = hook.epoch != self.hook().epoch;
        if new_epoch {
            self.target = address::parse(&hook.url).map_err(|e| format!("url {e}"))?;
            self.position = hook.position;
        }
        self.loaded = fresh;
        Ok(())
    }

    /// Records the position if it moved and a second has passed (or `now`), and renews the
    /// lease when due.
    async fn record_progress(&mut self, now: bool) -> Result<(), Stop> {
        let moved = self.dirty && self.position != self.hook().position;
        if now || (moved && self.recorded_at.elapsed() >= RECORD_EVERY) {
            return self.record_position().await;
        }
        self.renew_lease().await
    }

    /// On NATS, re-records the position every third of the lease, so that no other server
    /// takes the webhook while this one is idle or backing off.
    async fn renew_lease(&mut self) -> Result<(), Stop> {
        if !self.hooks.exclusive && self.recorded_at.elapsed() >= self.hooks.lease / 3 {
            return self.record_position().await;
        }
        Ok(())
    }

    async fn record_position(&mut self) -> Result<(), Stop> {
        self.dirty = false;
        self.record(WebhookCommand::Progress(WebhookProgressed {
            worker: self.hooks.worker.clone(),
            position: self.position,
        }))
        .await
    }

    /// Appends a command, optimistic on the stream; on a conflict the newer state is adopted
    /// (and the command dropped: the next look decides again).
    async fn record(&mut self, command: WebhookCommand) -> Result<(), Stop> {
        let meta = EventMeta {
            actor: format!("webhook:{}", self.id),
            ..Default::default()
        };
        let repo = self.hooks.core.repo();
        match repo
            .append(&self.org, &self.id, &self.loaded, &command, meta)
            .await
        {
            Ok(Some((_, after))) => {
                self.loaded = after;
                self.recorded_at = Instant::now();
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(roster_core::CommitError::Conflict { .. }) => {
                let fresh = repo
                    .load::<Webhook>(&self.org, &self.id)
                    .await
                    .map_err(|e| e.detail)?;
                self.adopt(fresh)
            }
            Err(e) => Err(format!("recording the webhook: {e:?}")),
        }
    }

    /// The next batch after the position: the organization's events of the webhook's types
    /// (never webhook streams' own), up to [`MAX_EVENTS`] and [`MAX_BODY`].
    async fn next_batch(&self) -> Result<Next, Stop> {
        let core = &self.hooks.core;
        let records = core
            .log()
            .read_all(self.position, READ_CHUNK)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last_read) = records.last().map(|r| r.position) else {
            return Ok(Next::Idle);
        };
        let hook = self.hook();
        let mut body = Vec::with_capacity(4096);
        body.extend_from_slice(b"{\"events\":[");
        let mut count = 0;
        let mut last = self.position;
        let mut dirty = false;
        for record in &records {
            dirty |= !record.stream.name.starts_with(WEBHOOK_STREAM_PREFIX);
            if self.due(hook, record) {
                let event = self.render(hook, record).await?;
                let fits = body.len() + event.len() + 3 <= MAX_BODY;
                if count == MAX_EVENTS || (count > 0 && !fits) {
                    break;
                }
                if count > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&event);
                count += 1;
            }
            last = record.position;
        }
        if count == 0 {
            return Ok(Next::Skip(last_read, dirty));
        }
        body.extend_from_slice(b"]}");
        Ok(Next::Batch(Batch {
            delivery_id: ulid::Ulid::new().to_string(),
            body: body.into(),
            last,
        }))
    }

    fn due(&self, hook: &Webhook, record: &RecordedEvent) -> bool {
        record.stream.org == self.org.as_str()
            && !record.stream.name.starts_with(WEBHOOK_STREAM_PREFIX)
            && hook.wants(&record.event_type)
    }

    /// One event's JSON as a server caller sees it; a `PasswordResetRequested` shows its
    /// token, opened, to a webhook that lists the type (`null` once the token's key is gone:
    /// used, superseded or expired).
    async fn render(&self, hook: &Webhook, record: &RecordedEvent) -> Result<Vec<u8>, Stop> {
        let codec = self.hooks.core.codec();
        let decoded = AnyEvent::decode(codec, record)
            .await
            .map_err(|e| e.to_string())?;
        let show_token = record.event_type == RESET_REQUESTED && hook.lists(RESET_REQUESTED);
        let mut event = resource(
            record,
            decoded.as_ref(),
            if show_token { &["token"] } else { &[] },
        );
        if show_token {
            let token = match &decoded {
                Some(AnyEvent::User(e)) => self.open_token(record, &e.event).await,
                _ => None,
            };
            event.data.insert(
                "token".into(),
                token.map_or(serde_json::Value::Null, Into::into),
            );
        }
        serde_json::to_vec(&event).map_err(|e| e.to_string())
    }

    async fn open_token(&self, record: &RecordedEvent, event: &UserEvent) -> Option<String> {
        use base64::Engine;
        let UserEvent::PasswordResetRequested(issued) = event else {
            return None;
        };
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(issued.public.token.as_deref()?)
            .ok()?;
        let (_, key) = self
            .hooks
            .core
            .codec()
            .key(issued.public.key_id)
            .await
            .ok()
            .flatten()?;
        let user = roster_projections::projector::user_of_stream(&record.stream.name)?;
        let aad = roster_domain::user::token_aad(self.org.as_str(), user, Purpose::PasswordReset);
        let plain = roster_vault::open(&key, &aad, &sealed).ok()?;
        String::from_utf8(plain).ok()
    }
}
