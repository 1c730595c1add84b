#!/usr/bin/env python3
"""The official OpenAI Python SDK as a real client of Tenantry's OpenAI-compatible API.

Starts the built `tenantry` binary (no configuration, built-in offline model) on a free port, signs a tenant
up, uploads a document, and drives /v1/chat/completions plain and streaming, /v1/models, and the error
paths through the SDK with the tenant's key as the API key. Usage:

    target/sdk-venv/bin/python tests/sdk/openai_sdk.py target/debug/tenantry
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import openai

BINARY = None
POLICY = "Refunds are issued within 14 days of a request. Shipping is free above 50 euros."
QUESTION = "How long do refunds take?"


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


class OpenAiSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tenantry-sdk-")
        port = free_port()
        cls.base = f"http://127.0.0.1:{port}"
        cls.log = open(os.path.join(cls.tmp, "server.log"), "w")
        cls.proc = subprocess.Popen(
            [BINARY, "serve", "--data-dir", os.path.join(cls.tmp, "data"), "--bind", f"127.0.0.1:{port}"],
            stdout=cls.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                urllib.request.urlopen(cls.base + "/healthz", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        else:
            raise RuntimeError("tenantry did not start; see " + cls.log.name)
        signup = post(cls.base, "/v1/signup", {"email": "sdk@example.com", "organization": "SDK Org", "plan": "trial"})
        cls.key = signup["api_key"]
        post(cls.base, "/v1/documents", {"title": "Policy", "text": POLICY}, key=cls.key)
        cls.client = openai.OpenAI(base_url=cls.base + "/v1", api_key=cls.key, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.log.close()

    def messages(self):
        return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": QUESTION}]

    def test_plain_completion(self):
        raw = self.client.chat.completions.with_raw_response.create(model="default", messages=self.messages())
        self.assertTrue(raw.headers.get("x-request-id"))
        self.assertTrue(raw.headers.get("x-quota-queries-remaining"))
        r = raw.parse()
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, "local-small")
        self.assertTrue(r.id.startswith("chatcmpl-"))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertIn("14 days", r.choices[0].message.content)
        self.assertNotIn("Shipping", r.choices[0].message.content)
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        # The tenant's model named explicitly is the same as "default".
        again = self.client.chat.completions.create(model="local-small", messages=self.messages())
        self.assertEqual(again.choices[0].message.content, r.choices[0].message.content)

    def test_streaming_completion_with_usage(self):
        plain = self.client.chat.completions.create(model="default", messages=self.messages())
        stream = self.client.chat.completions.create(
            model="default", messages=self.messages(), stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, plain.choices[0].message.content)
        self.assertGreater(len([c for c in chunks if c.choices and c.choices[0].delta.content]), 1)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["stop"])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.total_tokens, plain.usage.total_tokens)
        self.assertTrue(all(c.model == "local-small" for c in chunks))

    def test_models_lists_the_tenants_model(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["local-small"])

    def test_errors_raise_the_sdks_exceptions(self):
        bad = openai.OpenAI(base_url=self.base + "/v1", api_key="tk_not_a_key", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.chat.completions.create(model="default", messages=self.messages())
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="gpt-4o", messages=self.messages())
        self.assertEqual(caught.exception.code, "model_not_found")
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="default", messages=[{"role": "system", "content": "x"}])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
