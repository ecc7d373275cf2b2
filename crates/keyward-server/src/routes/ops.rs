//! Operations endpoints (SPEC §4.6): liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use keyward_proto::Health;
use utoipa::openapi::OpenApi;

use crate::{ApiError, AppState};

struct OpsState {
    app: Arc<AppState>,
    openapi: Arc<OpenApi>,
}

pub(crate) fn router(app: Arc<AppState>, openapi: Arc<OpenApi>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_document))
        .with_state(Arc::new(OpsState { app, openapi }))
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

async fn readyz(State(state): State<Arc<OpsState>>) -> Result<Json<Health>, ApiError> {
    state.app.store.ping().await.map_err(|error| {
        tracing::warn!(%error, "not ready: storage unreachable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "Storage is unreachable",
        )
    })?;
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

async fn metrics(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    let gauge_value = i64::try_from(state.app.verifier.cached_entries()).unwrap_or(i64::MAX);
    state.app.metrics.cache_entries.set(gauge_value);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.app.metrics.render(),
    )
}

async fn openapi_document(State(state): State<Arc<OpsState>>) -> Json<Arc<OpenApi>> {
    Json(Arc::clone(&state.openapi))
}
