#!/usr/bin/env bash
# The project's test command (README): every crate's unit, property and integration tests, the official
# OpenAI Python SDK against the built binary, the web pages in headless chromium, then the outside contract
# smoke test when ../shared is present.
#
# PostgreSQL: set TENANTRY_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run the
# store conformance suite and the HTTP story against PostgreSQL as well as SQLite. .ci/run sets it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace

cargo build --quiet --bin tenantry

# The official OpenAI Python SDK against /v1/chat/completions, from a virtualenv under target/ that is
# (re)made from PyPI when tests/sdk/requirements.txt changes.
venv=target/sdk-venv
if ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
    cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
"$venv/bin/python" tests/sdk/openai_sdk.py target/debug/tenantry

# The portal and the console in a real browser: Selenium (from PyPI, into target/browser-venv, remade when
# tests/browser/requirements.txt changes) driving Debian's chromium through /usr/bin/chromedriver
# (`apt-get install chromium chromium-driver`; .ci/run installs them).
venv=target/browser-venv
if ! cmp -s tests/browser/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
    cp tests/browser/requirements.txt "$venv/requirements.txt"
fi
"$venv/bin/python" tests/browser/dashboards.py target/debug/tenantry

smoke=../shared/checks/contract_smoke.py
if [ -f "$smoke" ]; then
    python3 "$smoke" target/debug/tenantry
fi
