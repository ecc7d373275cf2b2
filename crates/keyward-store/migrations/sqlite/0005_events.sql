-- Events and alerts about keys (issue 7), streamed over WebSocket and kept for resuming.

-- One row: the last event number handed out. Taking the next number locks this row until
-- the change commits, so numbers follow commit order and a reader that has seen number N
-- has seen every event below it.
CREATE TABLE event_sequence (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    seq BIGINT NOT NULL
);
INSERT INTO event_sequence (singleton, seq) VALUES (1, 0);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    type TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- The key's owner, so an end user's resume reads only their own events.
    owner_user_id TEXT,
    -- JSON: {"key": <snapshot of the key's metadata>, "details": {…}}; never a secret
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Raised by several nodes, recorded once (e.g. 'key.expired:<key id>:<expiry>').
    dedup_key TEXT UNIQUE
);
CREATE INDEX events_by_time ON events (created_at);

-- Finds keys about to expire, and keys that just did, without scanning them all.
CREATE INDEX api_keys_by_expiry ON api_keys (expires_at);

-- The credits.low alert's threshold: a key's own, or its organisation's for its keys.
ALTER TABLE api_keys ADD COLUMN low_credits_threshold BIGINT;
ALTER TABLE organizations ADD COLUMN low_credits_threshold BIGINT;

-- Resuming a stream reads one environment's events after a number.
CREATE INDEX events_by_environment ON events (workspace_id, environment, seq);
CREATE INDEX events_by_owner ON events (workspace_id, environment, owner_user_id, seq);
