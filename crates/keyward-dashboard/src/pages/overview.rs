//! The overview: verifications per minute, valid against invalid, the busiest keys and
//! how often limits refused.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use keyward_proto::{KeyUsageReport, UsageReport};
use time::{Duration, OffsetDateTime};

use crate::api::path;
use crate::chart::{Chart, Grouping};
use crate::error::PageError;
use crate::view::{render, Layout, Section};
use crate::{Dashboard, SignedIn};

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    last_hour: Chart,
    last_day: Chart,
    top_keys: KeyUsageReport,
    rate_limited: i64,
    usage_exceeded: i64,
    verifications: i64,
}

/// The query string of a usage report over the last `span`.
pub(crate) fn usage_range(granularity: &str, span: Duration) -> Vec<(&'static str, String)> {
    let from = OffsetDateTime::now_utc() - span;
    vec![
        ("granularity", granularity.to_owned()),
        (
            "from",
            from.format(&time::format_description::well_known::Rfc3339)
                .expect("a time formats as RFC 3339"),
        ),
    ]
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    let api = &dashboard.api;
    let key = signed.key();
    let hour_query = usage_range("minute", Duration::HOUR);
    let day_query = usage_range("hour", Duration::DAY);
    let hour_path = path(&["usage"], Some(&hour_query));
    let day_path = path(&["usage"], Some(&day_query));
    let mut top_query = day_query.clone();
    top_query.push(("limit", "10".to_owned()));
    let top_path = path(&["usage", "keys"], Some(&top_query));
    let (last_hour, last_day, top_keys) = tokio::try_join!(
        api.get::<UsageReport>(key, &hour_path),
        api.get::<UsageReport>(key, &day_path),
        api.get::<KeyUsageReport>(key, &top_path),
    )?;
    let outcome = |name: &str| last_day.outcomes.get(name).copied().unwrap_or(0);
    Ok(render(&OverviewPage {
        layout: Layout::new(&signed, Section::Overview, "Overview"),
        rate_limited: outcome("RATE_LIMITED"),
        usage_exceeded: outcome("USAGE_EXCEEDED"),
        verifications: last_day.total,
        last_hour: Chart::new(
            "Verifications per minute, last hour",
            &last_hour,
            Grouping::ValidOrNot,
        ),
        last_day: Chart::new(
            "Verifications per hour by outcome, last 24 hours",
            &last_day,
            Grouping::ByOutcome,
        ),
        top_keys,
    }))
}
