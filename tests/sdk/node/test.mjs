// OpenAI's official Node SDK as a real client of Tenantry's OpenAI-compatible API: starts the built
// `tenantry` binary (no configuration, the built-in offline model) on a free port, signs a tenant up, uploads
// a document, and drives chat completions plain and streamed, the Responses API, embeddings, models and the
// error paths with the tenant's key as the API key. Usage (after `npm ci` here):
//
//     node --test tests/sdk/node/test.mjs   (with TENANTRY_BIN=target/debug/tenantry)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import OpenAI from "openai";

const POLICY = "Refunds are issued within 14 days of a request. Shipping is free above 50 euros.";
const QUESTION = "How long do refunds take?";
const messages = [{ role: "user", content: QUESTION }];

let server, base, client;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function post(path, body, key) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const r = await fetch(base + path, { method: "POST", headers, body: JSON.stringify(body) });
  assert.ok(r.ok, `${path}: ${r.status} ${await r.clone().text()}`);
  return r.json();
}

before(async () => {
  const binary = process.env.TENANTRY_BIN;
  assert.ok(binary, "set TENANTRY_BIN to the built tenantry binary");
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const dataDir = join(mkdtempSync(join(tmpdir(), "tenantry-node-")), "data");
  server = spawn(binary, ["serve", "--data-dir", dataDir, "--bind", `127.0.0.1:${port}`], { stdio: "ignore" });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(base + "/healthz")).ok) break;
    } catch {}
    assert.ok(i < 150, "tenantry did not start");
    await new Promise((r) => setTimeout(r, 200));
  }
  const signup = await post("/v1/signup", { email: "node@example.com", organization: "node", plan: "trial" });
  await post("/v1/documents", { title: "Policy", text: POLICY }, signup.api_key);
  client = new OpenAI({ baseURL: base + "/v1", apiKey: signup.api_key, maxRetries: 0 });
});

after(() => server?.kill());

test("a chat completion answers from the tenant's document, with citations", async () => {
  const { data: r, response } = await client.chat.completions.create({ model: "default", messages }).withResponse();
  assert.ok(response.headers.get("x-request-id"));
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, "local-small");
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.match(r.choices[0].message.content, /14 days/);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(r.citations[0].title, "Policy");
});

test("a streamed completion arrives in chunks and ends with usage", async () => {
  const plain = await client.chat.completions.create({ model: "default", messages });
  const stream = await client.chat.completions.create({
    model: "default", messages, stream: true, stream_options: { include_usage: true },
  });
  let text = "", deltas = 0, usage;
  for await (const chunk of stream) {
    const content = chunk.choices[0]?.delta?.content;
    if (content) { text += content; deltas++; }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, plain.choices[0].message.content);
  assert.ok(deltas > 1, `${deltas} deltas`);
  assert.equal(usage.total_tokens, plain.usage.total_tokens);
});

test("the Responses API answers plain and streamed", async () => {
  const r = await client.responses.create({ model: "default", input: QUESTION });
  assert.equal(r.status, "completed");
  assert.match(r.output_text, /14 days/);
  const stream = await client.responses.create({ model: "default", input: QUESTION, stream: true });
  let text = "", last;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") text += event.delta;
    last = event;
  }
  assert.equal(last.type, "response.completed");
  assert.equal(text, r.output_text);
});

test("embeddings, models and errors keep OpenAI's shapes", async () => {
  const e = await client.embeddings.create({ model: "default", input: ["refunds", "shipping"] });
  assert.equal(e.data.length, 2);
  assert.ok(e.data[0].embedding.length > 0);
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  assert.deepEqual(models, ["local-small"]);

  const missing = await client.chat.completions.create({ model: "gpt-4o", messages }).catch((e) => e);
  assert.ok(missing instanceof OpenAI.NotFoundError, String(missing));
  assert.equal(missing.code, "model_not_found");
  const tools = [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }];
  const refused = await client.chat.completions.create({ model: "default", messages, tools }).catch((e) => e);
  assert.ok(refused instanceof OpenAI.BadRequestError, String(refused));
  assert.equal(refused.code, "unsupported_parameter");
  assert.equal(refused.param, "tools");
  const stranger = new OpenAI({ baseURL: base + "/v1", apiKey: "tk_not_a_key", maxRetries: 0 });
  const denied = await stranger.chat.completions.create({ model: "default", messages }).catch((e) => e);
  assert.ok(denied instanceof OpenAI.AuthenticationError, String(denied));
});
