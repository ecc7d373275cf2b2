//! Operations endpoints (SPEC §4.6): liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use keyward_proto::Health;
use utoipa::openapi::OpenApi;

use crate::{ApiError, AppState};

/// `/openapi.json` itself: served from the document the other routes make.
pub(crate) fn openapi_router(openapi: Arc<OpenApi>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi_document))
        .with_state(openapi)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        redis: None,
    })
}

/// Storage is reachable: 200 (`degraded` while Redis is unreachable), or 503 in the error
/// envelope.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = keyward_proto::ErrorEnvelope)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await.map_err(|error| {
        tracing::warn!(%error, "not ready: storage unreachable");
        ApiError::storage_unavailable()
    })?;
    // Redis being down does not make a node unready: every node shares the same Redis, and
    // each still serves (rate limits on its fallback; see the usage settings).
    let redis = state.verification.limiter.redis_status();
    Ok(Json(Health {
        status: if redis == Some(false) {
            "degraded"
        } else {
            "ready"
        }
        .to_owned(),
        redis: redis.map(|up| if up { "up" } else { "unreachable" }.to_owned()),
    }))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, body = String, content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let cache = &state.verification.cache;
    let gauge_value = i64::try_from(cache.len()).unwrap_or(i64::MAX);
    state.metrics.cache_entries.set(gauge_value);
    let (weighted, bound) = cache.weighted_bytes();
    let as_gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
    state.metrics.cache_weighted_bytes.set(as_gauge(weighted));
    state.metrics.cache_max_bytes.set(as_gauge(bound));
    state
        .metrics
        .filter_bytes
        .set(as_gauge(cache.known.bytes()));
    state
        .metrics
        .filter_ready
        .set(i64::from(cache.known.is_ready()));
    state
        .metrics
        .cache_trusted
        .set(i64::from(cache.is_trusted()));
    let balances = state.verification.limiter.live_balances();
    state
        .metrics
        .usage_live_balances
        .set(i64::try_from(balances).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn openapi_document(State(openapi): State<Arc<OpenApi>>) -> Json<Arc<OpenApi>> {
    Json(openapi)
}
