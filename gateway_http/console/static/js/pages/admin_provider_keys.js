// Admin: gateway-wide provider keys. Keys from the config file are read-only; run-time keys can be
// added, disabled and removed. Only masks are ever shown.

import { get, post, patch, del } from "../api.js";
import { h, field, input, select, button, table, section, statusLine, act, failure, toast } from "../dom.js";

const KINDS = ["openai", "anthropic", "gemini", "openrouter", "mistral", "groq", "together", "fireworks", "deepseek",
  "cerebras", "deepinfra", "ollama", "openai_compatible"];

export default async function render(view) {
  view.append(h("h1", null, "Gateway provider keys"),
    h("p", { class: "lead" }, "Keys every user's requests may route through. Keys from tollgate.toml are shown read-only."));
  const listSlot = h("div");
  const status = statusLine();
  const provider = select(KINDS, { name: "provider" });
  const name = input({ name: "name", required: true });
  const secret = input({ type: "password", name: "api_key", autocomplete: "off", required: true });
  const baseUrl = input({ type: "url", name: "base_url", placeholder: "provider default" });
  const models = input({ name: "models", placeholder: "all (comma-separated to restrict)" });
  const priority = input({ type: "number", name: "priority", value: "0" });
  const add = h("button", { type: "submit" }, "Add key");
  const form = h("form", { class: "grid-form", novalidate: true }, field("Provider", provider), field("Name", name),
    field("API key", secret), field("Base URL (optional)", baseUrl), field("Models (optional)", models), field("Priority", priority), add);
  view.append(section("Keys", listSlot), section("Add a key", form, status));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!name.value.trim() || !secret.value) { status.fail("A key needs a name and the secret itself."); return; }
    act(add, status, async () => {
      await post("/api/admin/provider-keys", {
        name: name.value.trim(), provider: provider.value, api_key: secret.value, base_url: baseUrl.value.trim() || undefined,
        models: models.value ? models.value.split(",").map((m) => m.trim()).filter(Boolean) : undefined,
        priority: Number(priority.value) || 0,
      });
      secret.value = ""; name.value = "";
      status.ok("Key added.");
      await load();
    });
  });

  async function load() {
    try {
      const r = await get("/api/admin/provider-keys");
      const rows = Array.isArray(r) ? r : r.items || [];
      listSlot.replaceChildren(table(rows, [
        ["Name", (k) => k.name], ["Provider", (k) => k.provider], ["Key", (k) => h("code", null, k.mask || "••••")],
        ["Models", (k) => (k.models && k.models.length ? k.models.join(", ") : "all")], ["Priority", (k) => String(k.priority ?? 0)],
        ["Source", (k) => (k.source === "config" ? "config file" : "added here")],
        ["State", (k) => h("span", { class: `badge ${k.disabled ? "suspended" : "active"}` }, k.disabled ? "disabled" : "enabled")],
        ["", (k) => (k.source === "config" ? "read-only" : h("div", { class: "row" },
          button(k.disabled ? "Enable" : "Disable", (ev) => act(ev.currentTarget, status, async () => {
            await patch(`/api/admin/provider-keys/${encodeURIComponent(k.id)}`, { disabled: !k.disabled });
            await load();
          }), { class: "secondary", "aria-label": `${k.disabled ? "Enable" : "Disable"} ${k.name}` }),
          button("Remove", (ev) => {
            if (!window.confirm(`Remove the key "${k.name}"?`)) return;
            act(ev.currentTarget, status, async () => {
              await del(`/api/admin/provider-keys/${encodeURIComponent(k.id)}`);
              toast(`Key "${k.name}" removed.`);
              await load();
            });
          }, { class: "danger", "aria-label": `Remove ${k.name}` })))],
      ], "No gateway-wide provider keys. The demo model answers until one is added.", "Gateway provider keys"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "The gateway's provider keys"));
    }
  }
  await load();
}
