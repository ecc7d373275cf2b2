//! `GET /api/v1/usage`: verification counts over time (issue 8).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::analytics::{Granularity, MAX_BUCKETS};
use keyward_core::scope::Scope;
use keyward_core::verify::VerifyCode;
use keyward_proto::{self as wire, ErrorEnvelope, UsageParams};
use keyward_store::UsageQuery;

use crate::extract::{ApiQuery, Caller};
use crate::{clock, convert, ApiError, AppState};

const DEFAULT_RANGE_MILLIS: i64 = 24 * 3_600_000;

/// Verification counts per minute, hour or day, split by outcome, for the caller's
/// environment; filtered by key, app, organization or outcome.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("root_key" = [])),
    params(UsageParams),
    responses((status = 200, body = wire::UsageReport), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn usage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Json<wire::UsageReport>, ApiError> {
    if params.limit.is_some() {
        return Err(ApiError::invalid(
            "invalid_limit",
            "`limit` applies to `/api/v1/usage/keys` only",
        ));
    }
    caller.require(Scope::UsageRead)?;
    let query = usage_query(&state, &caller, params).await?;
    Ok(Json(usage_report(&state, &query).await?))
}

/// The counts a query asks for, bucket by bucket.
pub(super) async fn usage_report(
    state: &AppState,
    query: &UsageQuery,
) -> Result<wire::UsageReport, ApiError> {
    let points = state.store.usage(query).await?;
    let mut outcomes = BTreeMap::new();
    let mut data: Vec<wire::UsageBucket> = Vec::new();
    for point in points {
        *outcomes.entry(point.outcome.clone()).or_insert(0) += point.count;
        let start = convert::datetime(point.bucket);
        match data.last_mut() {
            Some(bucket) if bucket.start == start => {
                bucket.total += point.count;
                bucket.outcomes.insert(point.outcome, point.count);
            }
            _ => data.push(wire::UsageBucket {
                start,
                total: point.count,
                outcomes: BTreeMap::from([(point.outcome, point.count)]),
            }),
        }
    }
    Ok(wire::UsageReport {
        granularity: query.granularity.as_str().to_owned(),
        from: convert::datetime(query.granularity.bucket_start(query.from)),
        to: convert::datetime(query.to),
        total: outcomes.values().sum(),
        outcomes,
        data,
    })
}

const DEFAULT_TOP_KEYS: u32 = 10;
const MAX_TOP_KEYS: u32 = 100;

/// The keys with the most verifications over a range, most first, each split by outcome;
/// the same filters as `GET /api/v1/usage`.
#[utoipa::path(get, path = "/api/v1/usage/keys", tag = "usage", security(("root_key" = [])),
    params(UsageParams),
    responses((status = 200, body = wire::KeyUsageReport), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn usage_by_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Json<wire::KeyUsageReport>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_TOP_KEYS);
    if !(1..=MAX_TOP_KEYS).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("`limit` must be between 1 and {MAX_TOP_KEYS}"),
        ));
    }
    caller.require(Scope::UsageRead)?;
    let query = usage_query(&state, &caller, params).await?;
    let mut keys: BTreeMap<String, wire::KeyUsage> = BTreeMap::new();
    for point in state.store.usage_by_key(&query).await? {
        let key = keys
            .entry(point.key_id.clone())
            .or_insert_with(|| wire::KeyUsage {
                key_id: point.key_id,
                total: 0,
                outcomes: BTreeMap::new(),
            });
        key.total += point.count;
        *key.outcomes.entry(point.outcome).or_insert(0) += point.count;
    }
    let mut data: Vec<wire::KeyUsage> = keys.into_values().collect();
    // Ties go to the smaller id, so the answer does not change between calls.
    data.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.key_id.cmp(&b.key_id)));
    data.truncate(limit as usize);
    Ok(Json(wire::KeyUsageReport {
        granularity: query.granularity.as_str().to_owned(),
        from: convert::datetime(query.granularity.bucket_start(query.from)),
        to: convert::datetime(query.to),
        data,
    }))
}

/// Checks a usage query's parameters and the caller's scope, and widens the range to whole
/// buckets.
/// The query `params` ask for in the caller's environment; the caller's right to it is
/// checked by the route.
pub(super) async fn usage_query(
    state: &AppState,
    caller: &Caller,
    params: UsageParams,
) -> Result<UsageQuery, ApiError> {
    let granularity = match params.granularity.as_deref() {
        None => Granularity::Hour,
        Some(text) => Granularity::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "invalid_granularity",
                "`granularity` is `minute`, `hour` or `day`",
            )
        })?,
    };
    for (name, value) in [
        ("key_id", &params.key_id),
        ("app", &params.app),
        ("organization_id", &params.organization_id),
    ] {
        if value.as_deref() == Some("") {
            return Err(ApiError::invalid(
                "invalid_filter",
                format!("`{name}` must not be empty; leave it out to count everything"),
            ));
        }
    }
    // Whole buckets: the range ends where the bucket holding `to` ends.
    let requested_to = params.to.map_or_else(clock::now, convert::timestamp);
    let to = granularity
        .bucket_start(requested_to.plus_millis(-1))
        .plus_millis(granularity.millis());
    let from = params.from.map_or_else(
        || requested_to.plus_millis(-DEFAULT_RANGE_MILLIS),
        convert::timestamp,
    );
    if from >= requested_to {
        return Err(ApiError::invalid(
            "invalid_range",
            "`from` must be before `to`",
        ));
    }
    if granularity.buckets_between(from, to) > MAX_BUCKETS {
        return Err(ApiError::invalid(
            "range_too_large",
            format!("A query spans at most {MAX_BUCKETS} buckets; narrow the range or widen the granularity"),
        ));
    }
    if let Some(outcome) = &params.outcome {
        if !VerifyCode::EVERY
            .iter()
            .any(|code| code.as_str() == outcome)
        {
            return Err(ApiError::invalid(
                "invalid_outcome",
                "`outcome` is a verification code, e.g. `VALID` or `RATE_LIMITED`",
            ));
        }
    }
    let app_id = match &params.app {
        Some(slug) => Some(state.store.app_by_slug(&caller.tenancy, slug).await?.id),
        None => None,
    };
    Ok(UsageQuery {
        tenancy: caller.tenancy.clone(),
        granularity,
        from,
        to,
        key_id: params.key_id,
        app_id,
        organization_id: params.organization_id,
        outcome: params.outcome,
    })
}
