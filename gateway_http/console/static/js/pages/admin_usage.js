// Admin: the usage explorer over the ledger (filters by user, key, model, status, time) with CSV export.

import { get, request } from "../api.js";
import { h, field, input, select, button, table, section, statusLine, act, when, num, usd, failure } from "../dom.js";

export const COLUMNS = ["request_id", "created_at", "user", "key_id", "surface", "provider", "provider_key_id", "model", "status",
  "prompt_tokens", "completion_tokens", "estimated", "cost_usd", "latency_ms", "attempts"];
const PAGE = 50;

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(rows) {
  return [COLUMNS.join(","), ...rows.map((r) => COLUMNS.map((c) => csvCell(r[c])).join(","))].join("\r\n") + "\r\n";
}

function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export default async function render(view) {
  view.append(h("h1", null, "Usage explorer"));
  const f = {
    user: input({ name: "user", placeholder: "user id or email" }),
    key_id: input({ name: "key_id", placeholder: "token / API key id" }),
    model: input({ name: "model" }),
    // The ledger's statuses (services/pipeline.py).
    status: select([["", "any"], "ok", "bad_request", "not_found", "rate_limited", "budget_exceeded", "upstream_error",
      "deadline_exceeded", "client_cancelled", "cancelled", "unavailable", "error"], { name: "status" }),
    since: input({ type: "datetime-local", name: "since" }),
    until: input({ type: "datetime-local", name: "until" }),
  };
  const apply = h("button", { type: "submit" }, "Apply filters");
  const exportBtn = button("Export CSV", () => act(exportBtn, status, exportCsv), { class: "secondary" });
  const form = h("form", { class: "grid-form", role: "search" }, field("User", f.user), field("Key id", f.key_id),
    field("Model", f.model), field("Status", f.status), field("Since (UTC)", f.since), field("Until (UTC)", f.until),
    h("div", { class: "row" }, apply, exportBtn));
  const status = statusLine();
  const slot = h("div");
  const pager = h("div", { class: "row pager" });
  view.append(section("Filters", form, status), section("Ledger rows", slot, pager));
  let offset = 0;

  function params() {
    const p = new URLSearchParams();
    for (const k of ["user", "key_id", "model", "status"]) if (f[k].value.trim()) p.set(k, f[k].value.trim());
    for (const k of ["since", "until"]) if (f[k].value) p.set(k, String(Date.parse(f[k].value + "Z") / 1000));
    return p;
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });

  async function load() {
    const p = params();
    p.set("limit", String(PAGE)); p.set("offset", String(offset));
    try {
      const r = await get(`/api/admin/usage?${p}`);
      const rows = r.items || r.data || [];
      const total = r.total ?? (r.pagination ? r.pagination.total : rows.length);
      // A gateway that ignores a filter must not look as if it applied it.
      const ignored = ["status", "model"].filter((k) => f[k].value && rows.some((u) => u[k] !== f[k].value.trim()));
      slot.replaceChildren(h("p", { class: "hint" }, `${num(total)} row(s) match.`),
        ignored.length ? h("p", { class: "error", role: "alert" },
          `This gateway does not filter by ${ignored.join(" and ")} yet: the rows below are not filtered by it.`) : null,
        table(rows, [
        ["Time (UTC)", (u) => when(u.created_at).slice(5, 16)], ["User", (u) => u.user],
        ["Key", (u) => h("code", null, u.key_id)], ["Provider", (u) => u.provider], ["Model", (u) => u.model], ["Status", (u) => u.status],
        ["Prompt", (u) => num(u.prompt_tokens)], ["Completion", (u) => num(u.completion_tokens) + (u.estimated ? " (est.)" : "")],
        ["Cost", (u) => usd(u.cost_usd)], ["Latency", (u) => `${Math.round(u.latency_ms)} ms`],
        ["Request id", (u) => h("code", { class: "small", title: `${u.request_id} via ${u.surface}` }, u.request_id.slice(0, 12) + "…")],
      ], "No ledger row matches these filters.", "Ledger rows"));
      pager.replaceChildren(
        button("Previous", () => { offset = Math.max(0, offset - PAGE); load(); }, { class: "secondary", disabled: offset === 0 }),
        h("span", null, total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${num(total)}` : ""),
        button("Next", () => { offset += PAGE; load(); }, { class: "secondary", disabled: offset + PAGE >= total }));
    } catch (e) {
      slot.replaceChildren(failure(e, "The ledger"));
      pager.replaceChildren();
    }
  }

  // The server's CSV (format=csv), page after page until every matching row is in; a gateway
  // without it gets the same columns built from its JSON pages.
  async function exportCsv() {
    const p = params();
    p.set("limit", "1");
    const first = await get(`/api/admin/usage?${p}`);
    const total = first.total ?? (first.pagination ? first.pagination.total : 0);
    p.set("limit", "500");
    p.set("format", "csv");
    const parts = [];
    let header = null, got = 0, serverCsv = true;
    while (got < total || header === null) {
      p.set("offset", String(got));
      const res = await request("GET", `/api/admin/usage?${p}`, undefined, { raw: true, headers: { Accept: "text/csv" } });
      if (!(res.headers.get("Content-Type") || "").startsWith("text/csv")) { serverCsv = false; break; }
      const lines = (await res.text()).split(/\r?\n/);
      if (lines.length && lines[lines.length - 1] === "") lines.pop();
      if (header === null) header = lines[0] || "";
      const rows = lines.slice(1);
      if (!rows.length) break;
      parts.push(...rows);
      got += rows.length;
    }
    let blob;
    if (serverCsv) {
      blob = new Blob([[header, ...parts].join("\n") + "\n"], { type: "text/csv" });
    } else {
      p.delete("format");
      const rows = [];
      for (let off = 0; ; off += 500) {
        p.set("offset", String(off));
        const r = await get(`/api/admin/usage?${p}`);
        const items = r.items || r.data || [];
        rows.push(...items);
        if (items.length < 500 || rows.length >= total) break;
      }
      blob = new Blob([toCsv(rows)], { type: "text/csv" });
    }
    download(`tollgate-usage-${new Date().toISOString().slice(0, 10)}.csv`, blob);
    status.ok(`CSV downloaded (${num(serverCsv ? got : total)} rows).`);
  }

  await load();
}
