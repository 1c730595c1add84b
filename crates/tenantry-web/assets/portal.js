// The tenant portal: signs in with the account's email and password, a one-time link, or an admin-scoped API
// key (each opens a session held in an HttpOnly cookie) and runs the organisation's account from the JSON API,
// one section per URL (/portal, /portal/ask, /portal/documents…). Every section loads on its own, so a tenant
// whose state closes part of the API (suspended, cancelled…) still sees the rest and is told what is closed and
// why. All values are rendered as text.
"use strict";

(function () {
  const { el, fill, rows, api, session, download, guarded, showError, clearError, number, money, bytes, date, barChart, columnChart } =
    window.Tenantry;
  const call = api;
  const SESSION = "/v1/session";
  const $ = (id) => document.getElementById(id);
  const SECTIONS = ["overview", "ask", "documents", "keys", "billing", "settings", "integrations", "data"];
  const PAGE_SIZE = 20;
  // Costs are metered in micro-dollars and shown in cents.
  const cost = (micros) => money(Math.round(micros / 10000), "usd");

  let tenant = null;
  let catalogue = [];
  let documents = [];
  let documentPage = 0;

  // ---- sections ---------------------------------------------------------------------------------------

  function sectionOf(path) {
    const name = path.replace(/^\/portal\/?/, "").split("/")[0];
    return SECTIONS.includes(name) ? name : "overview";
  }

  function show(section) {
    for (const page of document.querySelectorAll("[data-page]")) {
      page.hidden = page.getAttribute("data-page") !== section;
    }
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.getAttribute("data-section") === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = "Tenantry — " + (section === "overview" ? "tenant portal" : section);
  }

  function go(section) {
    const path = section === "overview" ? "/portal" : "/portal/" + section;
    if (location.pathname !== path) history.pushState({ section }, "", path);
    clearError();
    show(section);
  }

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("app").hidden = !signedIn;
    $("nav").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    if (!signedIn) {
      tenant = null;
      $("who").textContent = "";
      $("state-banner").hidden = true;
      $("new-key").hidden = true;
      $("new-key-value").textContent = "";
    }
  }

  // A section's own note: why it shows nothing (the tenant's state closes that part of the API).
  function note(id, error) {
    const area = $(id);
    if (!area) return;
    area.hidden = !error;
    area.textContent = error ? closedBecause(error) : "";
  }

  function closedBecause(error) {
    if (error.status === 402) return "Not available until the open invoice is paid (see Billing).";
    if (error.status === 403 && tenant && tenant.state === "cancelled") {
      return "Not available while the subscription is cancelled; reactivate it under Data.";
    }
    return error.message;
  }

  // Runs each loader; a loader that fails shows why in its section (or the error area) without stopping the others.
  async function loadEach(loaders) {
    const results = await Promise.allSettled(loaders.map(([load]) => load()));
    results.forEach((r, i) => {
      const noteId = loaders[i][1];
      if (r.status === "rejected") {
        if (noteId) note(noteId, r.reason);
        else if (!(r.reason && (r.reason.status === 402 || r.reason.status === 403))) showError(r.reason);
      } else if (noteId) {
        note(noteId, null);
      }
    });
  }

  const BANNERS = {
    pending_payment: "Your first payment is pending: the service opens once the first invoice is paid.",
    provisioning: "Your organisation is being set up; this takes a few seconds.",
    past_due: "A payment failed. Pay the open invoice under Billing to keep the service running.",
    suspended: "The service is suspended for non-payment. Pay the open invoice under Billing to resume it; your data is kept.",
    cancelled: "The subscription is cancelled. Your data is kept for a while: export it or reactivate under Data.",
  };

  // ---- overview ---------------------------------------------------------------------------------------

  async function loadAccount() {
    const t = await call("GET", "/v1/tenant");
    tenant = t;
    $("who").textContent = t.organization;
    $("organization").textContent = t.organization;
    $("plan").textContent = t.plan;
    $("current-plan").textContent = t.plan;
    fill("state", el("span", { class: "state state-" + t.state, "data-state": t.state }, t.state));
    $("model").textContent = t.config.model;
    $("retrieval-mode").textContent = t.config.retrieval_mode;
    $("tenant-id").textContent = t.tenant_id;
    const cap = t.config.overage_limit_cents;
    $("cap-cents").value = cap === null || cap === undefined ? "" : String(cap);
    const due = t.open_invoices || [];
    $("amount-due").hidden = due.length === 0;
    rows("due-rows", due, (i) => [i.number, i.kind, money(i.total_cents, i.currency), payLink(i)], "nothing is due", showInvoice);
    const owed = due.map((i) => i.number + " (" + money(i.total_cents, i.currency) + ")").join(", ");
    const banner = BANNERS[t.state] && BANNERS[t.state] + (due.length ? " Open: " + owed + "." : "");
    $("state-banner").hidden = !banner;
    $("state-banner").textContent = banner || "";
    $("state-banner").className = "banner banner-" + t.state;
    renderSubscription();
    renderSettings();
  }

  const METERS = [
    ["queries", "Queries", number],
    ["tokens", "Tokens", number],
    ["documents", "Documents", number],
    ["storage_bytes", "Storage", bytes],
  ];

  async function loadQuotasAndUsage() {
    const [q, u] = await Promise.all([call("GET", "/v1/quotas"), call("GET", "/v1/usage")]);
    $("quota-period").textContent = "Period " + date(q.period_start) + " to " + date(q.period_end) + "; quotas reset then.";
    rows(
      "quota-rows",
      METERS,
      ([meter, label, format]) => [
        label,
        el("span", { "data-meter": meter, class: "used" }, format(q.used[meter])),
        el("span", { class: "limit" }, format(q.limits[meter])),
        el("progress", { max: Math.max(q.limits[meter], 1), value: Math.min(q.used[meter], q.limits[meter]), "aria-label": label + " used" }),
        el("span", { class: "remaining" }, format(q.remaining[meter])),
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
        ["Cost", cost(t.cost_micros), "cost"],
      ],
      ([label, value, meter]) => [label, el("span", { "data-meter": meter }, value)],
      "no usage",
    );
    rows(
      "model-rows",
      Object.entries(u.by_model),
      ([model, m]) => [model, number(m.queries), number(m.prompt_tokens), number(m.completion_tokens), cost(m.cost_micros)],
      "no queries yet this period",
    );
  }

  function historyQuery() {
    return "granularity=" + encodeURIComponent($("history-granularity").value);
  }

  // The chosen meter per bucket, every bucket of the range present (zero where nothing was used).
  async function loadHistory() {
    const series = await call("GET", "/v1/usage/timeseries?" + historyQuery());
    const meter = $("history-meter").value;
    const step = series.granularity === "hour" ? 3600000 : 86400000;
    const from = Date.parse(series.from);
    const to = Date.parse(series.to);
    const totals = new Map();
    for (let t = from; t < to; t += step) totals.set(t, 0);
    const value = (p) => (meter === "cost" ? p.cost_micros : p.meter === meter ? p.quantity : 0);
    for (const p of series.points) {
      const t = Date.parse(p.start);
      totals.set(t, (totals.get(t) || 0) + value(p));
    }
    const label = (t) => {
      const iso = new Date(t).toISOString();
      return series.granularity === "hour" ? iso.slice(5, 13).replace("T", " ") + ":00" : iso.slice(0, 10);
    };
    const format = meter === "cost" ? cost : number;
    columnChart("history-chart", Array.from(totals, ([t, v]) => ({ label: label(t), value: v })), format);
    const shown = series.points.filter((p) => value(p) !== 0);
    rows("history-rows", shown, (p) => [date(p.start), p.model || "—", format(value(p))], "no usage in this range");
  }

  // ---- ask --------------------------------------------------------------------------------------------

  async function ask(question) {
    const r = await call("POST", "/v1/query", { question });
    $("ask-answer").textContent = r.answer;
    const u = r.usage;
    $("ask-cost").textContent =
      "Model " + r.model + ", " + r.retrieval_mode + " retrieval; " + number(u.prompt_tokens) + " prompt and " +
      number(u.completion_tokens) + " completion tokens, " + cost(u.cost_micros) + ".";
    fill(
      "ask-citations",
      ...r.citations.map((c) =>
        el(
          "li",
          { class: "citation" },
          el("strong", {}, c.title),
          c.heading ? el("span", { class: "muted" }, " — " + c.heading) : null,
          c.page ? el("span", { class: "muted" }, " (page " + c.page + ")") : null,
          el("blockquote", {}, c.text),
        ),
      ),
    );
    if (r.citations.length === 0) fill("ask-citations", el("li", { class: "muted" }, "no passage of your documents matched"));
    $("ask-result").hidden = false;
  }

  // ---- documents --------------------------------------------------------------------------------------

  async function loadDocuments() {
    ({ documents } = await call("GET", "/v1/documents"));
    renderDocuments();
  }

  function renderDocuments() {
    const term = $("doc-search").value.trim().toLowerCase();
    const matching = documents.filter((d) => !term || d.title.toLowerCase().includes(term));
    const pages = Math.max(Math.ceil(matching.length / PAGE_SIZE), 1);
    documentPage = Math.min(documentPage, pages - 1);
    const shown = matching.slice(documentPage * PAGE_SIZE, (documentPage + 1) * PAGE_SIZE);
    rows(
      "document-rows",
      shown,
      (d) => [
        el("span", { class: "doc-title" }, d.title),
        d.content_type,
        bytes(d.bytes),
        number(d.chunks),
        date(d.created_at),
        el("button", { type: "button", class: "danger", "data-document": d.document_id, onclick: () => deleteDocument(d) }, "Delete"),
      ],
      term ? "no document title matches" : "no documents yet",
    );
    $("doc-page").textContent = "Page " + (documentPage + 1) + " of " + pages + " (" + number(matching.length) + " documents)";
    $("doc-prev").disabled = documentPage === 0;
    $("doc-next").disabled = documentPage >= pages - 1;
  }

  // Uploads each file in turn, reporting each one's outcome; one failure does not stop the rest.
  async function upload() {
    const title = $("doc-title").value.trim();
    const files = Array.from($("doc-file").files);
    const text = $("doc-text").value;
    const jobs = [];
    if (files.length > 0) {
      for (const file of files) {
        const body = new FormData();
        body.append("file", file, file.name);
        if (title && files.length === 1) body.append("title", title);
        jobs.push([file.name, body]);
      }
    } else if (text.trim()) {
      jobs.push([title || "Untitled", { title: title || "Untitled", text }]);
    } else {
      throw new Error("Choose one or more files, or paste some text, to upload.");
    }
    const status = fill("upload-status");
    for (const [name, body] of jobs) {
      const line = el("li", { class: "upload-pending" }, name + ": uploading…");
      status.append(line);
      try {
        const done = await call("POST", "/v1/documents", body);
        line.className = "upload-done";
        line.textContent = name + ": " + (done.status === "indexing" ? "stored, indexing" : "ready") + " (" + number(done.chunks) + " chunks)";
      } catch (e) {
        line.className = "upload-failed";
        line.textContent = name + ": " + e.message;
      }
    }
    $("upload-form").reset();
    await loadEach([[loadDocuments, "documents-note"], [loadQuotasAndUsage, "quotas-note"]]);
  }

  async function deleteDocument(d) {
    if (!window.confirm("Delete the document \u201c" + d.title + "\u201d? Its passages stop being used in answers.")) return;
    await guarded(async () => {
      await call("DELETE", "/v1/documents/" + encodeURIComponent(d.document_id));
      await loadEach([[loadDocuments, "documents-note"], [loadQuotasAndUsage, "quotas-note"]]);
    });
  }

  // ---- keys -------------------------------------------------------------------------------------------

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

  async function revokeKey(k) {
    if (!window.confirm("Revoke the key \u201c" + k.name + "\u201d? Anything using it stops working at once.")) return;
    await guarded(async () => {
      await call("DELETE", "/v1/keys/" + encodeURIComponent(k.key_id));
      await loadKeys();
    });
  }

  // ---- billing ----------------------------------------------------------------------------------------

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
      showInvoice,
    );
  }

  // What the current period's invoice holds so far, as its close would bill it now.
  async function loadUpcoming() {
    let next;
    try {
      next = await call("GET", "/v1/invoices/upcoming");
    } finally {
      $("upcoming").hidden = next === undefined;
    }
    $("upcoming-when").textContent = "Made on " + date(next.bills_at) + " for the period " + date(next.period_start) + " – " + date(next.period_end) + "; usage until then is added.";
    rows("upcoming-lines", next.lines, (l) => [
      l.description,
      l.meter ? number(l.quantity) : "",
      l.meter ? (l.unit_amount_decimal || "") + " ¢" : "",
      money(l.amount_cents, next.currency),
    ], "nothing to bill so far");
    $("upcoming-total").textContent = money(next.subtotal_cents, next.currency);
  }

  // A link to the page where an open invoice is paid online, when the payment provider has one.
  function payLink(invoice) {
    if (!invoice.pay_url || !/^https:\/\//.test(invoice.pay_url)) return "";
    return el("a", { href: invoice.pay_url, target: "_blank", rel: "noopener noreferrer", class: "pay-link" }, "Pay " + invoice.number + " online");
  }

  function showInvoice(invoice) {
    $("invoice-number").textContent = invoice.number + " (" + invoice.status + ")";
    rows(
      "invoice-lines",
      invoice.lines,
      (l) => [
        l.description,
        l.meter ? number(l.quantity) : "",
        l.meter ? (l.unit_amount_decimal || "") + " ¢" : "",
        money(l.amount_cents, invoice.currency),
      ],
      "no lines",
    );
    const unpaid = invoice.status === "open";
    $("invoice-pay").hidden = !unpaid;
    if (unpaid && invoice.pay_url) {
      fill("invoice-pay", "To pay " + money(invoice.total_cents, invoice.currency) + ": ", payLink(invoice),
        " (Stripe's secure page). It shows as paid here once Stripe confirms.");
    } else {
      $("invoice-pay").textContent = unpaid
        ? "To pay " + money(invoice.total_cents, invoice.currency) + ", transfer the amount quoting " + invoice.number +
          " (or use the payment link sent with the invoice); it shows as paid here once received."
        : "";
    }
    $("invoice-detail").hidden = false;
  }

  async function loadCatalogue() {
    const r = await fetch("/v1/plans", { cache: "no-store", credentials: "omit" });
    catalogue = r.ok ? (await r.json()).plans : [];
    fill(
      "plan-name",
      ...catalogue.map((p) =>
        el("option", { value: p.name, selected: Boolean(tenant) && p.name === tenant.plan }, p.name + " — " + money(p.price_cents, p.currency) + " a " + p.period),
      ),
    );
    renderSettings();
  }

  async function previewPlan() {
    const plan = $("plan-name").value;
    const preview = await call("GET", "/v1/plan/preview?plan=" + encodeURIComponent(plan));
    const p = preview.proration;
    $("plan-preview-text").textContent =
      "Moving from " + preview.current_plan + " to " + preview.plan + " now credits " + money(p.credit_cents, p.currency) +
      " and charges " + money(p.charge_cents, p.currency) + " on your next invoice; answers then use " + preview.model +
      " with " + preview.retrieval_mode + " retrieval.";
    rows("plan-preview-lines", preview.lines, (l) => [l.description, money(l.amount_cents, p.currency)], "nothing to prorate");
    $("plan-preview").hidden = false;
    $("plan-preview").setAttribute("data-plan", plan);
    $("plan-confirm").focus();
  }

  async function confirmPlan() {
    const plan = $("plan-preview").getAttribute("data-plan");
    const changed = await call("POST", "/v1/plan", { plan });
    const p = changed.proration;
    const result = $("plan-result");
    result.textContent =
      "Plan " + changed.previous_plan + " → " + changed.plan +
      (changed.pending_plan ? " (switching once the index is ready)" : "") +
      ". Proration: credit " + money(p.credit_cents, p.currency) + ", charge " + money(p.charge_cents, p.currency) + ".";
    result.hidden = false;
    $("plan-preview").hidden = true;
    await loadAll();
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

  // ---- settings ---------------------------------------------------------------------------------------

  // The model and retrieval mode choices are the plan's; the page says where a choice needs another plan.
  function renderSettings() {
    if (!tenant) return;
    const plan = catalogue.find((p) => p.name === tenant.plan);
    const models = plan ? plan.models : [tenant.config.model];
    const modes = plan ? plan.retrieval_modes : [tenant.config.retrieval_mode];
    fill("settings-model", ...models.map((m) => el("option", { value: m, selected: m === tenant.config.model }, m)));
    fill("settings-mode", ...modes.map((m) => el("option", { value: m, selected: m === tenant.config.retrieval_mode }, m)));
    $("settings-prompt").value = tenant.config.system_prompt;
    const others = catalogue
      .filter((p) => p.name !== tenant.plan)
      .flatMap((p) => p.models.concat(p.retrieval_modes).filter((x) => !models.includes(x) && !modes.includes(x)).map((x) => x + " (" + p.name + ")"));
    $("settings-plan").textContent =
      "The " + tenant.plan + " plan offers the models " + models.join(", ") + "; retrieval: " + modes.join(", ") + "." +
      (others.length ? " Other plans add " + Array.from(new Set(others)).join(", ") + "; change plan under Billing." : "");
  }

  async function saveSettings() {
    const changed = await call("PATCH", "/v1/tenant/config", {
      model: $("settings-model").value,
      retrieval_mode: $("settings-mode").value,
      system_prompt: $("settings-prompt").value,
    });
    $("settings-result").textContent = "Saved: " + changed.model + ", " + changed.retrieval_mode + " retrieval.";
    $("settings-result").hidden = false;
    await loadAccount();
  }

  // ---- integrations -----------------------------------------------------------------------------------

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

  // ---- data -------------------------------------------------------------------------------------------

  function renderSubscription() {
    const state = tenant.state;
    const cancelled = state === "cancelled";
    $("subscription-text").textContent = cancelled
      ? "Cancelled: nothing is billed and nothing is served. Reactivating resumes the " + tenant.plan + " plan at once."
      : "The " + tenant.plan + " plan, " + state + ". Cancelling stops billing and service; the data is kept for a while, then erased.";
    $("cancel-subscription").hidden = cancelled || !["trialing", "active", "past_due", "suspended"].includes(state);
    $("reactivate").hidden = !cancelled;
  }

  // Requests an export, waits while it is built, and offers the archive as a download.
  async function startExport() {
    $("export-download").hidden = true;
    const { export_id } = await call("POST", "/v1/export");
    const path = "/v1/export/" + encodeURIComponent(export_id);
    $("export-status").textContent = "Building the archive…";
    for (let attempt = 0; attempt < 240; attempt++) {
      const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
      if (r.status === 200) {
        const archive = await r.blob();
        const link = $("export-download");
        link.setAttribute("href", URL.createObjectURL(archive));
        link.setAttribute("download", "tenantry-" + export_id + ".tar.gz");
        link.hidden = false;
        $("export-status").textContent = "Ready: " + export_id + " (" + bytes(archive.size) + ", SHA-256 " + (r.headers.get("x-export-sha256") || "") + ").";
        return;
      }
      if (r.status !== 202) throw new Error("The export failed (HTTP " + r.status + ").");
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    throw new Error("The export is taking long; request it again later.");
  }

  async function cancelSubscription() {
    if (!window.confirm("Cancel the subscription? Service stops at once and nothing more is billed.")) return;
    await call("POST", "/v1/tenant/cancel");
    await loadAll();
  }

  async function reactivate() {
    await call("POST", "/v1/tenant/reactivate");
    await loadAll();
  }

  async function erase() {
    if ($("erase-confirm").value !== tenant.organization) throw new Error("Type the organisation's name exactly to confirm.");
    await call("DELETE", "/v1/tenant");
    session.forget();
    showSignedIn(false);
    showError(new Error("The organisation's data is being erased; its keys no longer work."));
  }

  // ---- sign-in ----------------------------------------------------------------------------------------

  async function loadAll() {
    await loadAccount();
    await loadEach([
      [loadQuotasAndUsage, "quotas-note"],
      [loadHistory, null],
      [loadDocuments, "documents-note"],
      [loadKeys, null],
      [loadInvoices, null],
      [loadUpcoming, null],
      [loadCredits, null],
      [loadWebhooks, null],
      [loadAlerts, null],
      [loadCatalogue, null],
    ]);
  }

  // Opens a session with `credentials` (email and password, a link's token, or an API key), or resumes the one
  // the cookie holds when there are none, then loads every section.
  async function signIn(credentials) {
    try {
      clearError();
      const current = credentials === undefined ? await session.current(SESSION) : await session.open(SESSION, credentials);
      if (!current) {
        showSignedIn(false);
        return;
      }
      await loadAccount();
      showSignedIn(true);
      show(sectionOf(location.pathname));
      await loadAll();
    } catch (e) {
      showSignedIn(false);
      if (e.status === 403 && e.problem && /scope/.test(e.problem.detail || "")) {
        showError(new Error("This key lacks the admin scope the portal needs. Sign in with the account's email, the key given at signup, or an admin key created under Keys."));
      } else {
        showError(e);
      }
    }
  }

  async function sendLink() {
    const email = $("sign-in-email").value.trim();
    if (!$("sign-in-email").checkValidity() || email === "") throw new Error("Enter the account's email first.");
    const sent = await api("POST", "/v1/session/link", { email });
    $("link-sent").textContent = sent.detail[0].toUpperCase() + sent.detail.slice(1) + ".";
    $("link-sent").hidden = false;
  }

  async function setPassword() {
    const password = $("new-password").value;
    if (password !== $("repeat-password").value) throw new Error("The two passwords differ.");
    await call("PUT", "/v1/tenant/password", { password });
    $("password-form").reset();
    $("password-result").textContent = "Password set. Sign in with " + tenant.email + " and it; other sessions were signed out.";
    $("password-result").hidden = false;
  }

  function onSubmit(id, handler) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(handler);
    });
  }

  function onClick(id, handler) {
    $(id).addEventListener("click", () => guarded(handler));
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const link of document.querySelectorAll("#nav a")) {
      link.addEventListener("click", (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey) return;
        event.preventDefault();
        go(link.getAttribute("data-section"));
      });
    }
    window.addEventListener("popstate", () => show(sectionOf(location.pathname)));

    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const credentials = { email: $("sign-in-email").value.trim(), password: $("sign-in-password").value };
      $("sign-in-password").value = "";
      signIn(credentials);
    });
    onClick("send-link", sendLink);
    $("key-sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("api-key").value.trim();
      $("api-key").value = "";
      signIn({ api_key: candidate });
    });
    $("sign-out").addEventListener("click", () =>
      guarded(async () => {
        await session.close(SESSION);
        showSignedIn(false);
      }));
    onSubmit("password-form", setPassword);

    $("history-meter").addEventListener("change", () => guarded(loadHistory));
    $("history-granularity").addEventListener("change", () => guarded(loadHistory));
    onClick("history-csv", () => download("/v1/usage/timeseries?" + historyQuery() + "&format=csv", "usage.csv"));

    onSubmit("ask-form", () => ask($("ask-question").value.trim()));

    onSubmit("upload-form", upload);
    $("doc-search").addEventListener("input", () => {
      documentPage = 0;
      renderDocuments();
    });
    $("doc-search-form").addEventListener("submit", (event) => event.preventDefault());
    $("doc-prev").addEventListener("click", () => {
      documentPage -= 1;
      renderDocuments();
    });
    $("doc-next").addEventListener("click", () => {
      documentPage += 1;
      renderDocuments();
    });

    onSubmit("key-form", async () => {
      const scopes = Array.from(document.querySelectorAll("#key-form input[name=scope]:checked"), (c) => c.value);
      const created = await call("POST", "/v1/keys", { name: $("key-name").value.trim(), scopes });
      $("key-form").reset();
      $("new-key-value").textContent = created.api_key;
      $("new-key").hidden = false;
      await loadKeys();
    });
    onClick("copy-key", async () => {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      $("copy-key").textContent = "Copied";
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

    onSubmit("settings-form", saveSettings);
    onSubmit("cap-form", async () => {
      const raw = $("cap-cents").value.trim();
      await call("PATCH", "/v1/tenant/config", { overage_limit_cents: raw === "" ? null : Number(raw) });
      await loadAccount();
    });

    onSubmit("plan-form", previewPlan);
    onClick("plan-confirm", confirmPlan);
    $("plan-cancel").addEventListener("click", () => {
      $("plan-preview").hidden = true;
    });

    onClick("export-start", startExport);
    onClick("cancel-subscription", cancelSubscription);
    onClick("reactivate", reactivate);
    $("erase-confirm").addEventListener("input", () => {
      $("erase-submit").disabled = !tenant || $("erase-confirm").value !== tenant.organization;
    });
    onSubmit("erase-form", erase);

    // A sign-in link lands here with its token in the query: use it once, and take it out of the address bar
    // and the history.
    const link = new URLSearchParams(location.search).get("sign_in");
    if (link) {
      history.replaceState(null, "", location.pathname);
      signIn({ link_token: link });
    } else {
      signIn();
    }
  });
})();
