-- Browser-safe and backend credentials (issue 6): public keys, signing keys, workspace keys,
-- and the signatures already seen (replay protection when nodes share this database).

-- JWT public keys (pkj_…) and client public keys (pk_…). The value (`key`) is not secret;
-- it is also in `secrets` by its SHA-256, like every credential, so that look-ups, rotation
-- grace periods and cluster-wide invalidation work the same for all of them.
CREATE TABLE public_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    jwks_url TEXT,
    inline_key TEXT,
    issuer TEXT,
    audience TEXT,
    -- JSON array of algorithm names
    algorithms TEXT,
    subject_claim TEXT,
    self_service_app TEXT,
    max_keys_per_user BIGINT NOT NULL,
    rate_limit_scheme TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX public_keys_by_environment ON public_keys (workspace_id, environment, id);

-- Only the public half of each ES256 key pair.
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key_pem TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX signing_keys_by_environment ON signing_keys (workspace_id, environment, id);

-- Secrets are sealed with AES-256-GCM under the server's master key: nonce, then
-- ciphertext and tag. A rotated key keeps its previous secret until previous_expires_at.
CREATE TABLE workspace_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    start TEXT NOT NULL,
    sealed_secret BYTEA NOT NULL,
    previous_sealed_secret BYTEA,
    previous_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workspace_keys_by_environment ON workspace_keys (workspace_id, environment, id);

-- SHA-256 of each accepted HMAC signature, kept until its timestamp leaves the window.
CREATE TABLE seen_signatures (
    hash BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX seen_signatures_by_expiry ON seen_signatures (expires_at);
