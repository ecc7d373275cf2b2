-- Webhook deliveries are queued from the event log, after the events' own transactions
-- (issue 22): the log is the outbox. `last_seq` is the last event whose deliveries are
-- queued; events after it are kept until they are. Events recorded before this migration
-- had theirs queued in their own transaction.
CREATE TABLE webhook_fanout (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO webhook_fanout (singleton, last_seq) SELECT 1, seq FROM event_sequence WHERE singleton = 1;
