#!/usr/bin/env python3
"""The OpenAPI document validated, then the whole API tested against it with schemathesis.

Starts the built `tenantry` binary on a free port (embedded store, offline model), checks that
`tenantry openapi` and the served `/openapi.json` are the same valid OpenAPI 3.1 document, then runs
schemathesis over every operation: once without a credential, once with a tenant's key (operations that end
the tenant or its key run last, with a tenant of their own), once with the operator token. Every check is on
(no 5xx, every status and body as documented, every schema-valid request accepted and every invalid one
refused), but for the few exceptions tests/schema/schemathesis.toml lists with their reasons. Usage:

    target/schema-venv/bin/python tests/schema/api_schema.py target/debug/tenantry [SECONDS_PER_PASS]

SECONDS_PER_PASS (default 45, or env TENANTRY_SCHEMA_SECONDS) bounds each of the four passes; CI uses the
default, a longer local run passes e.g. 600.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from openapi_spec_validator import validate

OPERATOR_TOKEN = "schema-test-operator-token"
# Operations after which the calling tenant or key no longer works: tested last, by a tenant of their own.
ENDING = r"^/v1/(tenant|tenant/cancel|keys|keys/\{id\})$"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def tenant(base, name):
    signup = call(base, "POST", "/v1/signup", {"email": f"{name}@example.com", "organization": name, "plan": "trial"})
    key = signup["api_key"]
    call(base, "POST", "/v1/documents", {"title": "Policy", "text": "Refunds are issued within 14 days."}, key)
    return key


def schemathesis(base, name, seconds, report_dir, header=None, include=None, exclude=None, method=None):
    command = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"),
        "--config-file", os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml"),
        "run", base + "/openapi.json",
        "--max-time", str(seconds), "--workers", "2", "--seed", "20261205",
        "--request-timeout", "30", "--suppress-health-check", "all",
        "--report", "junit", "--report-junit-path", os.path.join(report_dir, name + ".xml"),
    ]
    if header:
        command += ["-H", header]
    if include:
        command += ["--include-path-regex", include]
    if exclude:
        command += ["--exclude-path-regex", exclude]
    if method:
        command += ["--include-method", method]
    print(f"--- schemathesis: {name} ({seconds} s)", flush=True)
    # Run beside the reports, so that schemathesis' own cache stays out of the working tree.
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    return subprocess.run(command, cwd=report_dir, env=env).returncode


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    seconds = int(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("TENANTRY_SCHEMA_SECONDS", "45"))

    printed = json.loads(subprocess.run([binary, "openapi"], check=True, capture_output=True).stdout)
    validate(printed)
    print("openapi: `tenantry openapi` is valid OpenAPI", printed["openapi"], flush=True)

    tmp = tempfile.mkdtemp(prefix="tenantry-schema-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "server.log"), "w")
    env = dict(os.environ, TENANTRY_OPERATOR_TOKEN=OPERATOR_TOKEN, RUST_LOG="warn")
    proc = subprocess.Popen([binary, "serve", "--data-dir", os.path.join(tmp, "data"), "--bind", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    failed = []
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        else:
            raise RuntimeError("tenantry did not start; see " + log.name)
        served = call(base, "GET", "/openapi.json")
        if served != printed:
            raise AssertionError("/openapi.json differs from `tenantry openapi`")

        report_dir = os.path.join(tmp, "reports")
        os.makedirs(report_dir)
        passes = [
            ("anonymous", dict()),
            ("tenant", dict(header="Authorization: Bearer " + tenant(base, "schema-tenant"), include=r"^/v1/",
                            exclude=ENDING)),
            ("operator", dict(header="Authorization: Bearer " + OPERATOR_TOKEN, include=r"^/admin/")),
            ("tenant-ending", dict(header="Authorization: Bearer " + tenant(base, "schema-ending"), include=ENDING)),
        ]
        for name, options in passes:
            if schemathesis(base, name, seconds, report_dir, **options) != 0:
                failed.append(name)
        if proc.poll() is not None:
            failed.append("server exited")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    if failed:
        sys.exit(f"schemathesis failed: {', '.join(failed)} (server log and reports under {tmp})")
    print("schemathesis: every pass clean")


if __name__ == "__main__":
    main()
