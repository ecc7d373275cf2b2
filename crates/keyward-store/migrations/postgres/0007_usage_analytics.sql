-- Usage analytics (issue 8): verification outcomes counted per minute, hour and day.
-- Counts are added by upsert; '' stands for "none" in the key, app and organization columns
-- so that they can be part of the primary key.
CREATE TABLE usage_counts (
    workspace_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    granularity TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, environment, granularity, key_id, app_id, organization_id, outcome, bucket)
);
-- Each query reads its rows in (bucket, outcome) order from one of these, and never the table
-- itself: a month of minutes for one key is 43,200 rows.
CREATE INDEX usage_by_key ON usage_counts (workspace_id, environment, granularity, key_id, bucket, outcome, count);
CREATE INDEX usage_by_app ON usage_counts (workspace_id, environment, granularity, app_id, bucket, outcome, count);
CREATE INDEX usage_by_organization ON usage_counts (workspace_id, environment, granularity, organization_id, bucket, outcome, count);
CREATE INDEX usage_by_time ON usage_counts (granularity, bucket);
