//! The environment's security settings and its audit log.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use keyward_core::leak::LeakedKeyAction;
use keyward_proto::{AuditEntry, EnvironmentSettings, Page, UpdateEnvironmentRequest};
use serde::{Deserialize, Serialize};

use crate::api::path;
use crate::error::PageError;
use crate::pages::back_to;
use crate::view::{filled, render, when, Layout, Section, Submitted};
use crate::{Dashboard, SignedIn};

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    settings: EnvironmentSettings,
}

/// The choices of `leaked_key_action` (SPEC §4.9): its value, its name and what it does.
const LEAKED_KEY_ACTIONS: [(&str, &str, &str); 3] = [
    (
        LeakedKeyAction::Revoke.as_str(),
        "Revoke it",
        "the key is refused everywhere at once, for good (the default).",
    ),
    (
        LeakedKeyAction::Disable.as_str(),
        "Disable it",
        "the key is turned off, so its owner can look before deleting it or turning it back on.",
    ),
    (
        LeakedKeyAction::Notify.as_str(),
        "Only notify",
        "the key keeps working; only the audit entry and the key.leaked event report it.",
    ),
];

impl SettingsPage {
    fn leaked_key_actions(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &LEAKED_KEY_ACTIONS
    }
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    let settings = dashboard
        .api
        .get(signed.key(), &path(&["environment"], None::<&()>))
        .await?;
    Ok(render(&SettingsPage {
        layout: Layout::new(&signed, Section::Settings, "Security"),
        settings,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct SettingsForm {
    /// A checkbox: present when checked.
    enhanced_security: Option<String>,
    /// `revoke`, `disable` or `notify`; absent keeps the setting.
    leaked_key_action: Option<String>,
}

pub(crate) async fn save(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<SettingsForm>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .call::<EnvironmentSettings>(
            signed.key(),
            Method::PATCH,
            &path(&["environment"], None::<&()>),
            Some(&UpdateEnvironmentRequest {
                enhanced_security: Some(form.enhanced_security.is_some()),
                leaked_key_action: form.leaked_key_action,
            }),
        )
        .await?;
    Ok(back_to("/dashboard/settings"))
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct AuditQuery {
    action: Option<String>,
    target: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditPage {
    layout: Layout,
    entries: Page<AuditEntry>,
    query: AuditQuery,
}

impl AuditPage {
    fn at(entry: &AuditEntry) -> String {
        when(&entry.created_at)
    }

    fn details(entry: &AuditEntry) -> String {
        if entry.details.is_null() {
            String::new()
        } else {
            entry.details.to_string()
        }
    }

    fn next_page(&self, cursor: &str) -> String {
        let next = AuditQuery {
            action: self.query.action.clone(),
            target: self.query.target.clone(),
            cursor: Some(cursor.to_owned()),
        };
        format!(
            "/dashboard/audit-log?{}",
            serde_html_form::to_string(&next).unwrap_or_default()
        )
    }
}

pub(crate) async fn audit_log(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let query = AuditQuery {
        action: filled(&query.action),
        target: filled(&query.target),
        cursor: filled(&query.cursor),
    };
    #[derive(Serialize)]
    struct ApiQuery<'a> {
        limit: u32,
        #[serde(flatten)]
        filters: &'a AuditQuery,
    }
    let entries = dashboard
        .api
        .get(
            signed.key(),
            &path(
                &["audit-log"],
                Some(&ApiQuery {
                    limit: 50,
                    filters: &query,
                }),
            ),
        )
        .await?;
    Ok(render(&AuditPage {
        layout: Layout::new(&signed, Section::AuditLog, "Audit log"),
        entries,
        query,
    }))
}
