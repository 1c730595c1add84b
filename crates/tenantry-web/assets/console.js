// The operator console: signs in with the operator token (into an HttpOnly session cookie) and shows the
// overview (tenants by state, revenue, funnel, dunning, integration health), the tenants, and one tenant's
// history with its notifications and intervention triggers. All values are rendered as text.
"use strict";

(function () {
  const { el, fill, rows, api: call, session, guarded, showError, clearError, number, money, date, columnChart } = window.Tenantry;
  const $ = (id) => document.getElementById(id);

  const SESSION = "/admin/session";
  const MILESTONES = ["signed_up", "provisioned", "first_document", "first_query", "activated"];
  // Notifications sent because a tenant stalled or slowed down (PRODUCT.md: intervention triggers).
  const INTERVENTIONS = {
    nudge_no_document: "Nudge: no document yet",
    nudge_no_query: "Nudge: no question yet",
    usage_dropped: "Usage dropped",
  };
  // Jobs that will check a tenant and may trigger an intervention.
  const TRIGGER_JOBS = { nudge: "Nudge check", usage_review: "Weekly usage review" };

  let currency = "usd";
  let selected = null;
  const TENANT_PAGE = 25;
  let tenantOffset = 0;

  const stateBadge = (state) => el("span", { class: "state state-" + state, "data-state": state }, state);

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("app").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    $("refresh").hidden = !signedIn;
    if (!signedIn) {
      $("generated-at").textContent = "";
      $("tenant-detail").hidden = true;
      selected = null;
    }
  }

  async function loadOverview() {
    const [o, winBack, parked, revenue] = await Promise.all([
      call("GET", "/admin/overview"),
      call("GET", "/admin/win-back"),
      call("GET", "/admin/jobs?state=parked"),
      call("GET", "/admin/revenue?months=12"),
    ]);
    const cents = (n) => money(n, revenue.currency);
    columnChart("mrr-chart", revenue.months.map((m) => ({ label: m.month, value: m.mrr_cents })), cents);
    rows(
      "revenue-rows",
      revenue.months.slice().reverse(),
      (m) => [m.month, cents(m.mrr_cents), number(m.paying_tenants), cents(m.new_cents), cents(m.expansion_cents),
        cents(-m.contraction_cents), cents(-m.churn_cents), cents(m.overage_cents), cents(m.billed_cents), number(m.failed_payments)],
      "no revenue yet",
    );
    currency = o.revenue.currency;
    $("generated-at").textContent = "as of " + date(o.generated_at);
    $("tenants-total").textContent = number(o.tenants_total);
    rows(
      "state-rows",
      Object.entries(o.tenants_by_state),
      ([state, n]) => [stateBadge(state), el("span", { class: "count", "data-state": state }, number(n))],
      "no states",
    );
    const filter = $("state-filter");
    if (filter.options.length === 1) {
      for (const state of Object.keys(o.tenants_by_state)) filter.append(el("option", { value: state }, state));
    }
    const plans = $("plan-filter");
    if (plans.options.length === 1) {
      const catalogue = await fetch("/v1/plans", { cache: "no-store", credentials: "omit" }).then((r) => r.json());
      for (const p of catalogue.plans) plans.append(el("option", { value: p.name }, p.name));
    }

    $("revenue-paid").textContent = money(o.revenue.paid_cents, currency);
    const invoices = (n) => number(n) + (n === 1 ? " invoice" : " invoices");
    $("revenue-paid-count").textContent = invoices(o.revenue.paid_invoices);
    $("revenue-open").textContent = money(o.revenue.open_cents, currency);
    $("revenue-open-count").textContent = invoices(o.revenue.open_invoices);
    $("win-back-sent").textContent = number(winBack.offers_sent);
    $("win-back-accepted").textContent = number(winBack.offers_accepted);

    const top = (o.funnel[0] && o.funnel[0].tenants) || 0;
    rows(
      "funnel-rows",
      o.funnel,
      (step) => [
        step.milestone,
        el("span", { class: "count", "data-milestone": step.milestone }, number(step.tenants)),
        el("span", {}, el("progress", { max: Math.max(top, 1), value: step.tenants }), " ",
          top > 0 ? Math.round((100 * step.tenants) / top) + "%" : "—"),
      ],
      "no tenants yet",
    );

    rows(
      "dunning-rows",
      o.dunning,
      (d) => [d.organization, stateBadge(d.state), d.plan, number(d.open_invoices), money(d.open_cents, currency), date(d.open_since),
        d.next_retry_at ? date(d.next_retry_at) : "no retry left", d.suspends_at ? date(d.suspends_at) : "—"],
      "nobody is behind on payments",
      (d) => showTenant(d.tenant_id),
    );

    const h = o.integrations;
    $("jobs-pending").textContent = number(h.jobs_pending);
    $("jobs-parked").textContent = number(h.jobs_parked);
    $("jobs-done").textContent = number(h.jobs_by_state.done || 0);
    $("outbox").textContent = number(h.notifications_delivered) + " delivered, " + number(h.notifications_undelivered) + " waiting";
    $("payments").textContent = h.payment_provider + " provider";
    $("stripe-events").textContent =
      number(h.stripe_events_received) + " received, " + number(h.stripe_events_unprocessed) + " unprocessed";
    $("analytics").textContent = h.analytics_store + ", " + number(h.analytics_pending) + " events waiting";
    $("webhook-deliveries").textContent =
      number(h.webhook_deliveries_pending) + " waiting, " + number(h.webhook_deliveries_failed) + " failed after three days";
    $("model-errors").textContent = number(h.upstream_model_errors) + " failed or timed out on this node since it started";
    rows(
      "parked-rows",
      parked.jobs,
      (j) => [
        j.kind,
        j.tenant_id || "—",
        number(j.attempts),
        j.last_error || "",
        el("button", { type: "button", class: "secondary", onclick: () => requeue(j) }, "Requeue"),
      ],
      "no parked jobs",
    );
  }

  // One page of the tenants matching the search, filters and sort; the server filters, sorts and counts.
  async function loadTenants() {
    const params = new URLSearchParams({ sort: $("tenant-sort").value, limit: String(TENANT_PAGE), offset: String(tenantOffset) });
    const q = $("tenant-search").value.trim();
    if (q) params.set("q", q);
    if ($("state-filter").value) params.set("state", $("state-filter").value);
    if ($("plan-filter").value) params.set("plan", $("plan-filter").value);
    const { tenants, total } = await call("GET", "/admin/tenants?" + params);
    rows(
      "tenant-rows",
      tenants,
      (t) => [
        t.state === "erased"
          ? el("span", { class: "organization erased", "data-tenant": t.tenant_id }, "erased tenant " + t.tenant_id)
          : el("span", { class: "organization", "data-tenant": t.tenant_id }, t.organization),
        t.state === "erased" ? "—" : t.email,
        stateBadge(t.state),
        t.plan,
        date(t.created_at),
      ],
      q ? "no tenant matches" : "no tenants",
      (t) => showTenant(t.tenant_id),
    );
    const last = Math.min(tenantOffset + tenants.length, total);
    $("tenant-page").textContent = total ? number(tenantOffset + 1) + "–" + number(last) + " of " + number(total) : "none";
    $("tenant-prev").disabled = tenantOffset === 0;
    $("tenant-next").disabled = last >= total;
  }

  function reloadTenants() {
    tenantOffset = 0;
    return guarded(loadTenants);
  }

  // An operator action on the tenant shown: confirmed first, then the tenant and the overview reloaded.
  async function act(question, method, path, body) {
    if (!window.confirm(question)) return;
    await guarded(async () => {
      await call(method, path, body);
      await loadOverview();
      await loadTenants();
      await showTenant(selected);
    });
  }

  function invoiceActions(invoice) {
    const base = "/admin/invoices/" + encodeURIComponent(invoice.invoice_id);
    if (invoice.status !== "open") return "";
    return el(
      "span",
      { class: "actions" },
      el("button", { type: "button", class: "secondary", "data-action": "paid", onclick: () =>
        act("Mark " + invoice.number + " paid (" + money(invoice.total_cents, invoice.currency) + " received)?", "POST", base + "/payment", { outcome: "succeeded" }) }, "Mark paid"),
      el("button", { type: "button", class: "secondary", "data-action": "void", onclick: () =>
        act("Void " + invoice.number + "? It will never be collected and is not owed.", "POST", base + "/void") }, "Void"),
      el("button", { type: "button", class: "danger", "data-action": "uncollectible", onclick: () =>
        act("Write off " + invoice.number + " as uncollectible?", "POST", base + "/mark-uncollectible") }, "Write off"),
    );
  }

  async function showTenant(id) {
    await guarded(async () => {
      const d = await call("GET", "/admin/tenants/" + encodeURIComponent(id));
      selected = id;
      $("detail-organization").textContent = d.state === "erased" ? "erased tenant" : d.organization;
      $("detail-id").textContent = d.tenant_id;
      $("detail-email").textContent = d.email;
      fill("detail-state", stateBadge(d.state));
      $("detail-suspend").hidden = !["trialing", "active", "past_due"].includes(d.state);
      $("detail-reactivate").hidden = d.state !== "suspended";
      $("detail-plan").textContent = d.plan;
      $("detail-model").textContent = d.config.model + " (" + d.config.retrieval_mode + ")";
      $("detail-documents").textContent = number(d.documents);
      $("detail-keys").textContent = number(d.active_keys) + " active";
      $("detail-trial").textContent = d.trial_ends_at ? date(d.trial_ends_at) : "no trial";
      $("trial-form").hidden = d.state !== "trialing";

      const milestones = d.events.filter((e) => e.from === null || e.from === undefined);
      const transitions = d.events.filter((e) => e.from !== null && e.from !== undefined);
      rows(
        "milestone-rows",
        MILESTONES,
        (m) => {
          const reached = milestones.find((e) => e.event === m);
          return [m, el("span", { class: "milestone", "data-milestone": m }, reached ? date(reached.at) : "not yet")];
        },
        "",
      );

      const sent = d.notifications
        .filter((n) => INTERVENTIONS[n.template])
        .map((n) => [INTERVENTIONS[n.template], n.delivered_at ? "sent" : "queued", n.created_at, n.template]);
      const scheduled = d.jobs
        .filter((j) => TRIGGER_JOBS[j.kind] && (j.state === "queued" || j.state === "running"))
        .map((j) => {
          const what = j.payload && typeof j.payload.nudge === "string" ? " (" + j.payload.nudge + ")" : "";
          return [TRIGGER_JOBS[j.kind] + what, "scheduled", j.run_at, j.kind];
        });
      rows(
        "intervention-rows",
        sent.concat(scheduled),
        ([label, status, at, kind]) => [el("span", { class: "intervention", "data-trigger": kind }, label), status, date(at)],
        "no interventions",
      );
      rows(
        "notification-rows",
        d.notifications,
        (n) => [el("span", { class: "template", "data-template": n.template }, n.template), n.subject, date(n.created_at), date(n.delivered_at)],
        "no notifications",
      );
      rows(
        "event-rows",
        transitions,
        (e) => [el("span", { class: "event" }, e.event), e.from, e.to, date(e.at)],
        "no lifecycle transitions",
      );
      rows(
        "detail-invoice-rows",
        d.invoices,
        (i) => [i.number, i.kind, el("span", { class: "invoice-status" }, i.status), money(i.total_cents, i.currency), invoiceActions(i)],
        "no invoices",
      );
      $("detail-credit-balance").textContent = money(d.credits.balance_cents, d.credits.currency);
      rows(
        "detail-credit-rows",
        d.credits.grants,
        (g) => [g.reason, money(g.amount_cents, d.credits.currency), money(g.remaining_cents, d.credits.currency), g.expires_at ? date(g.expires_at) : "never", date(g.created_at)],
        "no credit granted",
      );
      rows(
        "detail-webhook-rows",
        d.webhooks,
        (w) => [w.url, w.events.join(", "), date(w.created_at)],
        "no webhook endpoints",
      );
      rows(
        "detail-job-rows",
        d.jobs,
        (j) => [j.kind, j.state, date(j.run_at), number(j.attempts), j.last_error || ""],
        "no jobs",
      );
      await Promise.all([loadTenantUsage(id), loadTimeline(d)]);
      for (const tr of document.querySelectorAll("#tenant-rows tr")) {
        const cell = tr.querySelector("[data-tenant]");
        tr.classList.toggle("selected", Boolean(cell) && cell.getAttribute("data-tenant") === id);
      }
      $("tenant-detail").hidden = false;
    });
  }

  // The tenant's daily usage of one meter over the last 30 days, every day a column (quiet days at zero).
  async function loadTenantUsage(id) {
    const to = new Date();
    const from = new Date(to.getTime() - 30 * 86400000);
    const meter = $("detail-usage-meter").value;
    const series = await call("GET", "/admin/tenants/" + encodeURIComponent(id) + "/usage/timeseries?granularity=day&from=" +
      encodeURIComponent(from.toISOString()) + "&to=" + encodeURIComponent(to.toISOString()));
    const byDay = new Map();
    for (let t = Date.parse(series.from); t < Date.parse(series.to); t += 86400000) byDay.set(t, 0);
    for (const p of series.points) {
      if (p.meter === meter) byDay.set(Date.parse(p.start), (byDay.get(Date.parse(p.start)) || 0) + p.quantity);
    }
    const columns = Array.from(byDay, ([t, value]) => ({ label: new Date(t).toISOString().slice(0, 10), value }));
    columnChart("detail-usage-chart", columns, number);
  }

  // One list of what happened to the tenant: its audit trail, its activation milestones and its messages.
  async function loadTimeline(d) {
    const audit = await call("GET", "/admin/audit?tenant_id=" + encodeURIComponent(d.tenant_id) + "&limit=1000");
    const items = [
      ...audit.entries.map((e) => ({ at: e.at, what: e.action, by: e.actor, detail: e.target })),
      ...d.events.filter((e) => e.from === null || e.from === undefined)
        .map((e) => ({ at: e.at, what: "milestone: " + e.event, by: "system", detail: "" })),
      ...d.notifications.map((n) => ({ at: n.created_at, what: "notification: " + n.template, by: "system", detail: n.subject })),
    ];
    items.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    rows("timeline-rows", items.slice(0, 200), (i) => [date(i.at), el("span", { class: "timeline-what" }, i.what), i.by, i.detail], "nothing yet");
  }

  async function requeue(job) {
    await guarded(async () => {
      await call("POST", "/admin/jobs/" + encodeURIComponent(job.job_id) + "/requeue");
      await loadOverview();
    });
  }

  async function loadAll() {
    await loadOverview();
    await loadTenants();
    if (selected) await showTenant(selected);
  }

  // Opens a console session with the operator token (the session, not the token, is what the browser keeps),
  // or resumes the one the cookie already holds.
  async function signIn(candidate) {
    try {
      clearError();
      const current = candidate === undefined
        ? await session.current(SESSION)
        : await session.open(SESSION, { token: candidate });
      if (!current) {
        showSignedIn(false);
        return;
      }
      showSignedIn(true);
      await loadAll();
    } catch (e) {
      showSignedIn(false);
      showError(e);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("operator-token").value.trim();
      $("operator-token").value = "";
      signIn(candidate);
    });
    $("sign-out").addEventListener("click", () =>
      guarded(async () => {
        await session.close(SESSION);
        showSignedIn(false);
      }));
    $("refresh").addEventListener("click", () => guarded(loadAll));
    $("state-filter").addEventListener("change", reloadTenants);
    $("plan-filter").addEventListener("change", reloadTenants);
    $("tenant-sort").addEventListener("change", reloadTenants);
    let typing = null;
    $("tenant-search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(reloadTenants, 250);
    });
    $("tenant-prev").addEventListener("click", () => {
      tenantOffset = Math.max(tenantOffset - TENANT_PAGE, 0);
      guarded(loadTenants);
    });
    $("tenant-next").addEventListener("click", () => {
      tenantOffset += TENANT_PAGE;
      guarded(loadTenants);
    });
    $("detail-suspend").addEventListener("click", () =>
      act("Suspend " + $("detail-organization").textContent + "? Its API answers 402 until reactivated.", "POST",
        "/admin/tenants/" + encodeURIComponent(selected) + "/suspend"));
    $("detail-reactivate").addEventListener("click", () =>
      act("Reactivate " + $("detail-organization").textContent + "?", "POST",
        "/admin/tenants/" + encodeURIComponent(selected) + "/reactivate"));
    $("filter-form").addEventListener("submit", (event) => event.preventDefault());
    $("detail-usage-meter").addEventListener("change", () => selected && guarded(() => loadTenantUsage(selected)));
    $("trial-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const days = Number($("trial-days").value);
      act("Extend " + $("detail-organization").textContent + "'s trial by " + days + " days? It is billed when the new trial ends.",
        "POST", "/admin/tenants/" + encodeURIComponent(selected) + "/trial", { days });
    });
    $("credit-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(async () => {
        if (!selected) return;
        const body = { amount_cents: Number($("credit-cents").value), reason: $("credit-reason").value.trim() };
        const expires = $("credit-expires").value;
        if (expires) body.expires_at = expires + "T00:00:00Z";
        const whom = $("detail-organization").textContent;
        if (!window.confirm("Grant " + money(body.amount_cents, currency) + " of credit to " + whom + "? It pays their next invoices.")) return;
        await call("POST", "/admin/tenants/" + encodeURIComponent(selected) + "/credits", body);
        $("credit-form").reset();
        await showTenant(selected);
      });
    });

    signIn();
  });
})();
