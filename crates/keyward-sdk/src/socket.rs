//! [`EventsSocket`] and [`AlertsSocket`]: the live streams of `GET /ws` (SPEC §4.5), as
//! [`Stream`]s that reconnect by themselves and resume where they left off.
//!
//! - The credential is the client's: a root key, or a public key with the end user's token.
//!   The token is captured when the socket is made; `get_jwt`, when given, is called before
//!   every connection and takes precedence.
//! - Reconnects back off exponentially, with jitter, and resume from the last event received
//!   (`since`), so a disconnection loses and repeats nothing within the server's retention
//!   window. A consumer that reads too slowly is another matter: the server drops what it
//!   cannot queue and the socket reports [`SocketEvent::Lagged`].
//! - After `auth_failed` the socket reports [`SocketEvent::AuthFailed`], then
//!   [`SocketEvent::Disconnected`], and never connects again.
//! - After `token_expired` it reconnects at once, with a fresh token from `get_jwt`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use keyward_proto::{
    ClientMessage, ErrorBody, Event, ServerMessage, Session, CLOSE_AUTH_FAILED, CLOSE_TOKEN_EXPIRED,
};
use rand::Rng;
use reqwest::Url;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, Error};

/// What a socket reports, in order.
///
/// ```no_run
/// # async fn example() -> Result<(), keyward_sdk::Error> {
/// use futures_util::StreamExt;
/// use keyward_sdk::SocketEvent;
/// # let keyward = keyward_sdk::Client::new("sk_live_…");
/// let mut events = keyward_sdk::EventsSocket::connect(&keyward);
/// while let Some(event) = events.next().await {
///     if let SocketEvent::Disconnected { reconnecting: false, reason } = event {
///         eprintln!("stream ended: {reason}");
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SocketEvent {
    /// A connection was accepted (also after each reconnect).
    Connected(Session),
    /// An event (on an [`EventsSocket`]) or an alert (on an [`AlertsSocket`]).
    Event(Box<Event>),
    /// The server dropped events because this consumer fell behind.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The credential was refused; [`SocketEvent::Disconnected`] follows, for good.
    AuthFailed(ErrorBody),
    /// The token expired; the socket reconnects at once with a fresh one.
    TokenExpired,
    /// The connection ended.
    Disconnected {
        /// Whether the socket tries again (after a backoff); `false` is the end.
        reconnecting: bool,
        /// What happened, for a person.
        reason: String,
    },
}

/// How a socket connects and reconnects.
///
/// ```no_run
/// # async fn example() -> Result<(), keyward_sdk::Error> {
/// # let keyward = keyward_sdk::Client::new("sk_live_…");
/// let options = keyward_sdk::SocketOptions {
///     since: Some("evt_1042".into()),
///     ..Default::default()
/// };
/// let alerts = keyward_sdk::AlertsSocket::connect_with(&keyward, options);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// The first reconnect waits about this long; each failure doubles it.
    pub min_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Resume after this event id (`evt_…`) on the first connection too.
    pub since: Option<String>,
    /// A connection silent this long (the server pings every 20 s) is given up and replaced.
    pub idle_timeout: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            since: None,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Key events: `key.created`, `key.updated`, `key.rotated`, `key.revoked`, `key.deleted`,
/// `key.expired`, `key.leaked`.
///
/// ```no_run
/// # async fn example(client: keyward_sdk::Client) {
/// use futures_util::StreamExt;
/// use keyward_sdk::{EventsSocket, SocketEvent};
///
/// let mut events = EventsSocket::connect(&client);
/// while let Some(event) = events.next().await {
///     match event {
///         SocketEvent::Event(event) => {
///             // Absent for an event about no API key, e.g. a leaked root key.
///             let key = event.key.as_ref().map_or("-", |key| key.id.as_str());
///             println!("{} {key}", event.event_type);
///         }
///         SocketEvent::Disconnected { reconnecting: false, .. } => break,
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct EventsSocket(Subscription);

/// Alerts: `rate_limit.exceeded`, `credits.low`, `credits.exhausted`, `key.expiring`,
/// `webhook.disabled`.
///
/// ```no_run
/// # async fn example(client: keyward_sdk::Client) {
/// use futures_util::StreamExt;
///
/// let mut alerts = keyward_sdk::AlertsSocket::connect(&client);
/// while let Some(alert) = alerts.next().await {
///     println!("{alert:?}");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AlertsSocket(Subscription);

impl EventsSocket {
    /// Connects in the background with default options; read it as a [`Stream`].
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let socket = keyward_sdk::EventsSocket::connect(&keyward);
    /// # Ok(()) }
    /// ```
    pub fn connect(client: &Client) -> Self {
        Self::connect_with(client, SocketOptions::default())
    }

    /// Connects in the background with `options`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let options = keyward_sdk::SocketOptions::default();
    /// let socket = keyward_sdk::EventsSocket::connect_with(&keyward, options);
    /// # Ok(()) }
    /// ```
    pub fn connect_with(client: &Client, options: SocketOptions) -> Self {
        Self(Subscription::start(client, "events", options))
    }
}

impl AlertsSocket {
    /// Connects in the background with default options; read it as a [`Stream`].
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let socket = keyward_sdk::AlertsSocket::connect(&keyward);
    /// # Ok(()) }
    /// ```
    pub fn connect(client: &Client) -> Self {
        Self::connect_with(client, SocketOptions::default())
    }

    /// Connects in the background with `options`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), keyward_sdk::Error> {
    /// # let keyward = keyward_sdk::Client::new("sk_live_…");
    /// let options = keyward_sdk::SocketOptions::default();
    /// let socket = keyward_sdk::AlertsSocket::connect_with(&keyward, options);
    /// # Ok(()) }
    /// ```
    pub fn connect_with(client: &Client, options: SocketOptions) -> Self {
        Self(Subscription::start(client, "alerts", options))
    }
}

impl Stream for EventsSocket {
    type Item = SocketEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SocketEvent>> {
        self.0.events.poll_recv(cx)
    }
}

impl Stream for AlertsSocket {
    type Item = SocketEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SocketEvent>> {
        self.0.events.poll_recv(cx)
    }
}

/// The receiving end of a connection task; dropping it ends the task.
#[derive(Debug)]
struct Subscription {
    events: mpsc::Receiver<SocketEvent>,
}

impl Subscription {
    fn start(client: &Client, channel: &'static str, options: SocketOptions) -> Self {
        // Small: a consumer that falls behind holds the task, the server notices and says
        // `lagged`, rather than this process buffering without bound.
        let (sender, events) = mpsc::channel(64);
        let connection = Connection {
            client: client.clone(),
            channel,
            since: options.since.clone(),
            options,
            sender,
        };
        tokio::spawn(connection.run());
        Self { events }
    }
}

/// A connection ended by `token_expired` sooner than this backs off instead of reconnecting
/// at once.
const QUICK_EXPIRY: Duration = Duration::from_millis(500);

/// How one connection ended.
enum Ended {
    /// Never again: refused credential, or nobody is reading any more.
    Finished,
    /// Reconnect at once (token expired).
    Now,
    /// Reconnect after a backoff.
    Later(String),
}

struct Connection {
    client: Client,
    channel: &'static str,
    options: SocketOptions,
    /// The last event received: where the next connection resumes.
    since: Option<String>,
    sender: mpsc::Sender<SocketEvent>,
}

impl Connection {
    async fn run(mut self) {
        let mut failures = 0_u32;
        loop {
            let started = tokio::time::Instant::now();
            let mut accepted = false;
            let ended = match self.connect(&mut accepted).await {
                Ok(ended) => ended,
                Err(error) => Ended::Later(error.to_string()),
            };
            if accepted {
                failures = 0;
            }
            // A token that expires again right away (a fixed `.jwt()`, a clock far off) must
            // not turn into a reconnect loop.
            let ended = match ended {
                Ended::Now if started.elapsed() < QUICK_EXPIRY => {
                    Ended::Later("the token expired again at once".to_owned())
                }
                other => other,
            };
            match ended {
                Ended::Finished => return,
                Ended::Now => {}
                Ended::Later(reason) => {
                    let disconnected = SocketEvent::Disconnected {
                        reconnecting: true,
                        reason,
                    };
                    if self.sender.send(disconnected).await.is_err() {
                        return;
                    }
                    let delay = self.backoff(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.sender.closed() => return,
                    }
                }
            }
        }
    }

    /// Full jitter (anywhere from zero to an exponentially growing ceiling): clients that lost
    /// the same server spread their returns over the whole window instead of its upper half.
    fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self
            .options
            .min_backoff
            .saturating_mul(2_u32.saturating_pow(failures.min(16)))
            .min(self.options.max_backoff);
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }

    fn url(&self, token: Option<&str>) -> Result<Url, Error> {
        let mut url = Url::parse(self.client.base_url())
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| Error::InvalidArgument("the base URL cannot become ws://".into()))?;
        url.path_segments_mut()
            .map_err(|()| Error::InvalidArgument("the base URL cannot have a path".into()))?
            .pop_if_empty()
            .push("ws");
        {
            let mut query = url.query_pairs_mut();
            if let Some(key) = self.client.api_key() {
                query.append_pair("api-key", key.expose_secret());
            }
            if let Some(token) = token {
                query.append_pair("token", token);
            }
            if let Some(since) = &self.since {
                query.append_pair("since", since);
            }
        }
        Ok(url)
    }

    /// One connection, until it ends; `accepted` turns true once the server welcomed it.
    async fn connect(&mut self, accepted: &mut bool) -> Result<Ended, Error> {
        let token = self.client.token().await?;
        let url = self.url(token.as_ref().map(ExposeSecret::expose_secret))?;
        let (mut socket, _) = tokio::time::timeout(
            self.options.idle_timeout,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| Error::Connection("connecting timed out".into()))?
        .map_err(|error| Error::Connection(error.to_string()))?;
        let subscribe = ClientMessage::Subscribe {
            channel: self.channel.to_owned(),
        };
        let text = serde_json::to_string(&subscribe).map_err(|e| Error::Decode(e.to_string()))?;
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|error| Error::Connection(error.to_string()))?;
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(self.options.idle_timeout, socket.next()) => frame,
                () = self.sender.closed() => return Ok(Ended::Finished),
            };
            let message = match frame {
                Err(_) => return Ok(Ended::Later("the server went silent".into())),
                Ok(None) => return Ok(Ended::Later("the server closed the connection".into())),
                Ok(Some(Err(error))) => return Ok(Ended::Later(error.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            let reported = match message {
                Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => self.on_message(message),
                    Err(error) => return Err(Error::Decode(error.to_string())),
                },
                Message::Close(frame) => {
                    let code = frame.as_ref().map(|frame| u16::from(frame.code));
                    return Ok(match code {
                        Some(CLOSE_AUTH_FAILED) => self.auth_failed(None).await,
                        Some(CLOSE_TOKEN_EXPIRED) => Ended::Now,
                        _ => Ended::Later(frame.map_or_else(
                            || "closed".to_owned(),
                            |frame| format!("closed ({}): {}", u16::from(frame.code), frame.reason),
                        )),
                    });
                }
                _ => continue,
            };
            if matches!(reported, Reported::Pass(SocketEvent::Connected(_))) {
                *accepted = true;
            }
            match reported {
                Reported::Pass(event) => {
                    if self.sender.send(event).await.is_err() {
                        return Ok(Ended::Finished);
                    }
                }
                Reported::Quiet => {}
                Reported::AuthFailed(error) => return Ok(self.auth_failed(Some(error)).await),
                Reported::TokenExpired => {
                    if self.sender.send(SocketEvent::TokenExpired).await.is_err() {
                        return Ok(Ended::Finished);
                    }
                    return Ok(Ended::Now);
                }
            }
        }
    }

    fn on_message(&mut self, message: ServerMessage) -> Reported {
        match message {
            ServerMessage::Connected { session } => Reported::Pass(SocketEvent::Connected(session)),
            ServerMessage::Event { event, .. } => {
                self.since = Some(event.id.clone());
                Reported::Pass(SocketEvent::Event(event))
            }
            ServerMessage::Lagged { missed } => Reported::Pass(SocketEvent::Lagged { missed }),
            ServerMessage::AuthFailed { error } => Reported::AuthFailed(error),
            ServerMessage::TokenExpired => Reported::TokenExpired,
            ServerMessage::Subscribed { .. }
            | ServerMessage::Unsubscribed { .. }
            | ServerMessage::Error { .. } => Reported::Quiet,
        }
    }

    /// Reports the refusal (once), then the end, and stops for good.
    async fn auth_failed(&mut self, error: Option<ErrorBody>) -> Ended {
        if let Some(error) = error {
            let _ = self.sender.send(SocketEvent::AuthFailed(error)).await;
        }
        let _ = self
            .sender
            .send(SocketEvent::Disconnected {
                reconnecting: false,
                reason: "authentication failed".to_owned(),
            })
            .await;
        Ended::Finished
    }
}

/// What a server message means for the consumer.
enum Reported {
    Pass(SocketEvent),
    Quiet,
    AuthFailed(ErrorBody),
    TokenExpired,
}
