"""What the Python client tests share: the `tenantry` binary started on a free port (optionally with a
configuration), a JSON POST helper, a fake OpenAI-compatible upstream that records every request it
receives and answers in the wire format (plain and streamed, tool calls, `finish_reason`), and a test case
class that runs one service with one tenant for its tests."""
import http.server
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request


def start_tenantry(binary, tmp, config=None):
    """Starts the binary on a free port; returns (process, base URL, log file)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "server.log"), "w")
    command = [binary, "serve", "--data-dir", os.path.join(tmp, "data"), "--bind", f"127.0.0.1:{port}"]
    if config:
        path = os.path.join(tmp, "tenantry.toml")
        with open(path, "w") as f:
            f.write(config)
        command += ["--config", path]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(150):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            return proc, base, log
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("tenantry did not start; see " + log.name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# How the service asks a model to restate a follow-up before it searches.
RESTATE_INSTRUCTIONS = "Rewrite the user's last question"

# What the fake model answers for a field of this name: the facts of its one story.
FACTS = {"city": "Lyon", "country": "France", "order": 42}


def example(schema, defs=None):
    """A value valid for a JSON schema (the subset tool parameters use), with the story's facts by name."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example(defs[schema["$ref"].split("/")[-1]], defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: FACTS.get(name, example(sub, defs)) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), defs)]
    return {"integer": 42, "number": 1.5, "boolean": True}.get(kind, "Lyon")


class FakeUpstream(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible upstream that records each request body and answers by what the last message
    asks: a tool call when tools are offered and no tool result has come back, else the text it was given."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeUpstreamHandler)
        self.requests = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeUpstreamHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if str(body["messages"][0]["content"]).startswith(RESTATE_INSTRUCTIONS):
            self.restate(body)
            return
        last = body["messages"][-1]
        # Cites the passage it was given that says where Acme is, as a model would.
        found = re.search(r"\[(\d+)\] [^\n]*\n[^\n]*Lyon", str(last.get("content")))
        text = f"Acme is headquartered in Lyon [{found.group(1)}]." if found else "I do not know."
        tool_calls, finish = None, "stop"
        if body.get("tools") and last["role"] != "tool":
            function = body["tools"][0]["function"]
            arguments = json.dumps(example(function.get("parameters", {})))
            tool_calls = [{"id": "call_1", "type": "function",
                           "function": {"name": function["name"], "arguments": arguments}}]
            text, finish = None, "tool_calls"
        elif last["role"] == "tool":
            text = "Order 42 ships tomorrow."
        elif body.get("response_format", {}).get("type") in ("json_object", "json_schema"):
            text = json.dumps({"city": "Lyon", "country": "France"})
        if body.get("max_tokens", 512) <= 3:
            text, finish = "Acme is", "length"
        usage = {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            self.reply("application/json", json.dumps({
                "id": "up-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}))
            return
        chunk = lambda delta, reason=None: {"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                                            "model": body["model"], "choices": [{"index": 0, "delta": delta,
                                                                                 "finish_reason": reason}]}
        events = [chunk({"role": "assistant", "content": ""})]
        if tool_calls:
            call = dict(tool_calls[0], index=0)
            events.append(chunk({"tool_calls": [dict(call, function={"name": call["function"]["name"], "arguments": ""})]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}))
        else:
            events += [chunk({"content": word}) for word in re.findall(r"\S+\s*", text)]
        events.append(chunk({}, finish))
        events.append({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                       "choices": [], "usage": usage})
        self.reply("text/event-stream", "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n")

    def restate(self, body):
        """Restates a follow-up as the service asks before it searches: it knows who the story's maker is."""
        transcript = body["messages"][-1]["content"]
        question = transcript.rsplit("Last question: ", 1)[-1]
        text = "Where is the headquarters of Acme Corporation?" if "Widget" in transcript else question
        self.reply("application/json", json.dumps({
            "id": "up-restate", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}))

    def reply(self, content_type, text):
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


HOSTED_CONFIG = """
[[models]]
name = "gpt-4o-mini"
provider = "openai"
base_url = "{base}"
context_window = 16000
max_retries = 0

[[plans]]
name = "trial"
trial_days = 14
models = ["gpt-4o-mini"]
default_model = "gpt-4o-mini"
"""


class TenantCase(unittest.TestCase):
    """One service and one signed-up tenant with `documents` ((title, text) pairs) for a class of tests. With
    `hosted`, the service's trial plan uses a hosted model behind a `FakeUpstream` (`self.upstream`);
    otherwise the built-in offline model. `binary` is set by the script that runs the tests."""

    binary = None
    hosted = False
    documents = []

    @classmethod
    def setUpClass(cls):
        cls.upstream = FakeUpstream() if cls.hosted else None
        cls.tmp = tempfile.mkdtemp(prefix=f"tenantry-{cls.__name__.lower()}-")
        config = HOSTED_CONFIG.format(base=cls.upstream.base) if cls.hosted else None
        cls.proc, cls.base, cls.log = start_tenantry(cls.binary, cls.tmp, config)
        name = cls.__name__.lower()
        signup = post(cls.base, "/v1/signup", {"email": f"{name}@example.com", "organization": name, "plan": "trial"})
        cls.key = signup["api_key"]
        for title, text in cls.documents:
            post(cls.base, "/v1/documents", {"title": title, "text": text}, key=cls.key)
        cls.api = cls.base + "/v1"

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.log.close()
        if cls.upstream:
            cls.upstream.shutdown()

    def sent(self):
        """The last request the fake upstream received."""
        return self.upstream.requests[-1]
