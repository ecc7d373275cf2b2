//! `GET /ws`: the event and alert stream (SPEC §4.5). The protocol's messages are
//! `keyward_proto::{ServerMessage, ClientMessage}`; the fan-out is `crate::events`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use futures_util::SinkExt;
use keyward_core::credential::{self, Presented};
use keyward_core::event::{Audience, Channel, Event};
use keyward_core::scope::Scope;
use keyward_core::token::TokenError;
use keyward_proto::{self as wire, ServerMessage, SocketParams};
use keyward_store::EventScope;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::events::{Delivery, SocketPermit};
use crate::extract::ApiQuery;
use crate::middleware::RequestId;
use crate::verification::Refusal;
use crate::{clock, convert, AppState};

/// The largest message a client may send; its messages are tiny.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Frames written to a socket at once, before its other duties (pings, expiry) get a turn.
const MAX_BURST: usize = 64;
/// An idle socket's buffers: its reads are tiny, and writes are flushed per burst.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;
/// Events read from storage at a time while resuming.
const RESUME_BATCH: u32 = 500;

/// Open the event and alert stream. Authenticates with `?api-key=` (a root key with
/// `events:read`, or a public key) and `&token=`; then send
/// `{"type":"subscribe","channel":"events"|"alerts"}`.
#[utoipa::path(get, path = "/ws", tag = "events",
    params(("api-key" = String, Query), ("token" = Option<String>, Query),
        ("tenant" = Option<String>, Query), ("since" = Option<String>, Query)),
    responses((status = 101, description = "Switching to the WebSocket protocol; messages are `ServerMessage`, `ClientMessage`")))]
pub(crate) async fn websocket(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    ApiQuery(params): ApiQuery<SocketParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            state.metrics.stream.connections.inc();
            let mut connection = Connection {
                socket,
                request_id: request_id.0,
                send_deadline: state.events.settings.heartbeat_interval * 2,
            };
            connection.serve(&state, params).await;
        })
}

/// Who a socket speaks for, once authenticated.
struct Session {
    audience: Audience,
    /// What counts against the per-credential limit: the root key, or public key + subject.
    credential: String,
    /// When the token ends the session.
    expires_at: Option<Instant>,
    welcome: wire::Session,
    /// A root key's limit on calls to Keyward's API, which opening a stream counts against.
    calls: Option<(String, Vec<keyward_core::usage::RateWindow>)>,
}

struct Connection {
    socket: WebSocket,
    request_id: String,
    send_deadline: Duration,
}

/// The peer is gone, or stopped reading: the session ends.
#[derive(Debug)]
struct Gone;

impl Connection {
    async fn serve(&mut self, state: &Arc<AppState>, params: SocketParams) {
        let hub = &state.events;
        if !hub.has_room() {
            return self
                .refuse_busy("This server has reached its WebSocket connection limit")
                .await;
        }
        let since = match params.since.as_deref().map(Event::parse_id) {
            Some(None) => {
                let error =
                    ApiError::invalid("invalid_since", "`since` must be an event id, `evt_…`");
                return self.auth_failed(&error).await;
            }
            Some(Some(seq)) => Some(seq),
            None => None,
        };
        let session = match authenticate(state, &params).await {
            Ok(session) => session,
            // Keyward's own trouble is no verdict on the credential: try again later.
            Err(error) if error.status().is_server_error() => {
                return self
                    .close(
                        wire::CLOSE_TRY_AGAIN_LATER,
                        "service unavailable; retry shortly",
                    )
                    .await
            }
            Err(error) => return self.auth_failed(&error).await,
        };
        // Opening a stream is a call like any other; re-checks of an open one are not.
        if let Some((meter, windows)) = &session.calls {
            let counted = state
                .verification
                .limit_api_calls(&session.audience.tenancy, meter, windows, clock::now())
                .await;
            match counted {
                Ok(Some(calls)) if calls.is_refused() => {
                    // Not a verdict on the credential: the client may come back later.
                    return self
                        .close(wire::CLOSE_TRY_AGAIN_LATER, "rate limited; retry later")
                        .await;
                }
                Ok(_) => {}
                Err(_) => {
                    return self
                        .close(
                            wire::CLOSE_TRY_AGAIN_LATER,
                            "service unavailable; retry shortly",
                        )
                        .await
                }
            }
        }
        let _permit: SocketPermit = match hub.admit(session.credential.clone()) {
            Ok(permit) => permit,
            Err(reason) => return self.refuse_busy(reason).await,
        };
        // Before anything is read from storage, so that nothing published meanwhile is lost.
        let queue = hub.subscribe();
        // An id from the future (another deployment, a typo) resumes from now.
        let since = since.map(|since| hub.published().map_or(since, |now| since.min(now)));
        let welcome = ServerMessage::Connected {
            session: session.welcome.clone(),
        };
        if self.send(&welcome).await.is_err() {
            return;
        }
        let mut stream = Stream {
            state,
            session: &session,
            params: &params,
            since,
            resumed: HashSet::new(),
            subscribed: HashMap::new(),
        };
        stream.run(self, queue).await;
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), Gone> {
        let text = serde_json::to_string(message).map_err(|_| Gone)?;
        self.send_frame(Message::Text(text.into())).await
    }

    /// A peer that stops reading fills its TCP window, and a send then waits; past the
    /// deadline the peer is dropped rather than held by a task forever.
    async fn send_frame(&mut self, message: Message) -> Result<(), Gone> {
        self.feed_frame(message).await?;
        self.flush().await
    }

    /// Queues a frame in the socket's write buffer; [`Connection::flush`] writes it.
    async fn feed_frame(&mut self, message: Message) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_deadline, self.socket.feed(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Gone),
        }
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_deadline, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Gone),
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .send_frame(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
    }

    async fn auth_failed(&mut self, error: &ApiError) {
        let message = ServerMessage::AuthFailed {
            error: error.body(&self.request_id),
        };
        if self.send(&message).await.is_ok() {
            self.close(wire::CLOSE_AUTH_FAILED, "authentication failed")
                .await;
        }
    }

    async fn refuse_busy(&mut self, reason: &'static str) {
        self.close(wire::CLOSE_TRY_AGAIN_LATER, reason).await;
    }
}

async fn authenticate(state: &AppState, params: &SocketParams) -> Result<Session, ApiError> {
    let presented =
        credential::from_url_parameters(params.api_key.as_deref(), params.token.as_deref())
            .map_err(|_| ApiError::invalid_api_key())?;
    let now = clock::now();
    match presented {
        Presented::Secret(secret) => {
            let root = state.verification.authenticate_root(secret, now).await?;
            if !root.key.scopes.grants(Scope::EventsRead) {
                return Err(ApiError::forbidden(
                    "insufficient_scope",
                    "This key lacks the `events:read` scope",
                ));
            }
            let tenancy = root.key.tenancy.clone();
            Ok(Session {
                welcome: wire::Session {
                    credential_type: "api_key".to_owned(),
                    environment: tenancy.environment.as_str().to_owned(),
                    subject: None,
                    tenant: None,
                    expires_at: None,
                },
                audience: Audience {
                    tenancy,
                    subject: None,
                },
                credential: root.key.id.clone(),
                expires_at: None,
                calls: Some((root.meter.clone(), root.windows.clone())),
            })
        }
        Presented::JwtPublicKey { key, token } | Presented::ClientPublicKey { key, token } => {
            let user = state
                .verification
                .authenticate_end_user(key, token, params.tenant.as_deref(), now)
                .await?;
            // Without a token (a client key while enhanced security is off) there is nobody
            // whose keys the stream could be about.
            let Some(identity) = user.identity.as_deref() else {
                return Err(Refusal::Token(TokenError::Missing).into());
            };
            let tenancy = user.public_key.key.tenancy.clone();
            let expires_at_ms = identity.expires_at.saturating_mul(1000);
            // Verification allows a minute of clock skew past `exp`; a stream would end at
            // once, so it refuses such a token outright rather than invite a reconnect loop.
            let Ok(remaining) = u64::try_from(expires_at_ms - now.as_millis()) else {
                return Err(Refusal::Token(TokenError::Expired).into());
            };
            Ok(Session {
                welcome: wire::Session {
                    credential_type: presented.credential_type().to_owned(),
                    environment: tenancy.environment.as_str().to_owned(),
                    subject: Some(identity.subject.clone()),
                    tenant: identity.tenant.clone(),
                    expires_at: Some(convert::datetime(keyward_core::Timestamp::from_millis(
                        expires_at_ms,
                    ))),
                },
                credential: format!("{}:{}", user.public_key.key.id, identity.subject),
                audience: Audience {
                    tenancy,
                    subject: Some(identity.subject.clone()),
                },
                expires_at: Some(Instant::now() + Duration::from_millis(remaining)),
                calls: None,
            })
        }
        Presented::WorkspaceSignature(_) => Err(ApiError::invalid_api_key()),
    }
}

/// One authenticated socket's stream.
struct Stream<'a> {
    state: &'a AppState,
    session: &'a Session,
    /// The credential, checked again while the session lasts.
    params: &'a SocketParams,
    since: Option<i64>,
    /// Channels that already resumed from `since`: a second subscription starts live.
    resumed: HashSet<Channel>,
    /// Subscribed channels, each with the number of the last event sent on it.
    subscribed: HashMap<Channel, i64>,
}

impl Stream<'_> {
    async fn run(
        &mut self,
        connection: &mut Connection,
        mut queue: tokio::sync::broadcast::Receiver<Arc<Delivery>>,
    ) {
        let settings = &self.state.events.settings;
        let mut heartbeat = tokio::time::interval(settings.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let expiry = async {
            match self.session.expires_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let mut closing = self.state.events.closing();
        let mut recheck = tokio::time::interval_at(
            Instant::now() + settings.credential_recheck,
            settings.credential_recheck,
        );
        loop {
            let outcome = tokio::select! {
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
                    connection.close(wire::CLOSE_GOING_AWAY, "server shutting down").await;
                    return;
                }
                () = &mut expiry => {
                    if connection.send(&ServerMessage::TokenExpired).await.is_ok() {
                        connection.close(wire::CLOSE_TOKEN_EXPIRED, "token expired").await;
                    }
                    return;
                }
                incoming = connection.socket.recv() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(message)) => self.on_message(connection, message).await,
                        Some(Err(_)) | None => return,
                    }
                }
                delivery = queue.recv() => self.deliver(connection, delivery, &mut queue).await,
                _ = recheck.tick() => self.recheck(connection).await,
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > settings.heartbeat_interval * 2 {
                        tracing::debug!("dropping a socket whose peer stopped answering");
                        return;
                    }
                    connection.send_frame(Message::Ping(Default::default())).await.map(|()| true)
                }
            };
            if !matches!(outcome, Ok(true)) {
                return;
            }
        }
    }

    /// Ends the session once its credential is revoked, disabled, expired or loses its scope.
    /// The verifier's cache answers, and every node drops a changed credential from it before
    /// the change returns; storage trouble is not a verdict and leaves the session be.
    async fn recheck(&self, connection: &mut Connection) -> Result<bool, Gone> {
        match authenticate(self.state, self.params).await {
            Ok(_) => Ok(true),
            Err(error) if error.status().is_server_error() => Ok(true),
            Err(error) => {
                connection.auth_failed(&error).await;
                Ok(false)
            }
        }
    }

    /// `Ok(false)` ends the session.
    async fn on_message(
        &mut self,
        connection: &mut Connection,
        message: Message,
    ) -> Result<bool, Gone> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => {
                // The socket queued the Close reply RFC 6455 §5.5.1 asks for; writing it lets
                // the client see a clean close (1000, `wasClean`) rather than a dropped line.
                let _ = connection.flush().await;
                return Ok(false);
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(true),
            Message::Binary(_) => {
                let error = ApiError::bad_request("unsupported_message", "Send JSON text messages");
                return self.reply_error(connection, &error).await;
            }
        };
        let request: wire::ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(request) => request,
            Err(_) => {
                let error = ApiError::bad_request(
                    "invalid_message",
                    "Send {\"type\":\"subscribe\"|\"unsubscribe\",\"channel\":\"events\"|\"alerts\"}",
                );
                return self.reply_error(connection, &error).await;
            }
        };
        let (subscribe, name) = match &request {
            wire::ClientMessage::Subscribe { channel } => (true, channel),
            wire::ClientMessage::Unsubscribe { channel } => (false, channel),
        };
        let Some(channel) = Channel::parse(name) else {
            let error =
                ApiError::invalid("unknown_channel", "The channels are `events` and `alerts`");
            return self.reply_error(connection, &error).await;
        };
        if !subscribe {
            self.subscribed.remove(&channel);
            let reply = ServerMessage::Unsubscribed {
                channel: channel.as_str().to_owned(),
            };
            return connection.send(&reply).await.map(|()| true);
        }
        let reply = ServerMessage::Subscribed {
            channel: channel.as_str().to_owned(),
        };
        connection.send(&reply).await?;
        if self.subscribed.contains_key(&channel) {
            return Ok(true);
        }
        self.subscribed.insert(channel, 0);
        match self.since {
            Some(since) if self.resumed.insert(channel) => {
                self.resume(connection, channel, since).await
            }
            _ => Ok(true),
        }
    }

    /// Sends what storage holds for `channel` after `since`; the live queue then skips what
    /// this sent.
    async fn resume(
        &mut self,
        connection: &mut Connection,
        channel: Channel,
        since: i64,
    ) -> Result<bool, Gone> {
        let store = self.state.store.as_ref();
        let tenancy = &self.session.audience.tenancy;
        match store.oldest_event_seq().await {
            Ok(Some(oldest)) if oldest > since.saturating_add(1) => {
                // Some of what followed `since` is past the retention window.
                let missed = u64::try_from(oldest - since - 1).unwrap_or(0);
                connection.send(&ServerMessage::Lagged { missed }).await?;
            }
            Ok(_) => {}
            Err(error) => return self.storage_failed(connection, &error).await,
        }
        let mut after = since;
        loop {
            let scope = EventScope {
                tenancy,
                owner_user_id: self.session.audience.subject.as_deref(),
            };
            let batch = match store.events_after(after, Some(&scope), RESUME_BATCH).await {
                Ok(batch) => batch,
                Err(error) => return self.storage_failed(connection, &error).await,
            };
            let full = batch.len() == RESUME_BATCH as usize;
            for event in batch {
                after = event.seq;
                if event.kind.channel() == channel && self.session.audience.may_see(&event) {
                    let message = ServerMessage::Event {
                        channel: channel.as_str().to_owned(),
                        event: Box::new(convert::event(&event)),
                    };
                    connection.send(&message).await?;
                }
            }
            if !full {
                break;
            }
        }
        self.subscribed.insert(channel, after);
        Ok(true)
    }

    async fn storage_failed(
        &self,
        connection: &mut Connection,
        error: &keyward_store::StoreError,
    ) -> Result<bool, Gone> {
        tracing::warn!(%error, "resuming an event stream failed");
        let error = ApiError::storage_unavailable();
        self.reply_error(connection, &error).await?;
        Ok(false)
    }

    /// Sends what the queue holds, `first` first, in one write: a burst of events costs one
    /// system call per socket rather than one per event.
    async fn deliver(
        &mut self,
        connection: &mut Connection,
        first: Result<Arc<Delivery>, RecvError>,
        queue: &mut tokio::sync::broadcast::Receiver<Arc<Delivery>>,
    ) -> Result<bool, Gone> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(received) = next.take() {
            let frame = match received {
                Ok(delivery) => self.frame_for(&delivery),
                // Before any subscription nothing of this socket's was missed.
                Err(RecvError::Lagged(_)) if self.subscribed.is_empty() => None,
                Err(RecvError::Lagged(missed)) => {
                    self.state.metrics.stream.events_missed.inc_by(missed);
                    let lagged = serde_json::to_string(&ServerMessage::Lagged { missed });
                    lagged.ok().map(Utf8Bytes::from)
                }
                Err(RecvError::Closed) => return Ok(false),
            };
            if let Some(frame) = frame {
                connection.feed_frame(Message::Text(frame)).await?;
                written += 1;
            }
            if written < MAX_BURST {
                next = match queue.try_recv() {
                    Ok(delivery) => Some(Ok(delivery)),
                    Err(TryRecvError::Lagged(missed)) => Some(Err(RecvError::Lagged(missed))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    Err(TryRecvError::Empty) => None,
                };
            }
        }
        connection.flush().await.map(|()| true)
    }

    /// The frame of a delivery this socket should get, once.
    fn frame_for(&mut self, delivery: &Delivery) -> Option<Utf8Bytes> {
        let last_sent = self.subscribed.get_mut(&delivery.channel)?;
        if delivery.event.seq <= *last_sent || !self.session.audience.may_see(&delivery.event) {
            return None;
        }
        *last_sent = delivery.event.seq;
        Some(delivery.frame.clone())
    }

    async fn reply_error(
        &self,
        connection: &mut Connection,
        error: &ApiError,
    ) -> Result<bool, Gone> {
        let message = ServerMessage::Error {
            error: error.body(&connection.request_id),
        };
        connection.send(&message).await.map(|()| true)
    }
}
