//! Organizations: look one up by its id, set its shared rate limit and credit cap, remove
//! its settings. (The API names organizations by the workspace's own ids and has no list.)

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use keyward_proto::{CreditPeriod, Organization, PutOrganizationRequest};
use serde::Deserialize;

use crate::api::path;
use crate::error::PageError;
use crate::pages::apps::{refusal, scheme_slugs};
use crate::pages::back_to;
use crate::view::{filled, render_with, whole_number, Layout, Notice, Section, Submitted};
use crate::{Dashboard, SignedIn};

#[derive(Template)]
#[template(path = "organizations.html")]
struct OrganizationsPage {
    layout: Layout,
    /// The id looked up, if any.
    id: Option<String>,
    /// Its settings; `None` when it has none yet.
    organization: Option<Organization>,
    schemes: Vec<String>,
}

impl OrganizationsPage {
    fn period(&self) -> &'static str {
        match self.organization.as_ref().and_then(|org| org.credit_period) {
            Some(CreditPeriod::Daily) => "daily",
            Some(CreditPeriod::Monthly) => "monthly",
            None => "",
        }
    }

    fn number(value: &Option<i64>) -> String {
        value.map(|value| value.to_string()).unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Lookup {
    id: Option<String>,
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Query(lookup): Query<Lookup>,
) -> Result<Response, PageError> {
    page(&dashboard, signed, filled(&lookup.id), None).await
}

async fn page(
    dashboard: &Dashboard,
    signed: SignedIn,
    id: Option<String>,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    let organization = match &id {
        None => None,
        Some(id) => match dashboard
            .api
            .get::<Organization>(signed.key(), &path(&["organizations", id], None::<&()>))
            .await
        {
            Ok(organization) => Some(organization),
            Err(failure) if failure.status == StatusCode::NOT_FOUND => None,
            Err(failure) => return Err(failure.into()),
        },
    };
    let schemes = scheme_slugs(dashboard, &signed).await;
    let status = if notice.as_ref().is_some_and(|notice| notice.error) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render_with(
        status,
        &OrganizationsPage {
            layout: Layout::new(&signed, Section::Organizations, "Organizations")
                .with_notice(notice),
            id,
            organization,
            schemes,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct OrganizationForm {
    id: String,
    rate_limit_scheme: Option<String>,
    credit_cap: Option<String>,
    credit_period: Option<String>,
    low_credits_threshold: Option<String>,
}

impl OrganizationForm {
    fn request(&self) -> Result<PutOrganizationRequest, String> {
        Ok(PutOrganizationRequest {
            rate_limit_scheme: filled(&self.rate_limit_scheme),
            credit_cap: whole_number(&self.credit_cap, "The credit cap")?,
            credit_period: match filled(&self.credit_period).as_deref() {
                None => None,
                Some("daily") => Some(CreditPeriod::Daily),
                Some("monthly") => Some(CreditPeriod::Monthly),
                Some(_) => return Err("The period is daily or monthly".to_owned()),
            },
            low_credits_threshold: whole_number(&self.low_credits_threshold, "The threshold")?,
        })
    }
}

fn organization_link(id: &str) -> String {
    format!(
        "/dashboard/organizations?{}",
        serde_html_form::to_string([("id", id)]).unwrap_or_default()
    )
}

pub(crate) async fn save(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<OrganizationForm>,
) -> Result<Response, PageError> {
    let id = form.id.trim().to_owned();
    let request = match form.request() {
        Ok(request) => request,
        Err(message) => return page(&dashboard, signed, Some(id), Notice::error(message)).await,
    };
    let saved = dashboard
        .api
        .call::<Organization>(
            signed.key(),
            Method::PUT,
            &path(&["organizations", &id], None::<&()>),
            Some(&request),
        )
        .await;
    match saved {
        Ok(_) => Ok(back_to(&organization_link(&id))),
        Err(failure) => {
            let failure = refusal(failure)?;
            page(&dashboard, signed, Some(id), Notice::error(failure.message)).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    id: String,
}

pub(crate) async fn delete(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<DeleteForm>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(
            signed.key(),
            &path(&["organizations", form.id.trim()], None::<&()>),
        )
        .await?;
    Ok(back_to(&organization_link(form.id.trim())))
}
