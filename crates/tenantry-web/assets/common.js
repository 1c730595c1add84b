// Shared by the portal and the console: DOM building without HTML parsing, the JSON API client and the
// session, the error area and number formatting. Everything the API returns is untrusted (tenant names,
// document titles…), so it only ever reaches the page as text nodes and attribute values, never through an
// HTML parser.
"use strict";

window.Tenantry = (function () {
  const SVG_NS = "http://www.w3.org/2000/svg";

  // el("td", {class: "num"}, "text", childNode, …): attributes are set with setAttribute, functions under
  // "on…" become event listeners, strings and numbers become text nodes.
  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function fill(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren();
    build(node, {}, children);
    return node;
  }

  // A table body: one row per item, each cell text or a node, aligned like its column's header (`num`);
  // `onRow` makes rows clickable.
  function rows(id, items, cells, empty, onRow) {
    const body = fill(id);
    const heads = Array.from(body.closest("table").querySelectorAll("thead th"));
    if (items.length === 0) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: heads.length || 1 }, empty)));
      return;
    }
    for (const item of items) {
      const tr = el("tr", {}, ...cells(item).map((c, i) => el("td", { class: (heads[i] && heads[i].className) || null }, c)));
      if (onRow) {
        tr.classList.add("clickable");
        tr.tabIndex = 0;
        tr.addEventListener("click", () => onRow(item));
        tr.addEventListener("keydown", (e) => {
          if (e.key === "Enter") onRow(item);
        });
      }
      body.append(tr);
    }
  }

  class ApiError extends Error {
    constructor(status, problem) {
      const title = (problem && problem.title) || "HTTP " + status;
      const detail = problem && problem.detail;
      super(detail ? title + ": " + detail : title);
      this.status = status;
      this.problem = problem;
    }
  }

  // The signed-in session's CSRF token: the session itself is an HttpOnly cookie the script never sees; every
  // request that changes something carries this token, which only a page of this origin can have read.
  let csrfToken = null;

  // Calls the JSON API as the signed-in session; problem+json answers become ApiError.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (csrfToken && method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const r = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "same-origin" });
    if (r.status === 204) return null;
    const type = r.headers.get("content-type") || "";
    const data = type.includes("json") ? await r.json() : { detail: await r.text() };
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // The session at `path` (/v1/session or /admin/session): opens one with `credentials`, or reads the one
  // the cookie holds; either way keeps its CSRF token. `null` when not signed in.
  const session = {
    async open(path, credentials) {
      const opened = await api("POST", path, credentials);
      csrfToken = opened.csrf_token;
      return opened;
    },
    async current(path) {
      try {
        const current = await api("GET", path);
        csrfToken = current.csrf_token;
        return current;
      } catch (e) {
        if (e.status === 401) return null;
        throw e;
      }
    },
    async close(path) {
      try {
        await api("DELETE", path);
      } catch (e) {
        if (e.status !== 401) throw e;
      } finally {
        csrfToken = null;
      }
    },
    forget() {
      csrfToken = null;
    },
  };

  // Fetches a file as the signed-in session and hands it to the browser as a download named `name`.
  async function download(path, name) {
    const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) {
      const type = r.headers.get("content-type") || "";
      throw new ApiError(r.status, type.includes("json") ? await r.json() : { detail: await r.text() });
    }
    const url = URL.createObjectURL(await r.blob());
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function showError(error) {
    const area = document.getElementById("error");
    area.textContent = error instanceof Error ? error.message : String(error);
    area.hidden = false;
  }

  function clearError() {
    const area = document.getElementById("error");
    area.textContent = "";
    area.hidden = true;
  }

  // Runs an action, showing its failure in the error area instead of losing it in the console.
  async function guarded(action) {
    try {
      clearError();
      await action();
    } catch (e) {
      showError(e);
    }
  }

  const number = (n) => Number(n).toLocaleString("en-US");

  function money(cents, currency) {
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(cents);
    const units = Math.floor(abs / 100).toLocaleString("en-US");
    return sign + units + "." + String(abs % 100).padStart(2, "0") + " " + String(currency || "").toUpperCase();
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = Number(n);
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
  }

  const date = (rfc3339) => (rfc3339 ? String(rfc3339).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "—");

  // A horizontal bar chart as inline SVG: one bar per {label, value, max, text}.
  function barChart(id, bars) {
    const rowHeight = 26;
    const labelWidth = 130;
    const barWidth = 300;
    const chart = fill(id);
    chart.setAttribute("viewBox", "0 0 " + (labelWidth + barWidth + 140) + " " + rowHeight * bars.length);
    chart.setAttribute("height", String(rowHeight * bars.length));
    bars.forEach((bar, i) => {
      const y = i * rowHeight;
      const share = bar.max > 0 ? Math.min(bar.value / bar.max, 1) : 0;
      // Any use at all stays visible, however small its share.
      const width = bar.value > 0 ? Math.max(Math.round(barWidth * share), 2) : 0;
      chart.append(
        svg("text", { x: 0, y: y + 17, class: "chart-label" }, bar.label),
        svg("rect", { x: labelWidth, y: y + 4, width: barWidth, height: 18, class: "chart-track" }),
        svg("rect", { x: labelWidth, y: y + 4, width, height: 18, class: "chart-bar" }),
        svg("text", { x: labelWidth + barWidth + 8, y: y + 17, class: "chart-value" }, bar.text),
      );
    });
  }

  // A column chart over time as inline SVG: one column per {label, value}, in order, the largest full height,
  // with the first, middle and last labels under the axis.
  function columnChart(id, columns, format) {
    const height = 160;
    const top = 16;
    const bottom = 22;
    const width = 640;
    const chart = fill(id);
    chart.setAttribute("viewBox", "0 0 " + width + " " + (top + height + bottom));
    const max = Math.max(0, ...columns.map((c) => c.value));
    const step = columns.length ? width / columns.length : width;
    chart.append(svg("line", { x1: 0, x2: width, y1: top + height, y2: top + height, class: "chart-axis" }));
    if (columns.length === 0 || max === 0) {
      chart.append(svg("text", { x: width / 2, y: top + height / 2, class: "chart-label", "text-anchor": "middle" }, "no usage in this range"));
      return;
    }
    columns.forEach((c, i) => {
      const h = c.value > 0 ? Math.max(Math.round((height * c.value) / max), 1) : 0;
      chart.append(
        svg("rect", { x: i * step + step * 0.1, y: top + height - h, width: Math.min(Math.max(step * 0.8, 1), 40), height: h, class: "chart-bar", "data-value": c.value },
          svg("title", {}, c.label + ": " + format(c.value))),
      );
    });
    const marks = [0, Math.floor((columns.length - 1) / 2), columns.length - 1].filter((v, i, a) => a.indexOf(v) === i);
    for (const i of marks) {
      const anchor = i === 0 ? "start" : i === columns.length - 1 ? "end" : "middle";
      const x = i === 0 ? 0 : i === columns.length - 1 ? width : i * step + step / 2;
      chart.append(svg("text", { x, y: top + height + 16, class: "chart-label", "text-anchor": anchor }, columns[i].label));
    }
    chart.append(svg("text", { x: 0, y: 12, class: "chart-value" }, "max " + format(max)));
  }

  return { el, fill, rows, api, session, ApiError, download, showError, clearError, guarded, number, money, bytes, date, barChart, columnChart };
})();
