#!/usr/bin/env bash
# The project's test command (README): every crate's unit, property and integration tests, then the outside
# contract smoke test against the built binary when ../shared is present.
#
# PostgreSQL: set TENANTRY_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run the
# store conformance suite and the HTTP story against PostgreSQL as well as SQLite. .ci/run sets it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace

smoke=../shared/checks/contract_smoke.py
if [ -f "$smoke" ]; then
    cargo build --quiet --bin tenantry
    python3 "$smoke" target/debug/tenantry
fi
