// The tenant portal: signs in with an API key (kept in sessionStorage for this tab) and shows the tenant's
// account, quotas, usage, documents, keys and invoices from the JSON API. All values are rendered as text.
"use strict";

(function () {
  const { el, fill, rows, api, guarded, showError, clearError, number, money, bytes, date, barChart } = window.Tenantry;
  const key = window.Tenantry.credentialStore("tenantry.portal.key");
  const call = (method, path, body) => api(key.get(), method, path, body);
  const $ = (id) => document.getElementById(id);

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("app").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    if (!signedIn) {
      $("who").textContent = "";
      $("new-key").hidden = true;
      $("new-key-value").textContent = "";
    }
  }

  async function loadAccount() {
    const t = await call("GET", "/v1/tenant");
    $("who").textContent = t.organization;
    $("organization").textContent = t.organization;
    $("plan").textContent = t.plan;
    fill("state", el("span", { class: "state state-" + t.state, "data-state": t.state }, t.state));
    $("model").textContent = t.config.model;
    $("retrieval-mode").textContent = t.config.retrieval_mode;
    $("tenant-id").textContent = t.tenant_id;
    const cap = t.config.overage_limit_cents;
    $("cap-cents").value = cap === null || cap === undefined ? "" : String(cap);
  }

  const METERS = [
    ["queries", "Queries", number],
    ["tokens", "Tokens", number],
    ["documents", "Documents", number],
    ["storage_bytes", "Storage", bytes],
  ];

  async function loadQuotasAndUsage() {
    const [q, u] = await Promise.all([call("GET", "/v1/quotas"), call("GET", "/v1/usage")]);
    $("quota-period").textContent = "Period " + date(q.period_start) + " to " + date(q.period_end);
    rows(
      "quota-rows",
      METERS,
      ([meter, label, format]) => [
        label,
        el("span", { "data-meter": meter, class: "used" }, format(q.used[meter])),
        el("span", { class: "limit" }, format(q.limits[meter])),
        el("progress", { max: Math.max(q.limits[meter], 1), value: Math.min(q.used[meter], q.limits[meter]) }),
      ],
      "no quotas",
    );
    barChart(
      "usage-chart",
      METERS.map(([meter, label, format]) => ({
        label,
        value: q.used[meter],
        max: q.limits[meter],
        text: format(q.used[meter]) + " of " + format(q.limits[meter]),
      })),
    );
    const t = u.totals;
    rows(
      "usage-rows",
      [
        ["Queries", number(t.queries), "queries"],
        ["Prompt tokens", number(t.prompt_tokens), "prompt_tokens"],
        ["Completion tokens", number(t.completion_tokens), "completion_tokens"],
        ["Documents", number(t.documents), "documents"],
        ["Storage", bytes(t.storage_bytes), "storage_bytes"],
        ["Cost", money(Math.round(t.cost_micros / 10000), "usd"), "cost"],
      ],
      ([label, value, meter]) => [label, el("span", { "data-meter": meter }, value)],
      "no usage",
    );
    rows(
      "model-rows",
      Object.entries(u.by_model),
      ([model, m]) => [model, number(m.queries), number(m.prompt_tokens), number(m.completion_tokens), money(Math.round(m.cost_micros / 10000), "usd")],
      "no queries yet this period",
    );
  }

  async function loadDocuments() {
    const { documents } = await call("GET", "/v1/documents");
    rows(
      "document-rows",
      documents,
      (d) => [
        el("span", { class: "doc-title" }, d.title),
        d.content_type,
        bytes(d.bytes),
        number(d.chunks),
        date(d.created_at),
        el("button", { type: "button", class: "danger", "data-document": d.document_id, onclick: () => deleteDocument(d) }, "Delete"),
      ],
      "no documents yet",
    );
  }

  async function loadKeys() {
    const { keys } = await call("GET", "/v1/keys");
    rows(
      "key-rows",
      keys,
      (k) => [
        el("span", { class: "key-name" }, k.name),
        el("code", {}, k.key_id),
        k.scopes.join(", "),
        date(k.created_at),
        date(k.last_used_at),
        el("span", { class: "key-status" }, k.revoked_at ? "revoked " + date(k.revoked_at) : "active"),
        k.revoked_at
          ? ""
          : el("button", { type: "button", class: "danger", "data-key": k.key_id, onclick: () => revokeKey(k) }, "Revoke"),
      ],
      "no keys",
    );
  }

  async function loadInvoices() {
    const { invoices } = await call("GET", "/v1/invoices");
    rows(
      "invoice-rows",
      invoices,
      (i) => [
        i.number,
        i.kind,
        date(i.period_start) + " – " + date(i.period_end),
        el("span", { class: "invoice-status" }, i.status),
        money(i.total_cents, i.currency),
      ],
      "no invoices yet",
    );
  }

  const EVENT_TYPES = [
    "usage.threshold_reached",
    "invoice.created",
    "invoice.paid",
    "invoice.payment_failed",
    "tenant.state_changed",
    "document.indexed",
    "export.ready",
  ];

  async function loadWebhooks() {
    const { webhooks } = await call("GET", "/v1/webhooks");
    rows(
      "webhook-rows",
      webhooks,
      (w) => [
        el("code", { class: "webhook-url" }, w.url),
        w.events.join(", "),
        date(w.created_at),
        el("button", { type: "button", class: "danger", "data-webhook": w.webhook_id, onclick: () => deleteWebhook(w) }, "Delete"),
      ],
      "no endpoints",
    );
    const lists = await Promise.all(
      webhooks.map((w) => call("GET", "/v1/webhooks/" + encodeURIComponent(w.webhook_id) + "/deliveries")),
    );
    const deliveries = lists
      .flatMap((l, i) => l.deliveries.map((d) => ({ ...d, webhook: webhooks[i] })))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))
      .slice(0, 20);
    rows(
      "delivery-rows",
      deliveries,
      (d) => [
        d.webhook.url,
        d.type,
        el("span", { class: "delivery-status delivery-" + d.status }, d.status),
        number(d.attempts),
        d.last_status_code ? String(d.last_status_code) : d.last_error || "—",
        d.next_attempt_at ? date(d.next_attempt_at) : "—",
        el("button", { type: "button", class: "secondary", onclick: () => resend(d) }, "Resend"),
      ],
      "nothing delivered yet",
    );
  }

  async function loadAlerts() {
    const a = await call("GET", "/v1/alerts");
    const fired = new Set(a.fired.map((f) => f.meter + ":" + f.percent));
    rows(
      "alert-rows",
      a.thresholds,
      (t) => [t.meter, number(t.percent) + " %", fired.has(t.meter + ":" + t.percent) ? "reached" : "not reached"],
      "alerts are off",
    );
    $("alert-thresholds").value = a.thresholds.map((t) => t.meter + ":" + t.percent).join(", ");
  }

  async function loadCredits() {
    const c = await call("GET", "/v1/credits");
    $("credit-balance").textContent = money(c.balance_cents, c.currency);
    rows(
      "credit-rows",
      c.grants,
      (g) => [
        g.reason,
        money(g.amount_cents, c.currency),
        money(g.remaining_cents, c.currency),
        g.expires_at ? date(g.expires_at) : "never",
        g.applied.map((a) => a.invoice_id + " (" + money(a.amount_cents, c.currency) + ")").join(", ") || "—",
      ],
      "no credit",
    );
  }

  async function loadAll() {
    await loadAccount();
    await Promise.all([loadQuotasAndUsage(), loadDocuments(), loadKeys(), loadInvoices(), loadCredits(), loadWebhooks(), loadAlerts()]);
  }

  async function deleteWebhook(w) {
    if (!window.confirm("Delete the endpoint " + w.url + "? Nothing more is sent to it.")) return;
    await guarded(async () => {
      await call("DELETE", "/v1/webhooks/" + encodeURIComponent(w.webhook_id));
      await loadWebhooks();
    });
  }

  async function resend(d) {
    await guarded(async () => {
      const path = "/v1/webhooks/" + encodeURIComponent(d.webhook.webhook_id) + "/deliveries/" + encodeURIComponent(d.delivery_id) + "/resend";
      await call("POST", path);
      await loadWebhooks();
    });
  }

  async function deleteDocument(d) {
    await guarded(async () => {
      await call("DELETE", "/v1/documents/" + encodeURIComponent(d.document_id));
      await Promise.all([loadDocuments(), loadQuotasAndUsage()]);
    });
  }

  async function revokeKey(k) {
    await guarded(async () => {
      await call("DELETE", "/v1/keys/" + encodeURIComponent(k.key_id));
      await loadKeys();
    });
  }

  async function signIn(candidate) {
    key.set(candidate);
    try {
      clearError();
      await loadAll();
      showSignedIn(true);
    } catch (e) {
      key.clear();
      showSignedIn(false);
      showError(e);
    }
  }

  function onSubmit(id, handler) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(handler);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("api-key").value.trim();
      $("api-key").value = "";
      signIn(candidate);
    });
    $("sign-out").addEventListener("click", () => {
      key.clear();
      clearError();
      showSignedIn(false);
    });

    onSubmit("upload-form", async () => {
      const title = $("doc-title").value.trim();
      const file = $("doc-file").files[0];
      const text = $("doc-text").value;
      let body;
      if (file) {
        body = new FormData();
        body.append("file", file, file.name);
        if (title) body.append("title", title);
      } else if (text.trim()) {
        body = { title: title || "Untitled", text };
      } else {
        throw new Error("Choose a file or paste some text to upload.");
      }
      await call("POST", "/v1/documents", body);
      $("upload-form").reset();
      await Promise.all([loadDocuments(), loadQuotasAndUsage()]);
    });

    onSubmit("key-form", async () => {
      const scopes = Array.from(document.querySelectorAll("#key-form input[name=scope]:checked"), (c) => c.value);
      const created = await call("POST", "/v1/keys", { name: $("key-name").value.trim(), scopes });
      $("key-form").reset();
      $("new-key-value").textContent = created.api_key;
      $("new-key").hidden = false;
      await loadKeys();
    });

    fill(
      "webhook-events",
      ...EVENT_TYPES.map((t) => el("label", { class: "inline" }, el("input", { type: "checkbox", name: "event", value: t }), " " + t)),
    );

    onSubmit("webhook-form", async () => {
      const events = Array.from(document.querySelectorAll("#webhook-form input[name=event]:checked"), (c) => c.value);
      if (events.length === 0) throw new Error("Choose at least one event.");
      const created = await call("POST", "/v1/webhooks", { url: $("webhook-url").value.trim(), events });
      $("webhook-form").reset();
      $("new-webhook-secret").textContent = created.secret;
      $("new-webhook").hidden = false;
      await loadWebhooks();
    });

    onSubmit("alert-form", async () => {
      const thresholds = $("alert-thresholds").value
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s)
        .map((s) => {
          const [meter, percent] = s.split(":").map((p) => p.trim());
          return { meter, percent: Number(percent) };
        });
      await call("PUT", "/v1/alerts", { thresholds });
      await loadAlerts();
    });

    onSubmit("cap-form", async () => {
      const raw = $("cap-cents").value.trim();
      await call("PATCH", "/v1/tenant/config", { overage_limit_cents: raw === "" ? null : Number(raw) });
      await loadAccount();
    });

    onSubmit("plan-form", async () => {
      const changed = await call("POST", "/v1/plan", { plan: $("plan-name").value.trim() });
      const p = changed.proration;
      const result = $("plan-result");
      result.textContent =
        "Plan " + changed.previous_plan + " → " + changed.plan +
        (changed.pending_plan ? " (switching once the index is ready)" : "") +
        ". Proration: credit " + money(p.credit_cents, p.currency) + ", charge " + money(p.charge_cents, p.currency) + ".";
      result.hidden = false;
      $("plan-form").reset();
      await loadAll();
    });

    if (key.get()) {
      signIn(key.get());
    } else {
      showSignedIn(false);
    }
  });
})();
