-- Customer portal sessions (SPEC §4.10, issue 23). The link's one-time code is kept only
-- as its SHA-256; redeeming it sets `redeemed_at` in one statement, so it works once
-- across every node.
CREATE TABLE portal_sessions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    app_id TEXT NOT NULL,
    owner_user_id TEXT NOT NULL,
    organization_id TEXT,
    -- JSON list: the permissions new keys may have
    permissions TEXT NOT NULL,
    max_keys BIGINT NOT NULL,
    return_url TEXT,
    created_by TEXT NOT NULL,
    -- JSON list: what the portal may do (of keys:write, usage:read)
    scopes TEXT NOT NULL,
    -- The maker's limit on calls to Keyward's API, which the customer's calls charge.
    limit_scheme TEXT,
    limit_meter TEXT NOT NULL,
    code_hash TEXT NOT NULL UNIQUE,
    code_expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    -- Signed out, or its creator revoked: the session is over.
    ended_at BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX portal_sessions_by_environment ON portal_sessions (workspace_id, environment);
