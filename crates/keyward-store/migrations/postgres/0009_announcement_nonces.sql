-- Issue 19, item 4: the change counter can go back (a failover to an asynchronous replica
-- that lost its last commits, a point-in-time restore while nodes keep running). Numbers
-- alone then repeat: a node that applied 100 would drop the new 99 and 100 as already seen.
-- Every announcement now carries a random nonce, in the table and after `;` in the NOTIFY
-- payload, so that a node can tell the history it applied from a new one
-- (ARCHITECTURE.md, "When the counter goes back").

ALTER TABLE cache_invalidations ADD COLUMN nonce BIGINT;

CREATE OR REPLACE FUNCTION keyward_publish_invalidation(
    affected BYTEA,
    created BIGINT,
    payload_tail TEXT,
    caller TEXT
) RETURNS TABLE (seq BIGINT, member TEXT, remaining_ms BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_seq BIGINT;
    next_nonce BIGINT;
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
    -- Not a secret: it only has to differ between two histories' announcements of a number.
    next_nonce := floor(random() * 9007199254740991)::BIGINT;
    INSERT INTO cache_invalidations (seq, hashes, created_at, nonce)
        VALUES (next_seq, affected, created, next_nonce);
    -- Nodes of the previous version read `;…` as an unreadable list and catch up from the
    -- table instead: slower, still correct.
    PERFORM pg_notify('keyward_invalidation',
        next_seq::TEXT || payload_tail || ';' || next_nonce::TEXT);
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
