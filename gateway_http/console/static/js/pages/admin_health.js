// Admin: router health per provider key, refreshed every 3 seconds without a reload.

import { get } from "../api.js";
import { h, table, section, failure, num } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Router health"));
  const summary = h("p", { class: "hint", "aria-live": "polite" });
  const slot = h("div");
  const updated = h("p", { class: "hint" });
  view.append(section("Providers and keys", summary, slot, updated));

  async function load() {
    let health, limits = null, stats = null;
    try {
      [health, limits, stats] = await Promise.all([get("/router/health"), get("/router/rate-limits").catch(() => null),
        get("/router/stats").catch(() => null)]);
    } catch (e) {
      slot.replaceChildren(failure(e, "Router health"));
      return;
    }
    const key = (s) => `${s.provider}/${s.key_id}`;
    const lim = new Map((limits && limits.rate_limiting || []).map((r) => [key(r), r]));
    const st = new Map((stats && stats.services || []).map((r) => [key(r), r]));
    summary.textContent = `Overall: ${health.overall_status}: ${health.available_services} of ${health.total_services} keys available.`;
    slot.replaceChildren(table(health.services || [], [
      ["Provider", (s) => s.provider], ["Key", (s) => h("code", null, s.key_id)],
      ["State", (s) => h("span", { class: `badge ${s.available ? "active" : "suspended"}` }, s.status)],
      ["Breaker", (s) => s.breaker || "closed"],
      ["Cool-down", (s) => (s.cooldown_s ? `${s.cooldown_s.toFixed(1)} s` : "none")],
      ["Latency", (s) => { const x = st.get(key(s)); return x && x.latency_ms !== null ? `${x.latency_ms} ms` : ""; }],
      ["Error rate", (s) => { const x = st.get(key(s)); return x && x.requests ? `${((100 * x.failures) / x.requests).toFixed(1)} % of ${num(x.requests)}` : "no requests"; }],
      ["Quota left", (s) => {
        const x = lim.get(key(s));
        if (!x) return "";
        const part = (q, unit) => (q && q.limit ? `${num(q.remaining)} ${unit}` : null);
        return [part(x.rpm, "this minute"), part(x.daily, "today")].filter(Boolean).join(", ") || "unlimited";
      }],
    ], "No provider key is configured: only the built-in demo model answers.", "Router health"));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  }
  await load();
  const timer = setInterval(load, 3000);
  return () => clearInterval(timer);
}
