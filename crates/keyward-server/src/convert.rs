//! Records to wire types, and wire timestamps to core ones.

use keyward_core::model::{ApiKey, App, AuditEntry, EnvironmentSettings, RootKey};
use keyward_core::Timestamp;
use keyward_proto as wire;
use time::OffsetDateTime;

pub(crate) fn datetime(timestamp: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp.as_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn timestamp(datetime: OffsetDateTime) -> Timestamp {
    let millis = datetime.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

pub(crate) fn app(app: &App) -> wire::App {
    wire::App {
        id: app.id.clone(),
        name: app.name.clone(),
        slug: app.slug.clone(),
        environment: app.tenancy.environment.as_str().to_owned(),
        permissions: app.permissions.clone(),
        organization_id: app.organization_id.clone(),
        key_prefix: app.key_prefix.clone(),
        created_at: datetime(app.created_at),
        updated_at: datetime(app.updated_at),
    }
}

pub(crate) fn key(key: &ApiKey, now: Timestamp) -> wire::ApiKey {
    wire::ApiKey {
        id: key.id.clone(),
        app: key.app_slug.clone(),
        environment: key.tenancy.environment.as_str().to_owned(),
        name: key.name.clone(),
        owner_user_id: key.owner_user_id.clone(),
        organization_id: key.organization_id.clone(),
        permissions: key.permissions.clone(),
        meta: key.meta.clone(),
        start: key.start.clone(),
        status: key.status(now).as_str().to_owned(),
        enabled: key.enabled,
        expires_at: key.expires_at.map(datetime),
        revoked_at: key.revoked_at.map(datetime),
        last_used_at: key.last_used_at.map(datetime),
        created_at: datetime(key.created_at),
        updated_at: datetime(key.updated_at),
    }
}

pub(crate) fn root_key(key: &RootKey) -> wire::RootKey {
    wire::RootKey {
        id: key.id.clone(),
        name: key.name.clone(),
        environment: key.tenancy.environment.as_str().to_owned(),
        scopes: key.scopes.to_names(),
        start: key.start.clone(),
        created_at: datetime(key.created_at),
        revoked_at: key.revoked_at.map(datetime),
    }
}

pub(crate) fn environment(settings: &EnvironmentSettings) -> wire::EnvironmentSettings {
    wire::EnvironmentSettings {
        workspace_id: settings.workspace_id.clone(),
        environment: settings.environment.as_str().to_owned(),
        enhanced_security: settings.enhanced_security,
        updated_at: datetime(settings.updated_at),
    }
}

pub(crate) fn audit_entry(entry: &AuditEntry) -> wire::AuditEntry {
    wire::AuditEntry {
        id: entry.id.clone(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        request_id: entry.request_id.clone(),
        details: entry.details.clone(),
        created_at: datetime(entry.created_at),
    }
}

pub(crate) fn page<T, W>(page: keyward_store::Page<T>, convert: impl Fn(&T) -> W) -> wire::Page<W> {
    wire::Page {
        data: page.items.iter().map(convert).collect(),
        next_cursor: page.next_cursor,
    }
}
