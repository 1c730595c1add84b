-- Sign-in for the portal and the console (docs/SECURITY.md "Sign-in"). A tenant admin's password is kept only
-- as an Argon2id hash. A session is known by the HMAC (under the key pepper) of its cookie's value, never the
-- value; so is a one-time sign-in link. A session signed in with an API key (`key_id`) ends when the key is revoked.
CREATE TABLE tenant_passwords (
    tenant_id      TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- `kind`: `tenant` (with `tenant_id`) or `operator` (with `operator`: the account's email, or `token`);
-- `method`: how it was opened (`password`, `link`, `api_key`, `operator_token`).
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    method      TEXT NOT NULL,
    tenant_id   TEXT,
    key_id      TEXT,
    operator    TEXT,
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX sessions_tenant ON sessions (tenant_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE sign_in_links (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX sign_in_links_tenant ON sign_in_links (tenant_id);
