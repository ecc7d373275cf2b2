-- Set once `keyward import` has brought in a secret that is not in Keyward's format; from
-- then on verification looks such secrets up by hash instead of refusing them unread.
ALTER TABLE installation ADD COLUMN foreign_secrets INTEGER NOT NULL DEFAULT 0;
