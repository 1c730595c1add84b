"""Schemathesis hooks for tests/schema/api_schema.py (loaded by hooks.py).

An `Idempotency-Key` is state: the same key sent with another body is 422 `idempotency_key_reused`, by
design (API.md "Integrations"). Generated data reuses short keys ("0", "a") across operations and bodies, so
each well-formed generated key is made unique per call; malformed ones are kept, so their 400 is still
checked. The replay itself is tested in crates/tenantry-web/tests/api/idempotency.rs.
"""

import uuid

import schemathesis

HEADER = "Idempotency-Key"


@schemathesis.hook
def before_call(context, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != HEADER.lower():
            continue
        value = headers[name]
        well_formed = isinstance(value, str) and 0 < len(value) <= 255 and all(" " <= c <= "~" for c in value)
        if well_formed:
            headers[name] = "schema-" + uuid.uuid4().hex
