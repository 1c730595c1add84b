#!/usr/bin/env bash
# The project's test command (README): the docs' staleness check, every crate's unit, property and
# integration tests, the official OpenAI Python SDK, OpenAI's Agents SDK, the official Node SDK and four client
# libraries (LangChain, llama-index, instructor, pydantic-ai) against the built binary, the web pages in
# headless chromium, the OpenAPI document validated and property-tested with schemathesis, the monitoring
# rules and dashboard in ops/, then the outside contract smoke test when ../shared is present.
#
# PostgreSQL: set TENANTRY_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run the
# store conformance suite and the HTTP story against PostgreSQL as well as SQLite. .ci/run sets it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every service the tests start embeds with the built-in embedder: none fetches the semantic model a fresh
# `serve` installs (crates/tenantry/src/model_install.rs, tested against a local copy of the package).
export TENANTRY_INSTALL_MODEL=off

cargo fmt --all -- --check
# The maps (ARCHITECTURE, OPERATIONS, BENCHMARKS, README) name only files that exist.
python3 scripts/check_docs.py
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace

cargo build --quiet --bin tenantry

# A virtualenv under target/ for one Python test suite, (re)made from PyPI when its requirements change.
venv_for() {
    local venv=$1 requirements=$2
    if ! cmp -s "$requirements" "$venv/requirements.txt"; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/requirements.txt"
    fi
}

# The official OpenAI Python SDK and the Agents SDK against the OpenAI-compatible routes.
venv_for target/sdk-venv tests/sdk/requirements.txt
target/sdk-venv/bin/python tests/sdk/openai_sdk.py target/debug/tenantry

# The official Node SDK (npm, pinned by package-lock.json; the machine's Node.js).
(cd tests/sdk/node && npm ci --no-audit --no-fund --silent)
TENANTRY_BIN=target/debug/tenantry node --test tests/sdk/node/test.mjs

# LangChain, llama-index, instructor and pydantic-ai against a tenant with a hosted model.
venv_for target/frameworks-venv tests/sdk/frameworks-requirements.txt
target/frameworks-venv/bin/python tests/sdk/frameworks.py target/debug/tenantry

# The portal and the console in a real browser: Selenium driving Debian's chromium through
# /usr/bin/chromedriver (`apt-get install chromium chromium-driver`; .ci/run installs them).
venv_for target/browser-venv tests/browser/requirements.txt
(cd tests/browser && npm ci --no-audit --no-fund --silent)  # axe-core, for the accessibility check
target/browser-venv/bin/python tests/browser/dashboards.py target/debug/tenantry

# The OpenAPI document validated as OpenAPI 3.1, then every operation property-tested against it by
# schemathesis: 45 s per pass here (four passes); TENANTRY_SCHEMA_SECONDS=600 for a longer local run.
venv_for target/schema-venv tests/schema/requirements.txt
target/schema-venv/bin/python tests/schema/api_schema.py target/debug/tenantry

# The alerting rules (promtool's unit tests), the dashboard's queries, and every metric they name exposed by a
# running service (promtool from Debian's prometheus package; .ci/run installs it).
python3 ops/check.py target/debug/tenantry

smoke=../shared/checks/contract_smoke.py
if [ -f "$smoke" ]; then
    python3 "$smoke" target/debug/tenantry
fi
