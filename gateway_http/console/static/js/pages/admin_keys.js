// Admin: seed 000's management panel: API keys by tier (create, shown once; revoke) and gateway stats.

import { get, post, del } from "../api.js";
import { h, field, input, select, button, table, section, statusLine, act, when, num, usd, failure, copyButton, toast } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Keys & stats"));
  const statsSlot = h("div");
  const listSlot = h("div");
  const status = statusLine();
  const reveal = h("div");
  const name = input({ name: "name", required: true, placeholder: "customer-name" });
  const email = input({ type: "email", name: "email", placeholder: "customer@example.com" });
  let tiers = ["basic", "pro", "enterprise", "explorer", "startup", "growth"]; // the shipped defaults
  try {
    const p = await get("/api/admin/plans");
    const names = (Array.isArray(p) ? p : p.items || []).map((x) => x.name);
    if (names.length) tiers = names;
  } catch { /* keep the defaults */ }
  const tier = select(tiers, { name: "tier" });
  const create = h("button", { type: "submit" }, "Create key");
  const form = h("form", { class: "grid-form", novalidate: true }, field("Name", name), field("Email", email), field("Tier", tier), create);
  view.append(section("Gateway statistics", statsSlot), section("Create an API key", form, status, reveal), section("API keys", listSlot));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!name.value.trim()) { status.fail("Give the key a name (usually the customer's)."); return; }
    act(create, status, async () => {
      const r = await post("/api/admin/keys", { name: name.value.trim(), email: email.value.trim(), tier: tier.value });
      name.value = ""; email.value = "";
      reveal.replaceChildren(h("div", { class: "reveal", role: "status" },
        h("p", null, h("strong", null, "Copy this key now: it will not be shown again.")),
        h("div", { class: "secret-row" }, h("code", { class: "secret" }, r.key), copyButton(r.key)),
        button("I have copied it", () => reveal.replaceChildren(), { class: "ghost" })));
      await load();
    });
  });

  async function load() {
    try {
      const s = await get("/api/admin/stats");
      statsSlot.replaceChildren(h("dl", { class: "stats" },
        ...[["Requests", num(s.totalRequests)], ["Tokens", num(s.totalTokens)], ["Cost", usd(s.costUsd)],
          ["Active keys", num(s.activeKeys)], ["Uptime", `${Math.round(s.uptimeSeconds / 60)} min`]]
          .map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v)))),
      table(Object.entries(s.byModel || {}).map(([model, v]) => ({ model, ...v })), [
        ["Model", (m) => m.model], ["Requests", (m) => num(m.requests)], ["Tokens", (m) => num(m.tokens)], ["Cost", (m) => usd(m.costUsd)],
      ], "No requests yet.", "Requests by model"));
    } catch (e) {
      statsSlot.replaceChildren(failure(e, "Statistics"));
    }
    try {
      const r = await get("/api/admin/keys");
      listSlot.replaceChildren(table(r.keys || r.items || [], [
        ["Name", (k) => k.name], ["Email", (k) => k.email], ["Tier", (k) => k.tier], ["Prefix", (k) => h("code", null, k.prefix + "…")],
        ["Created", (k) => when(k.createdAt)], ["Last used", (k) => when(k.lastUsedAt) || "never"],
        ["", (k) => button("Revoke", (ev) => {
          if (!window.confirm(`Revoke the key "${k.name}"?`)) return;
          act(ev.currentTarget, status, async () => {
            await del(`/api/admin/keys/${encodeURIComponent(k.id)}`);
            toast(`Key "${k.name}" revoked.`);
            await load();
          });
        }, { class: "danger", "aria-label": `Revoke key ${k.name}` })],
      ], "No API keys yet. Create one above.", "API keys"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "The key list"));
    }
  }
  await load();
}
