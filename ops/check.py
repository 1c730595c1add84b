#!/usr/bin/env python3
"""Checks the monitoring files in ops/ against the real service (scripts/test.sh runs it):

1. `promtool check rules` and `promtool test rules` on ops/prometheus (each alert fires on the series that
   should raise it, and not on a healthy service);
2. every query of the Grafana dashboard parses as PromQL (`promtool check rules` on them as recording rules);
3. every metric the alerts and the dashboard name is exposed by `GET /metrics` of a running `tenantry serve`.

Usage: ops/check.py BINARY   (promtool from Debian's `prometheus` package; .ci/run installs it)
"""
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

OPS = Path(__file__).resolve().parent
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "tenantry.json"
METRIC = re.compile(r"\b(tenantry_[a-z_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool(*args, cwd=OPS):
    run = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"promtool {' '.join(args)} failed:\n{run.stdout}{run.stderr}")


def dashboard_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert queries, "the dashboard has no queries"
    # Grafana's own interval variable is not PromQL; check the queries with a fixed window in its place.
    return [q.replace("$__rate_interval", "5m") for q in queries]


def check_dashboard_parses(queries):
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "dashboard_rules.yml"
        lines = ["groups:", "  - name: dashboard", "    rules:"]
        for i, q in enumerate(queries):
            lines += [f"      - record: dashboard:panel_{i}", f"        expr: {json.dumps(q)}"]
        rules.write_text("\n".join(lines) + "\n")
        promtool("check", "rules", str(rules))


def exposed_metrics(binary):
    """The metric names a fresh service exposes after some traffic (a signup, a question, an error)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([binary, "serve", "--data-dir", str(Path(tmp) / "data"), "--bind", f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(base)
            signup = post(base + "/v1/signup", {"email": "ops@check.test", "organization": "Ops", "plan": "trial"})
            post(base + "/v1/query", {"question": "anything?"}, key=signup["api_key"])
            try:
                urllib.request.urlopen(base + "/v1/tenant")  # 401: an error with a problem code
            except urllib.error.HTTPError:
                pass
            text = urllib.request.urlopen(base + "/metrics").read().decode()
        finally:
            proc.kill()
            proc.wait()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")} | {
        re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(base):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz")
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("tenantry did not start")


def post(url, body, key=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    if key:
        req.add_header("authorization", f"Bearer {key}")
    return json.loads(urllib.request.urlopen(req).read())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    promtool("check", "rules", str(ALERTS))
    promtool("test", "rules", str(OPS / "prometheus" / "alerts_test.yml"))
    queries = dashboard_queries()
    check_dashboard_parses(queries)

    referenced = set(METRIC.findall(ALERTS.read_text())) | {m for q in queries for m in METRIC.findall(q)}
    exposed = exposed_metrics(sys.argv[1])
    missing = []
    for name in sorted(referenced):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        if name not in exposed and f"{base}_bucket" not in exposed:
            missing.append(name)
    if missing:
        sys.exit(f"alerts or dashboard name metrics /metrics does not expose: {', '.join(missing)}")
    print(f"ops: 12 alert rules tested, {len(queries)} dashboard queries parsed, {len(referenced)} metrics exposed")


if __name__ == "__main__":
    main()
