// API tokens: create (the secret shown once, with a copy button), list, revoke.

import { get, post, del } from "../api.js";
import { h, field, input, button, table, section, statusLine, act, when, num, usd, copyButton, failure, toast } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "API Tokens"),
    h("p", { class: "lead" }, "Apps send a token as ", h("code", null, "Authorization: Bearer <token>"),
      " (or X-API-Key). Each token shares your plan's limits."));
  const name = input({ name: "name", required: true, maxlength: 100, placeholder: "e.g. my-app" });
  const days = input({ type: "number", name: "expires", min: 0, max: 3650, inputmode: "numeric", placeholder: "never" });
  // Optional limits of this token alone, inside the plan's (ACCOUNTS_API.md: rpm, rpd, tpd, tpm_month, $ budgets).
  const LIMITS = [["rpm", "Requests / minute"], ["rpd", "Requests / day"], ["tpd", "Tokens / day"],
    ["tpm_month", "Tokens / month"], ["budget_usd_day", "Budget USD / day"], ["budget_usd_month", "Budget USD / month"]];
  const limits = Object.fromEntries(LIMITS.map(([k]) => [k, input({ type: "number", name: k, min: 0,
    step: k.startsWith("budget") ? "0.01" : "1", placeholder: "plan's" })]));
  const more = h("details", { class: "more" }, h("summary", null, "Limits for this token (optional)"),
    h("div", { class: "grid-form" }, LIMITS.map(([k, label]) => field(label, limits[k]))));
  const status = statusLine();
  const reveal = h("div", { class: "reveal-slot" });
  const submit = h("button", { type: "submit" }, "Generate token");
  const form = h("form", { class: "inline-form", novalidate: true },
    field("Token name", name), field("Expires in days (optional)", days), submit);
  const listSlot = h("div");
  view.append(section("Generate a token for your applications", form, more, status, reveal), section("Your tokens", listSlot));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!name.value.trim()) { status.fail("Give the token a name, so you can tell it apart later."); return; }
    act(submit, status, async () => {
      const body = { name: name.value.trim() };
      if (days.value) body.expiresInDays = Number(days.value);
      for (const [k] of LIMITS) if (limits[k].value !== "") body[k] = Number(limits[k].value);
      const r = await post("/api/tokens", body);
      const secret = r.key || r.token;
      name.value = ""; days.value = "";
      for (const [k] of LIMITS) limits[k].value = "";
      const code = h("code", { class: "secret", id: "new-token" }, secret);
      reveal.replaceChildren(h("div", { class: "reveal", role: "status" },
        h("p", null, h("strong", null, "Copy this token now: it will not be shown again.")),
        h("div", { class: "secret-row" }, code, copyButton(secret)),
        button("I have copied it", () => reveal.replaceChildren(), { class: "ghost" })));
      await load();
    });
  });

  async function load() {
    try {
      const r = await get("/api/tokens");
      const rows = r.items || r.tokens || [];
      listSlot.replaceChildren(table(rows, [
        ["Name", (t) => t.name],
        ["Prefix", (t) => h("code", null, t.prefix + "…")],
        ["Created", (t) => when(t.createdAt ?? t.created_at)],
        ["Last used", (t) => when(t.lastUsedAt ?? t.last_used_at) || "never"],
        ["Expires", (t) => when(t.expiresAt ?? t.expires_at) || "never"],
        ["Own limits", (t) => LIMITS.filter(([k]) => t[k]).map(([k, label]) => `${label.toLowerCase()}: ${k.startsWith("budget") ? usd(t[k]) : num(t[k])}`).join(", ") || "plan's"],
        ["", (t) => button("Revoke", (ev) => revoke(ev.currentTarget, t), { class: "danger", "aria-label": `Revoke token ${t.name}` })],
      ], "You have no API tokens yet. Generate one above to call the gateway from an app.", "Your API tokens"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "Your tokens"));
    }
  }

  async function revoke(btn, t) {
    if (!window.confirm(`Revoke the token "${t.name}"? Apps using it will stop working at once.`)) return;
    await act(btn, null, async () => {
      await del(`/api/tokens/${encodeURIComponent(t.id)}`);
      toast(`Token "${t.name}" revoked.`);
      await load();
    });
  }

  await load();
}
