-- Keyward's schema on PostgreSQL: the SQLite schema with native booleans and bytes, and
-- ids in the "C" collation so that they sort byte-wise (ids encode their creation time and
-- cursor pagination relies on that order). Timestamps are Unix milliseconds.

-- One row ever: whichever node inserts it first bootstraps the installation.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    workspace_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    environment TEXT NOT NULL,
    enhanced_security BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, environment)
);

CREATE TABLE root_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    start TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX root_keys_by_environment ON root_keys (workspace_id, environment, id);

CREATE TABLE apps (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    permissions TEXT NOT NULL,
    organization_id TEXT,
    key_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
-- A deleted app frees its slug.
CREATE UNIQUE INDEX apps_by_slug ON apps (workspace_id, environment, slug) WHERE deleted_at IS NULL;
CREATE INDEX apps_by_environment ON apps (workspace_id, environment, id);

CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    app_id TEXT NOT NULL REFERENCES apps (id),
    name TEXT NOT NULL,
    owner_user_id TEXT,
    organization_id TEXT,
    permissions TEXT NOT NULL,
    meta TEXT NOT NULL,
    start TEXT NOT NULL,
    expires_at BIGINT,
    enabled BOOLEAN NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_by_app ON api_keys (app_id, id);
CREATE INDEX api_keys_by_owner ON api_keys (app_id, owner_user_id, id);
CREATE INDEX api_keys_by_organization ON api_keys (app_id, organization_id, id);

-- The SHA-256 of every live secret, of root keys and API keys alike. A rotated credential
-- keeps its previous secret here until `expires_at`.
CREATE TABLE secrets (
    hash BYTEA PRIMARY KEY,
    credential_id TEXT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX secrets_by_credential ON secrets (credential_id);

CREATE TABLE audit_log (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT,
    details TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_by_environment ON audit_log (workspace_id, environment, id);
