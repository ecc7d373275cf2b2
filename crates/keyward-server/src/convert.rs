//! Records to wire types, and wire timestamps to core ones.

use keyward_core::model::{
    ApiKey, App, AuditEntry, EnvironmentSettings, Organization, RateLimitScheme, RootKey,
};
use keyward_core::usage::{Credits, Period, RateWindow};
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
        rate_limit_scheme: app.rate_limit_scheme.clone(),
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
        credits: key.credits.map(|credits| credits_at(credits, now)),
        rate_limit_scheme: key.rate_limit_scheme.clone(),
        low_credits_threshold: key.low_credits_threshold,
    }
}

/// A balance as it stands at `now`, with any refill due applied.
pub(crate) fn credits_at(credits: Credits, now: Timestamp) -> wire::Credits {
    let credits = credits.at(now);
    wire::Credits {
        remaining: credits.remaining,
        refill: credits.refill.map(|refill| wire::Refill {
            interval: credit_period(refill.period),
            amount: refill.amount,
        }),
    }
}

pub(crate) fn credit_period(period: Period) -> wire::CreditPeriod {
    match period {
        Period::Daily => wire::CreditPeriod::Daily,
        Period::Monthly => wire::CreditPeriod::Monthly,
    }
}

pub(crate) fn period(period: wire::CreditPeriod) -> Period {
    match period {
        wire::CreditPeriod::Daily => Period::Daily,
        wire::CreditPeriod::Monthly => Period::Monthly,
    }
}

pub(crate) fn rate_windows(windows: &[RateWindow]) -> Vec<wire::RateWindow> {
    windows
        .iter()
        .map(|window| wire::RateWindow {
            limit: window.limit,
            period_seconds: u64::try_from(window.period_ms / 1000).unwrap_or(0),
        })
        .collect()
}

pub(crate) fn rate_limit_scheme(scheme: &RateLimitScheme) -> wire::RateLimitScheme {
    wire::RateLimitScheme {
        id: scheme.slug.clone(),
        slug: scheme.slug.clone(),
        environment: scheme.tenancy.environment.as_str().to_owned(),
        windows: rate_windows(&scheme.windows),
        created_at: datetime(scheme.created_at),
        updated_at: datetime(scheme.updated_at),
    }
}

pub(crate) fn organization(organization: &Organization, now: Timestamp) -> wire::Organization {
    wire::Organization {
        id: organization.id.clone(),
        environment: organization.tenancy.environment.as_str().to_owned(),
        rate_limit_scheme: organization.rate_limit_scheme.clone(),
        credit_cap: organization.credit_cap,
        credit_period: organization.credit_period.map(credit_period),
        credits_spent: organization
            .cap_usage()
            .map_or(organization.credits_spent, |cap| cap.at(now).spent),
        low_credits_threshold: organization.low_credits_threshold,
        created_at: datetime(organization.created_at),
        updated_at: datetime(organization.updated_at),
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
        rate_limit_scheme: key.rate_limit_scheme.clone(),
        expires_at: key.expires_at.map(datetime),
    }
}

pub(crate) fn environment(settings: &EnvironmentSettings) -> wire::EnvironmentSettings {
    wire::EnvironmentSettings {
        workspace_id: settings.workspace_id.clone(),
        environment: settings.environment.as_str().to_owned(),
        enhanced_security: settings.enhanced_security,
        leaked_key_action: settings.leaked_key_action.as_str().to_owned(),
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

pub(crate) fn public_key(key: &keyward_core::model::PublicKey) -> wire::PublicKey {
    use keyward_core::model::{JwtKeySource, PublicKeyKind};
    let jwt = match &key.kind {
        PublicKeyKind::Jwt(jwt) => Some(jwt),
        PublicKeyKind::Client => None,
    };
    wire::PublicKey {
        id: key.id.clone(),
        key_type: if jwt.is_some() { "jwt" } else { "client" }.to_owned(),
        name: key.name.clone(),
        environment: key.tenancy.environment.as_str().to_owned(),
        key: key.key.clone(),
        jwks_url: jwt.and_then(|jwt| match &jwt.source {
            JwtKeySource::JwksUrl(url) => Some(url.clone()),
            JwtKeySource::Inline(_) => None,
        }),
        public_key: jwt.and_then(|jwt| match &jwt.source {
            JwtKeySource::Inline(text) => Some(text.clone()),
            JwtKeySource::JwksUrl(_) => None,
        }),
        issuer: jwt.and_then(|jwt| jwt.issuer.clone()),
        audience: jwt.and_then(|jwt| jwt.audience.clone()),
        algorithms: jwt.map(|jwt| {
            jwt.algorithms
                .iter()
                .map(|alg| alg.as_str().to_owned())
                .collect()
        }),
        subject_claim: jwt.map(|jwt| jwt.subject_claim.clone()),
        self_service_app: key.self_service_app.clone(),
        max_keys_per_user: key.max_keys_per_user,
        rate_limit_scheme: key.rate_limit_scheme.clone(),
        created_at: datetime(key.created_at),
        updated_at: datetime(key.updated_at),
    }
}

pub(crate) fn signing_key(key: &keyward_core::model::SigningKey) -> wire::SigningKey {
    wire::SigningKey {
        id: key.id.clone(),
        name: key.name.clone(),
        environment: key.tenancy.environment.as_str().to_owned(),
        algorithm: "ES256".to_owned(),
        public_key_pem: key.public_key_pem.clone(),
        created_at: datetime(key.created_at),
    }
}

pub(crate) fn workspace_key(key: &keyward_core::model::WorkspaceKey) -> wire::WorkspaceKey {
    wire::WorkspaceKey {
        id: key.id.clone(),
        name: key.name.clone(),
        environment: key.tenancy.environment.as_str().to_owned(),
        scopes: key.scopes.to_names(),
        rate_limit_scheme: key.rate_limit_scheme.clone(),
        start: key.start.clone(),
        created_at: datetime(key.created_at),
        updated_at: datetime(key.updated_at),
    }
}

/// RFC 3339, as in every answer, for values inside free-form JSON (alert details).
pub(crate) fn rfc3339(timestamp: Timestamp) -> String {
    datetime(timestamp)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn event(event: &keyward_core::event::Event) -> wire::Event {
    wire::Event {
        id: event.id(),
        event_type: event.kind.as_str().to_owned(),
        created_at: datetime(event.created_at),
        environment: event.tenancy.environment.as_str().to_owned(),
        key: event.key.as_ref().map(|key| wire::EventKey {
            id: key.id.clone(),
            app: key.app.clone(),
            name: key.name.clone(),
            owner_user_id: key.owner_user_id.clone(),
            organization_id: key.organization_id.clone(),
            permissions: key.permissions.clone(),
            meta: key.meta.clone(),
            start: key.start.clone(),
            enabled: key.enabled,
            revoked: key.revoked,
            expires_at: key.expires_at.map(datetime),
            created_at: datetime(key.created_at),
        }),
        details: event.details.clone(),
    }
}

pub(crate) fn webhook_endpoint(
    endpoint: &keyward_core::webhook::WebhookEndpoint,
) -> wire::WebhookEndpoint {
    wire::WebhookEndpoint {
        id: endpoint.id.clone(),
        url: endpoint.url.clone(),
        events: endpoint.events.names(),
        description: endpoint.description.clone(),
        enabled: endpoint.enabled,
        disabled_reason: endpoint.disabled_reason.clone(),
        environment: endpoint.tenancy.environment.as_str().to_owned(),
        created_at: datetime(endpoint.created_at),
        updated_at: datetime(endpoint.updated_at),
    }
}

pub(crate) fn webhook_delivery(
    delivery: &keyward_core::webhook::WebhookDelivery,
) -> wire::WebhookDelivery {
    wire::WebhookDelivery {
        id: delivery.id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        status: delivery.state.as_str().to_owned(),
        attempts: delivery.attempts,
        next_attempt_at: delivery.next_attempt_at.map(datetime),
        created_at: datetime(delivery.created_at),
        updated_at: datetime(delivery.updated_at),
        history: delivery
            .history
            .iter()
            .map(|attempt| wire::WebhookAttempt {
                attempted_at: datetime(attempt.attempted_at),
                status: attempt.status,
                latency_ms: attempt.latency_ms,
                error: attempt.error.clone(),
                response_excerpt: attempt.response_excerpt.clone(),
            })
            .collect(),
    }
}
