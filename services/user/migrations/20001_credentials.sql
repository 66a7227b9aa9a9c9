-- Login credentials. Kept out of the event log on purpose: the log is published to
-- subscribers, a password hash must not be. The unique email index is what makes an
-- email belong to one account.
CREATE TABLE IF NOT EXISTS credentials
(
    user_id       text        PRIMARY KEY,
    email         text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
