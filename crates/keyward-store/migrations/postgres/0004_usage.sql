-- Usage control (issue 5): rate-limit schemes, organisations, credits, demo sandboxes.
-- Live counters belong to the usage engine (in process, or Redis); the columns here are
-- what it last wrote back, from which it starts again.

CREATE TABLE rate_limit_schemes (
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    slug TEXT NOT NULL,
    -- JSON: [{"limit": 10, "period_ms": 1000}, …]
    windows TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, environment, slug)
);

CREATE TABLE organizations (
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    id TEXT NOT NULL,
    rate_limit_scheme TEXT,
    credit_cap BIGINT,
    credit_period TEXT,
    credits_spent BIGINT NOT NULL DEFAULT 0,
    spent_period_start BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, environment, id)
);

ALTER TABLE apps ADD COLUMN rate_limit_scheme TEXT;
ALTER TABLE api_keys ADD COLUMN rate_limit_scheme TEXT;
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_period TEXT;
ALTER TABLE api_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at BIGINT;
ALTER TABLE root_keys ADD COLUMN rate_limit_scheme TEXT;
ALTER TABLE root_keys ADD COLUMN expires_at BIGINT;

-- One row per demo sandbox: a workspace of its own, purged whole when it ends.
CREATE TABLE demo_sessions (
    workspace_id TEXT PRIMARY KEY,
    root_key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX demo_sessions_by_expiry ON demo_sessions (expires_at);
