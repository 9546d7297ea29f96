// Usage and spend this period (charts by day and by model), quota bars live from the limiter,
// and the latest ledger rows.

import { get } from "../api.js";
import { h, table, section, when, num, usd, failure } from "../dom.js";
import { columns, rows } from "../chart.js";

function monthStart() {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1));
}

const ts = (v) => (typeof v === "number" ? v * 1000 : Date.parse(v));

// The summary from the accounts API; on a gateway without it, the same sums over the own ledger.
async function summary() {
  try {
    return await get("/api/usage/summary");
  } catch (e) {
    if (!e.missing) throw e;
  }
  const since = monthStart();
  const all = [];
  for (let offset = 0; offset < 5000; offset += 500) {
    const r = await get(`/api/usage?limit=500&offset=${offset}&since=${since.getTime() / 1000}`);
    const items = r.items || r.data || [];
    all.push(...items);
    if (items.length < 500) break;
  }
  const byDay = new Map(), byModel = new Map();
  const out = { period: { since: since.toISOString(), until: new Date().toISOString() }, requests: 0, prompt_tokens: 0,
    completion_tokens: 0, cost_usd: 0, by_day: [], by_model: [], derived: true };
  const add = (m, k, row) => {
    const e = m.get(k) || { requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 };
    e.requests += 1; e.prompt_tokens += row.prompt_tokens; e.completion_tokens += row.completion_tokens; e.cost_usd += row.cost_usd;
    m.set(k, e);
  };
  for (const row of all) {
    add(byDay, new Date(ts(row.created_at)).toISOString().slice(0, 10), row);
    add(byModel, row.model || "(unknown)", row);
    out.requests += 1; out.prompt_tokens += row.prompt_tokens; out.completion_tokens += row.completion_tokens; out.cost_usd += row.cost_usd;
  }
  out.by_day = [...byDay].map(([date, v]) => ({ date, ...v }));
  out.by_model = [...byModel].map(([model, v]) => ({ model, ...v }));
  return out;
}

// Every day of the period, zero where nothing happened, so the chart's x axis is time.
function days(s) {
  const have = new Map((s.by_day || []).map((d) => [d.date, d]));
  const out = [];
  const start = new Date(s.period && s.period.since ? s.period.since : monthStart());
  const end = new Date(Math.min(Date.now(), s.period && s.period.until ? Date.parse(s.period.until) : Date.now()));
  for (let d = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate())); d <= end; d.setUTCDate(d.getUTCDate() + 1)) {
    const key = d.toISOString().slice(0, 10);
    out.push(have.get(key) || { date: key, requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 });
  }
  return out;
}

export default async function render(view) {
  view.append(h("h1", null, "Usage & quota"));
  const quotaSlot = h("div", { class: "quota" }, h("p", { class: "hint" }, "Loading your limits…"));
  const totalsSlot = h("div");
  const chartsSlot = h("div", { class: "charts" });
  const recentSlot = h("div");
  view.append(section("Quota (live)", quotaSlot), section("This month", totalsSlot, chartsSlot), section("Latest requests", recentSlot));

  async function loadQuota() {
    try {
      const q = await get("/api/quota");
      const limits = q.limits || [];
      if (!limits.length) {
        quotaSlot.replaceChildren(h("p", { class: "empty" }, `Your plan${q.plan ? ` (${q.plan})` : ""} has no limits set.`));
        return;
      }
      quotaSlot.replaceChildren(h("p", { class: "hint" }, `Plan: ${q.plan || "—"}. Refreshes every 5 seconds.`),
        ...limits.map((l) => quotaBar(l)));
    } catch (e) {
      quotaSlot.replaceChildren(failure(e, "Your quota"));
      return "stop";
    }
  }

  const money = (n) => n.startsWith && n.startsWith("budget_usd");
  function quotaBar(l) {
    const pct = l.limit ? Math.min(100, (100 * l.used) / l.limit) : 0;
    const fmt = money(l.name) ? usd : num;
    const fill = h("span", { class: pct >= 90 ? "fill hot" : pct >= 70 ? "fill warm" : "fill" });
    fill.style.width = `${pct}%`; // CSSOM, allowed under the CSP (no inline style attribute)
    return h("div", { class: "qbar" },
      h("div", { class: "qhead" }, h("span", null, l.label || l.name),
        h("span", null, `${fmt(l.used)} of ${fmt(l.limit)} used${l.reset_at ? ` · resets ${when(l.reset_at)}` : ""}`)),
      h("div", { class: "track", role: "progressbar", "aria-label": l.label || l.name, "aria-valuemin": 0,
        "aria-valuemax": l.limit, "aria-valuenow": l.used }, fill));
  }

  try {
    const s = await summary();
    totalsSlot.replaceChildren(h("dl", { class: "stats" },
      stat("Requests", num(s.requests)), stat("Prompt tokens", num(s.prompt_tokens)),
      stat("Completion tokens", num(s.completion_tokens)), stat("Spend", usd(s.cost_usd))));
    if (!s.requests) {
      chartsSlot.replaceChildren(h("p", { class: "empty" }, "No requests this month yet. Create a token and call the gateway, or try the ",
        h("a", { href: "#/playground" }, "playground"), "."));
    } else {
      const d = days(s);
      const models = [...(s.by_model || [])].sort((a, b) => b.cost_usd - a.cost_usd || b.requests - a.requests);
      const byCost = s.cost_usd > 0;
      chartsSlot.replaceChildren(
        h("figure", null, h("figcaption", null, byCost ? "Spend by day (USD)" : "Requests by day"),
          columns(d.map((x) => ({ label: x.date.slice(8), value: byCost ? x.cost_usd : x.requests })),
            { title: byCost ? "Spend by day" : "Requests by day", fmt: byCost ? usd : num })),
        h("figure", null, h("figcaption", null, "By model"),
          rows(models.map((m) => ({ label: m.model, value: byCost ? m.cost_usd : m.requests })),
            { title: "Usage by model", fmt: byCost ? usd : num }),
          table(models, [["Model", (m) => m.model], ["Requests", (m) => num(m.requests)],
            ["Tokens", (m) => num(m.prompt_tokens + m.completion_tokens)], ["Cost", (m) => usd(m.cost_usd)]], "", "Usage by model")));
    }
  } catch (e) {
    totalsSlot.replaceChildren(failure(e, "Your usage"));
  }

  try {
    const r = await get("/api/usage?limit=10");
    recentSlot.replaceChildren(table(r.items || r.data || [], [
      ["Time", (u) => when(u.created_at)], ["Model", (u) => u.model], ["Status", (u) => u.status],
      ["Tokens", (u) => num(u.prompt_tokens + u.completion_tokens) + (u.estimated ? " (est.)" : "")],
      ["Cost", (u) => usd(u.cost_usd)], ["Latency", (u) => `${Math.round(u.latency_ms)} ms`],
    ], "No requests yet.", "Latest requests"));
  } catch (e) {
    recentSlot.replaceChildren(failure(e, "Your latest requests"));
  }

  if ((await loadQuota()) === "stop") return null;
  const timer = setInterval(async () => { if ((await loadQuota()) === "stop") clearInterval(timer); }, 5000);
  return () => clearInterval(timer);
}

function stat(label, value) {
  return h("div", null, h("dt", null, label), h("dd", null, value));
}
