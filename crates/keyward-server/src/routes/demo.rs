//! Demo sandboxes (SPEC §4.3): a throw-away workspace with a `demo` environment and an
//! `sk_demo_…` root key, for trying Keyward without an account. Each sandbox is a workspace
//! of its own, so nothing in it is visible from anywhere else, and it is purged whole.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::model::{Environment, RootKey, Tenancy};
use keyward_core::scope::ScopeSet;
use keyward_core::secret::{IssuedSecret, ROOT_KEY_PREFIX};
use keyward_core::usage::RateWindow;
use keyward_proto::{DemoSession, ErrorEnvelope};
use keyward_store::{NewSandbox, StoreError};
use secrecy::ExposeSecret;

use crate::extract::Caller;
use crate::rate_limit::{client_ip, RateLimitSlot};
use crate::verification::Refusal;
use crate::{clock, convert, os_rng, ApiError, AppState};

/// Sandboxes purged per sweep, so one sweep never holds storage for long.
const SWEEP_BATCH: u32 = 100;

/// Create a demo sandbox. No authentication; limited per client address.
#[utoipa::path(post, path = "/api/v1/demo/session", tag = "demo",
    responses((status = 201, body = DemoSession), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<(StatusCode, Json<DemoSession>), ApiError> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let client = client_ip(peer, &headers, &state.trusted_proxies);
    let now = crate::extract::request_time();
    let calls = state
        .verification
        .limit_calls(
            &format!("demo-ip:{client}"),
            &[RateWindow {
                limit: state.demo.sessions_per_minute,
                period_ms: 60_000,
            }],
            now,
        )
        .await?;
    if let Some(calls) = calls {
        let refused = calls.is_refused();
        if let Some(slot) = extensions.get::<RateLimitSlot>() {
            slot.fill(calls);
        }
        if refused {
            return Err(Refusal::RateLimited.into());
        }
    }
    let secret = IssuedSecret::generate(ROOT_KEY_PREFIX, Environment::Demo, &mut os_rng())
        .map_err(|_| ApiError::internal())?;
    let ttl_ms = i64::try_from(state.demo.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now.plus_millis(ttl_ms);
    let workspace_id = id::generate(IdKind::Workspace, now, &mut os_rng());
    let root_key = RootKey {
        id: id::generate(IdKind::RootKey, now, &mut os_rng()),
        tenancy: Tenancy {
            workspace_id: workspace_id.clone(),
            environment: Environment::Demo,
        },
        name: "Demo sandbox".to_owned(),
        scopes: ScopeSet::all(),
        start: secret.start.clone(),
        created_at: now,
        revoked_at: None,
        rate_limit_scheme: None,
        limit_meter: None,
        expires_at: Some(expires_at),
    };
    let sandbox = NewSandbox {
        workspace_id,
        root_key,
        hash: secret.hash,
        expires_at,
        now,
    };
    state
        .change_credential(move |state| async move { state.store.create_sandbox(&sandbox).await })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DemoSession {
            secret: secret.secret.expose_secret().to_owned(),
            environment: Environment::Demo.as_str().to_owned(),
            expires_at: convert::datetime(expires_at),
        }),
    ))
}

/// End a demo sandbox: its key stops working and every row of it is deleted.
#[utoipa::path(delete, path = "/api/v1/demo/session", tag = "demo", security(("root_key" = [])),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    if caller.tenancy.environment != Environment::Demo {
        return Err(ApiError::not_found("demo session"));
    }
    let workspace_id = caller.tenancy.workspace_id.clone();
    let now = caller.now;
    state
        .change_credential(move |state| async move {
            state.store.purge_sandbox(&workspace_id, now).await
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Purges ended sandboxes every `interval` until `stop` fires or the server is gone.
pub(crate) async fn sweep_loop(
    state: Weak<AppState>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(state) = state.upgrade() else { return };
        if let Err(error) = sweep(&state).await {
            tracing::warn!(%error, "could not purge ended demo sandboxes; will retry");
        }
        // The same housekeeping pass forgets HMAC signatures whose window has passed.
        let now = clock::now();
        state
            .verification
            .replay
            .sweep(now.as_millis().div_euclid(1000));
        if let Err(error) = state.store.forget_signatures(now).await {
            tracing::warn!(%error, "could not forget old signatures; will retry");
        }
        // And rotated-away secrets whose grace period has ended.
        if let Err(error) = state.store.purge_ended_secrets(now).await {
            tracing::warn!(%error, "could not drop ended secrets; will retry");
        }
        // And customer portal sessions that are over (their links spent or expired).
        if let Err(error) = state.store.purge_portal_sessions(now).await {
            tracing::warn!(%error, "could not forget ended portal sessions; will retry");
        }
    }
}

async fn sweep(state: &AppState) -> Result<(), StoreError> {
    let now = clock::now();
    for workspace_id in state.store.expired_sandboxes(now, SWEEP_BATCH).await? {
        let purged = state
            .coherence
            .settle(state.store.purge_sandbox(&workspace_id, now))
            .await;
        match purged {
            Ok(_) => tracing::debug!(workspace_id, "purged an ended demo sandbox"),
            // Another node purged it first.
            Err(StoreError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
