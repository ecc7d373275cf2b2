-- Webhooks (SPEC §4.8) and leaked keys (SPEC §4.9), issue 22.

-- What a key reported as leaked comes to: 'revoke', 'disable' or 'notify'.
ALTER TABLE environments ADD COLUMN leaked_key_action TEXT NOT NULL DEFAULT 'revoke';

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON list as the user gave it, e.g. ["key.revoked"] or ["*"]
    events TEXT NOT NULL,
    -- What queueing matches: '*', or ',key.created,key.revoked,'
    event_match TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    -- Signing secrets, sealed under the master key; the previous one signs until it expires.
    sealed_secret BYTEA NOT NULL,
    previous_sealed_secret BYTEA,
    previous_expires_at BIGINT,
    -- Every attempt since then failed; NULL after a success.
    failing_since BIGINT,
    -- Failing: its deliveries wait until then (its latest failure's retry); NULL after a success.
    paused_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints (workspace_id, environment);

-- The outbox: one row per event and endpoint, written in the event's transaction.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The event it delivers, whose payload it sends (kept while the delivery is pending);
    -- NULL for a test event.
    event_seq BIGINT,
    type TEXT NOT NULL,
    -- A test event's payload (never a secret); NULL for an event's delivery.
    payload TEXT,
    -- 'pending', 'succeeded' or 'failed'
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- Bumped by every claim, so only the latest claimant settles the delivery.
    claims BIGINT NOT NULL,
    -- While pending: when it is due. A claim moves it past the attempt's timeout, so a
    -- delivery whose node died is due again then.
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at BIGINT NOT NULL,
    status INTEGER,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempted_at);
