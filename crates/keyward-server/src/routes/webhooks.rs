//! `/api/v1/webhook-endpoints` (SPEC §4.8). Delivery itself is `crate::webhooks`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::scope::Scope;
use keyward_core::validate;
use keyward_core::webhook::{
    EventFilter, WebhookEndpoint, WebhookSecret, PREVIOUS_SECRET_GRACE_SECONDS,
};
use keyward_proto::{
    self as wire, CreateWebhookEndpointRequest, ErrorEnvelope, ListWebhookDeliveriesParams,
    PageParams, UpdateWebhookEndpointRequest, WebhookDeliveryQueued, WebhookEndpointWithSecret,
};
use keyward_store::WebhookEndpointPatch;

use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::outbound::{self, OutboundError};
use crate::{convert, os_rng, page_request, ApiError, AppState};

const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks an endpoint's URL as every URL Keyward fetches is checked: the scheme and an
/// address literal, then what the host resolves to now (when it resolves: a host not yet
/// published is accepted, and checked again at every connection).
async fn endpoint_url(state: &AppState, caller: &Caller, url: &str) -> Result<String, ApiError> {
    if !state.verification.may_fetch_for(caller.tenancy.environment) {
        return Err(ApiError::forbidden(
            "fetches_not_allowed",
            "Demo sandboxes cannot make Keyward send requests to URLs",
        ));
    }
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid("invalid_url", "`url` is too long"));
    }
    let refused = |error: OutboundError| ApiError::invalid("invalid_url", error.to_string());
    let parsed = outbound::check_url(url, state.webhooks.allow_private).map_err(refused)?;
    // A slow resolver must not hold the request: what it cannot say now is checked again
    // at every connection.
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        outbound::resolve_checked(&parsed, state.webhooks.allow_private),
    )
    .await;
    match resolved {
        Ok(Ok(_) | Err(OutboundError::Unreachable(_))) | Err(_) => Ok(parsed.to_string()),
        Ok(Err(error)) => Err(refused(error)),
    }
}

fn event_filter(names: Option<&[String]>) -> Result<EventFilter, ApiError> {
    match names {
        None => Ok(EventFilter::All),
        Some(names) => EventFilter::parse(names.iter().map(String::as_str))
            .map_err(|error| ApiError::invalid("invalid_events", error.to_string())),
    }
}

fn description(text: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(text) = &text {
        if !text.is_empty() {
            validate::text("description", text, MAX_DESCRIPTION_LEN)?;
        }
    }
    Ok(text)
}

fn new_secret(state: &AppState, endpoint_id: &str) -> (WebhookSecret, Vec<u8>) {
    let secret = WebhookSecret::generate(&mut os_rng());
    let sealed = state
        .master_key
        .seal(secret.expose().as_bytes(), endpoint_id);
    (secret, sealed)
}

/// Add an endpoint. Its signing secret is in this answer only. Needs `events:read` as well:
/// an endpoint receives what the event stream shows.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("root_key" = [])),
    request_body = CreateWebhookEndpointRequest,
    responses((status = 201, body = WebhookEndpointWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateWebhookEndpointRequest>,
) -> Result<(StatusCode, Json<WebhookEndpointWithSecret>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let url = endpoint_url(&state, &caller, &request.url).await?;
    let events = event_filter(request.events.as_deref())?;
    let description = description(request.description)?.unwrap_or_default();
    let change = caller.change();
    let endpoint = WebhookEndpoint {
        id: id::generate(IdKind::WebhookEndpoint, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        url,
        description,
        events,
        enabled: request.enabled.unwrap_or(true),
        disabled_reason: None,
        failing_since: None,
        created_at: change.now,
        updated_at: change.now,
    };
    let (secret, sealed) = new_secret(&state, &endpoint.id);
    state
        .store
        .create_webhook_endpoint(&change, &endpoint, &sealed)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointWithSecret {
            endpoint: convert::webhook_endpoint(&endpoint),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// The environment's endpoints, newest first; never their secrets.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::WebhookEndpoint>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_endpoints(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::WebhookEndpoint>>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let endpoints = state
        .store
        .list_webhook_endpoints(&caller.tenancy, &page)
        .await?;
    Ok(Json(convert::page(endpoints, convert::webhook_endpoint)))
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::WebhookEndpoint), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::WebhookEndpoint>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let endpoint = state.store.webhook_endpoint(&caller.tenancy, &id).await?;
    Ok(Json(convert::webhook_endpoint(&endpoint)))
}

/// Change an endpoint. Turning it back on resumes its pending deliveries.
#[utoipa::path(patch, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path)), request_body = UpdateWebhookEndpointRequest,
    responses((status = 200, body = wire::WebhookEndpoint), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateWebhookEndpointRequest>,
) -> Result<Json<wire::WebhookEndpoint>, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let url = match &request.url {
        Some(url) => Some(endpoint_url(&state, &caller, url).await?),
        None => None,
    };
    let patch = WebhookEndpointPatch {
        url,
        description: description(request.description)?,
        events: request
            .events
            .as_deref()
            .map(|names| event_filter(Some(names)))
            .transpose()?,
        enabled: request.enabled,
    };
    let endpoint = state
        .store
        .update_webhook_endpoint(&caller.change(), &id, &patch)
        .await?;
    Ok(Json(convert::webhook_endpoint(&endpoint)))
}

/// Delete an endpoint, with its pending deliveries and its log.
#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    state
        .store
        .delete_webhook_endpoint(&caller.change(), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown in this answer only. The previous one keeps signing beside it
/// for 24 hours (each delivery carries a signature by each), so receivers can switch.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookEndpointWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointWithSecret>, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let change = caller.change();
    let (secret, sealed) = new_secret(&state, &id);
    let endpoint = state
        .store
        .rotate_webhook_secret(
            &change,
            &id,
            &sealed,
            change.now.plus_seconds(PREVIOUS_SECRET_GRACE_SECONDS),
        )
        .await?;
    Ok(Json(WebhookEndpointWithSecret {
        endpoint: convert::webhook_endpoint(&endpoint),
        secret: secret.expose().to_owned(),
    }))
}

/// An endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path), ListWebhookDeliveriesParams),
    responses((status = 200, body = wire::Page<wire::WebhookDelivery>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ListWebhookDeliveriesParams>,
) -> Result<Json<wire::Page<wire::WebhookDelivery>>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let deliveries = state
        .store
        .list_webhook_deliveries(&caller.tenancy, &id, &page)
        .await?;
    Ok(Json(convert::page(deliveries, convert::webhook_delivery)))
}

/// Send a delivery again now, with the same `webhook-id` (a receiver that has it drops it).
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = WebhookDeliveryQueued), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn retry_delivery(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<WebhookDeliveryQueued>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    state
        .store
        .retry_webhook_delivery(&caller.change(), &id, &delivery_id)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookDeliveryQueued { delivery_id }),
    ))
}

/// Send a `webhook.test` event to this endpoint (only), whatever its `events`.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/test", tag = "webhooks", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = WebhookDeliveryQueued), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn test_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WebhookDeliveryQueued>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let delivery_id = state
        .store
        .queue_test_delivery(&caller.change(), &id)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookDeliveryQueued { delivery_id }),
    ))
}
