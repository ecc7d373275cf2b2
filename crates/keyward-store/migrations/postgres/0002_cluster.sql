-- Cluster-wide cache invalidation (ARCHITECTURE.md, "Cache coherence across nodes").
--
-- Every change that a verification cache must forget is numbered by `invalidation_seq`,
-- recorded in `cache_invalidations` and announced with NOTIFY, all in the transaction of
-- the change. Incrementing one row serialises those transactions, so their numbers commit in
-- order and a node that has applied number N has applied every number below it.

CREATE TABLE cluster_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    invalidation_seq BIGINT NOT NULL
);
INSERT INTO cluster_state (singleton, invalidation_seq) VALUES (1, 0);

-- `hashes` holds the SHA-256 of every affected secret, concatenated; NULL means "everything".
-- Rows are kept for a retention window so that a reconnecting node can catch up.
CREATE TABLE cache_invalidations (
    seq BIGINT PRIMARY KEY,
    hashes BYTEA,
    created_at BIGINT NOT NULL
);

-- The nodes that may hold a trusted cache. `heartbeat_ms` is the database clock (rounded
-- down) when the node's latest heartbeat began; the node trusts its cache for at most
-- `lease_ms` after that. The database clock must slew, never step.
CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    lease_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    applied_seq BIGINT NOT NULL
);

-- Numbers, records and announces one invalidation, then names the nodes whose caches must
-- hear of it: every node but the caller whose lease has not yet run out, with the
-- milliseconds left of its lease. Each statement of a PL/pgSQL function sees the rows
-- committed before it starts, so the member list includes every heartbeat that read the
-- previous number (a heartbeat holds a share lock on `cluster_state`, which the UPDATE waits
-- for).
CREATE FUNCTION keyward_publish_invalidation(
    affected BYTEA,
    created BIGINT,
    payload_tail TEXT,
    caller TEXT
) RETURNS TABLE (seq BIGINT, member TEXT, remaining_ms BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_seq BIGINT;
    now_ms BIGINT;
BEGIN
    -- The member list below must see heartbeats committed after this transaction began,
    -- which only READ COMMITTED guarantees.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'keyward needs READ COMMITTED transactions, not %',
            current_setting('transaction_isolation');
    END IF;
    UPDATE cluster_state SET invalidation_seq = invalidation_seq + 1
        WHERE singleton = 1 RETURNING invalidation_seq INTO next_seq;
    INSERT INTO cache_invalidations (seq, hashes, created_at)
        VALUES (next_seq, affected, created);
    PERFORM pg_notify('keyward_invalidation', next_seq::TEXT || payload_tail);
    -- Rounded down, so that the time left is never understated; nodes are kept with the
    -- same margin for rounding and clock-rate drift that the caller adds to its wait.
    now_ms := floor(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
    RETURN QUERY
        SELECT next_seq, NULL::TEXT, NULL::BIGINT
        UNION ALL
        SELECT next_seq, n.node_id, n.heartbeat_ms + n.lease_ms - now_ms
        FROM cluster_nodes n
        WHERE n.node_id <> caller
          AND n.heartbeat_ms + n.lease_ms + n.lease_ms / 100 + 5 > now_ms;
END
$$;
