//! Protects a route of your own axum service with Keyward.
//!
//! ```sh
//! KEYWARD_URL=http://127.0.0.1:8080 KEYWARD_API_KEY=sk_live_… \
//!     cargo run -p keyward-sdk --example protect_route
//! curl -H "X-API-Key: <a key issued by Keyward>" http://127.0.0.1:3000/orders
//! ```
//!
//! A valid key reaches the handler, which sees who called; a missing or unknown key gets 401,
//! a revoked one 403, a rate-limited one 429 with `Retry-After`, all in Keyward's envelope.

use axum::routing::get;
use axum::Router;
use keyward_sdk::{Client, KeywardLayer, Verified};

async fn orders(Verified(caller): Verified) -> String {
    let who = caller
        .subject
        .or(caller.owner_user_id)
        .unwrap_or_else(|| "an anonymous key".to_owned());
    format!("the orders of {who}\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keyward = Client::from_env()?;
    let app = Router::new()
        .route("/orders", get(orders))
        .layer(KeywardLayer::new(keyward).require("read"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
