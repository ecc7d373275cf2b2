//! Follows alerts (rate limits hit, credits running out, keys about to expire) as they
//! happen, reconnecting by itself and resuming where it left off.
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:8080 KEYWARD_API_KEY=sk_live_… \
//!     cargo run -p keyward-sdk --example follow_alerts
//! ```
//!
//! The root key needs the `events:read` scope. With a public key (`pk_jwt_…`) and
//! `.get_jwt(…)` instead, an end user follows the alerts of their own keys only.

use futures_util::StreamExt;
use keyward_sdk::{AlertsSocket, Client, SocketEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keyward = Client::from_env()?;
    let mut alerts = AlertsSocket::connect(&keyward);
    while let Some(event) = alerts.next().await {
        match event {
            SocketEvent::Connected(session) => println!("connected to {}", session.environment),
            SocketEvent::Event(alert) => println!(
                "{} {} on {} {}",
                alert.created_at,
                alert.event_type,
                // `webhook.disabled` is about an endpoint, named in its details.
                alert.key.map_or_else(
                    || "-".to_owned(),
                    |key| format!("key {} ({})", key.id, key.name)
                ),
                serde_json::Value::Object(alert.details),
            ),
            SocketEvent::Lagged { missed } => println!("missed {missed} alerts"),
            SocketEvent::AuthFailed(error) => println!("refused: {}", error.message),
            SocketEvent::Disconnected {
                reconnecting: false,
                ..
            } => break,
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
