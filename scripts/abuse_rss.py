#!/usr/bin/env python3
"""Peak memory of the service under abuse, with another tenant's query latency beside it (BENCHMARKS.md,
"Hostile input").

Each scenario starts a fresh `tenantry serve` (embedded store, offline model, default limits; the plans'
rate and storage quotas raised so that only the limits under test stop the abuse), gives a
bystander tenant one document, measures its `POST /v1/query` latency unloaded, then again while the abuse
runs (three times, alternating), and reads the process's peak resident memory (`VmHWM`) at the end:

- bomb:   Flate-bomb PDFs (a 2.1 MB file expanding to 2 GiB) uploaded over and over, 4 at a time;
- large:  64 uploads of 64 MiB at once (16 pro tenants x 4, the per-tenant limit), each a text file that is
          refused for its length as soon as its text passes the plan's limit, over and over;
- slow:   1,000 connections that declare a 32 MiB upload and send one byte a second.

Usage: scripts/abuse_rss.py [--attacker-nice=N] [BINARY] [SECONDS] [SCENARIO...]
(default target/release/tenantry, 30 s, all). Prints one Markdown table row per scenario.

The attack runs on the same cores as the service. `--attacker-nice=19` runs the attack's threads at the
lowest priority, so that they take only the CPU the service and the bystander leave, as an attacker on
other machines would: what is left is the service's own cost of the attack.
"""
import http.client
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

OPERATOR = "abuse-bench-operator-token"
MIB = 1 << 20

# The built-in trial and pro plans with room for the benchmark's traffic: the bystander asks ~40 questions a
# second, far past a trial's 60 a minute, and the abusers are not to be stopped by rate or storage quotas but
# by the limits measured here (which stay at their defaults).
CONFIG = """
[[plans]]
name = "trial"
trial_days = 14
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 1000000
tokens = 1000000000
documents = 1000
storage_bytes = 1073741824
requests_per_minute = 1000000

[[plans]]
name = "pro"
price_cents = 49900
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 1000000
tokens = 1000000000
documents = 10000
storage_bytes = 10737418240
requests_per_minute = 1000000
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, binary, work):
        self.port = free_port()
        env = dict(os.environ, TENANTRY_OPERATOR_TOKEN=OPERATOR, RUST_LOG="warn")
        self.log = open(os.path.join(work, "log"), "w")
        config = os.path.join(work, "tenantry.toml")
        with open(config, "w") as f:
            f.write(CONFIG)
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", config, "--data-dir", os.path.join(work, "data"),
             "--bind", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log, env=env)
        for _ in range(100):
            try:
                self.call("GET", "/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the service did not start")

    def call(self, method, path, body=None, key=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Bearer " + key
        c.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, (json.loads(data) if data else None)

    def tenant(self, name, plan="trial"):
        status, signup = self.call("POST", "/v1/signup", {"email": f"{name}@abuse.test", "organization": name,
                                                          "plan": plan})
        assert status == 201, signup
        if signup["state"] == "pending_payment":
            _, view = self.call("GET", f"/admin/tenants/{signup['tenant_id']}", key=OPERATOR)
            invoice = view["invoices"][0]["invoice_id"]
            status, _ = self.call("POST", f"/admin/invoices/{invoice}/payment", {"outcome": "succeeded"}, OPERATOR)
            assert status == 200, status
            for _ in range(100):
                if self.call("GET", "/v1/tenant", key=signup["api_key"])[1]["state"] == "active":
                    break
                time.sleep(0.1)
        return signup["api_key"]

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise SystemExit("no VmHWM")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def query_latencies(port, key, seconds=None, count=None, stop=None):
    """Asks questions one after another on one keep-alive connection; returns each latency in ms."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"question": "How long do refunds take?"})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
    out, errors, start = [], 0, time.monotonic()
    while True:
        if count is not None and len(out) >= count:
            break
        if seconds is not None and time.monotonic() - start >= seconds:
            break
        if stop is not None and stop.is_set():
            break
        t = time.perf_counter()
        c.request("POST", "/v1/query", body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status == 200:
            out.append((time.perf_counter() - t) * 1000)
        else:
            errors += 1
        time.sleep(0.02)
    c.close()
    return out, errors


def bystander(port, key, **kwargs):
    """`query_latencies` in a process of its own, so that the attack's threads (this process's interpreter
    lock) never delay the bystander's clock: what it measures is the service's latency."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(query_latencies, (port, key), kwargs)


def p99(values):
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else float("nan")


def raw_upload(port, key, name, content_type, body_iter, length, timeout=300):
    """POSTs a body of `length` bytes from `body_iter` as a one-file form; returns the status (0 on reset)."""
    boundary = "abuse-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.putrequest("POST", "/v1/documents")
        c.putheader("Authorization", "Bearer " + key)
        c.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        c.putheader("Content-Length", str(len(head) + length + len(tail)))
        c.endheaders()
        c.send(head)
        for chunk in body_iter:
            c.send(chunk)
        c.send(tail)
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return 0


def bomb_pdf():
    c = zlib.compressobj(9)
    data = c.compress(b"BT /F1 12 Tf 72 700 Td (Boom) Tj ET")
    for _ in range(32):
        data += c.compress(b" " * (64 * MIB))
    data += c.flush()
    head = b"%PDF-1.5\n1 0 obj\n<< /Length " + str(len(data)).encode() + b" /Filter /FlateDecode >>\nstream\n"
    return head + data + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n"


# The attack threads' niceness (`--attacker-nice`).
ATTACKER_NICE = 0


def attacker(work):
    """`work` to run as an attack thread, at `ATTACKER_NICE` (Linux sets niceness per thread)."""
    def run(*args):
        if ATTACKER_NICE:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ATTACKER_NICE)
        work(*args)
    return run


def attack_bomb(service):
    pdf = bomb_pdf()
    keys = [service.tenant(f"bomber{i}") for i in range(4)]

    def one(key, stop, statuses):
        while not stop.is_set():
            statuses.append(raw_upload(service.port, key, "bomb.pdf", "application/pdf", [pdf], len(pdf)))

    return lambda stop, statuses: [threading.Thread(target=attacker(one), args=(k, stop, statuses)) for k in keys]


def attack_large(service):
    # Just under the 64 MiB body limit once the form's own bytes are added.
    length = 64 * MIB - 4096
    line = (b"Refunds are issued within fourteen days of purchase, says the policy. " * 15)[:1023] + b"\n"
    chunk = line * 256
    keys = [service.tenant(f"large{i}", plan="pro") for i in range(16)]

    def body():
        sent = 0
        while sent < length:
            piece = chunk[: length - sent]
            sent += len(piece)
            yield piece

    def one(key, stop, statuses):
        while not stop.is_set():
            statuses.append(raw_upload(service.port, key, "big.txt", "text/plain", body(), length))

    return lambda stop, statuses: [threading.Thread(target=attacker(one), args=(k, stop, statuses))
                                   for k in keys for _ in range(4)]


def attack_slow(service):
    key = service.tenant("slowloris")

    def one(stop, statuses):
        while not stop.is_set():
            statuses.append(raw_upload(service.port, key, "slow.txt", "text/plain", trickle(stop), 32 * MIB))

    def trickle(stop):
        while not stop.is_set():
            yield b"x"
            time.sleep(1)

    return lambda stop, statuses: [threading.Thread(target=attacker(one), args=(stop, statuses))
                                   for _ in range(1000)]


SCENARIOS = {"bomb": attack_bomb, "large": attack_large, "slow": attack_slow}
LABELS = {
    "bomb": "Flate bombs (2.1 MB → 2 GiB), 4 at a time, repeated",
    "large": "64 concurrent 64 MiB uploads (16 tenants × 4), repeated",
    "slow": "1,000 slow-body connections (32 MiB declared, 1 byte/s)",
}


# Unloaded and loaded samples alternate this many times, so that a drift of the shared host's speed during
# the run falls on both sides rather than on one.
ROUNDS = 3


def run(binary, seconds, name):
    with tempfile.TemporaryDirectory() as work:
        service = Service(binary, work)
        try:
            key = service.tenant("bystander")
            status, _ = service.call("POST", "/v1/documents",
                                     {"title": "Refunds", "text": "Refunds are issued within 14 days."}, key)
            assert status == 201, status
            bystander(service.port, key, count=20)
            launch = SCENARIOS[name](service)
            unloaded, loaded, errors, statuses, ratios = [], [], 0, [], []
            for _ in range(ROUNDS):
                calm, _ = bystander(service.port, key, count=300)
                stop = threading.Event()
                threads = launch(stop, statuses)
                for t in threads:
                    t.daemon = True
                    t.start()
                time.sleep(2)
                busy, failed = bystander(service.port, key, seconds=seconds / ROUNDS)
                stop.set()
                for t in threads:
                    t.join(timeout=120)
                unloaded += calm
                loaded += busy
                errors += failed
                ratios.append(p99(busy) / p99(calm))
            peak = service.peak_rss_mib()
        finally:
            service.stop()
    answers = {}
    for s in statuses:
        answers[s] = answers.get(s, 0) + 1
    answers = ", ".join(f"{k}×{v}" for k, v in sorted(answers.items()))
    rounds = ", ".join(f"{r:.2f}×" for r in ratios)
    print(f"| {LABELS[name]} | {answers} | {p99(unloaded):.1f} ms ({len(unloaded)}) | {p99(loaded):.1f} ms "
          f"({len(loaded)} queries, {errors} failed) | {p99(loaded) / p99(unloaded):.2f}× ({rounds}) "
          f"| {peak:.0f} MiB |", flush=True)


def main():
    global ATTACKER_NICE
    args = sys.argv[1:]
    for flag in [a for a in args if a.startswith("--attacker-nice=")]:
        ATTACKER_NICE = int(flag.split("=", 1)[1])
        args.remove(flag)
    binary = args[0] if args else "target/release/tenantry"
    seconds = float(args[1]) if len(args) > 1 else 30
    names = args[2:] or list(SCENARIOS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("| abuse | attack answers (status × count) | bystander query p99 unloaded (samples) | under attack "
          "| ratio (per round) | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name in names:
        run(binary, seconds, name)


if __name__ == "__main__":
    main()
