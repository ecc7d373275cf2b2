-- Limits on calls to Keyward's own API follow the credential that made a key (issue 25): a
-- key made by a limited one keeps its scheme and charges its counters, named here (NULL:
-- its own). Workspace keys can be limited like root keys.
ALTER TABLE root_keys ADD COLUMN limit_meter TEXT;
ALTER TABLE workspace_keys ADD COLUMN rate_limit_scheme TEXT;
ALTER TABLE workspace_keys ADD COLUMN limit_meter TEXT;
