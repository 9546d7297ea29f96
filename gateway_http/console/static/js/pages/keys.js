// Own provider keys: add (the secret goes to the gateway, encrypted at rest), masked list, remove.

import { get, post, del } from "../api.js";
import { h, field, input, select, button, table, section, statusLine, act, when, failure, toast } from "../dom.js";

const KINDS = ["openai", "anthropic", "gemini", "openrouter", "mistral", "groq", "together", "fireworks", "deepseek",
  "cerebras", "deepinfra", "ollama", "openai_compatible"];

export default async function render(view) {
  view.append(h("h1", null, "API Keys"),
    h("p", { class: "lead" }, "Your LLM provider API keys (OpenAI, Anthropic, Gemini, …). Requests made with your tokens may route through them. ",
      "The gateway stores them encrypted and never shows them again."));
  const provider = select(KINDS, { name: "provider" });
  const name = input({ name: "name", maxlength: 100, placeholder: "e.g. personal OpenAI" });
  const secret = input({ type: "password", name: "key", autocomplete: "off", required: true });
  const baseUrl = input({ type: "url", name: "baseUrl", placeholder: "provider default" });
  const models = input({ name: "models", placeholder: "all models (comma-separated to restrict)" });
  const status = statusLine();
  const submit = h("button", { type: "submit" }, "Add key");
  const form = h("form", { class: "grid-form", novalidate: true }, field("Provider", provider), field("Name", name),
    field("API key", secret), field("Base URL (optional)", baseUrl), field("Allowed models (optional)", models), submit);
  const listSlot = h("div");
  view.append(section("Add a provider API key", form, status), section("Your keys", listSlot));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!secret.value) { status.fail("Paste the provider's API key."); return; }
    act(submit, status, async () => {
      await post("/api/keys", {
        provider: provider.value, name: name.value.trim() || provider.value, key: secret.value,
        baseUrl: baseUrl.value.trim() || undefined,
        models: models.value ? models.value.split(",").map((m) => m.trim()).filter(Boolean) : undefined,
      });
      secret.value = ""; name.value = ""; baseUrl.value = ""; models.value = "";
      status.ok("Key added. It is stored encrypted; only its mask is shown below.");
      await load();
    });
  });

  async function load() {
    try {
      const r = await get("/api/keys");
      const rows = r.items || r.keys || [];
      listSlot.replaceChildren(table(rows, [
        ["Name", (k) => k.name],
        ["Provider", (k) => k.provider],
        ["Key", (k) => h("code", null, k.maskedKey || k.mask || "••••")],
        ["Models", (k) => (k.models && k.models.length ? k.models.join(", ") : "all")],
        ["Added", (k) => when(k.createdAt ?? k.created_at)],
        ["", (k) => button("Remove", (ev) => remove(ev.currentTarget, k), { class: "danger", "aria-label": `Remove key ${k.name}` })],
      ], "You have no provider keys. Requests use the gateway's own keys.", "Your provider keys"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "Your provider keys"));
    }
  }

  async function remove(btn, k) {
    if (!window.confirm(`Remove the key "${k.name}"?`)) return;
    await act(btn, null, async () => {
      await del(`/api/keys/${encodeURIComponent(k.id)}`);
      toast(`Key "${k.name}" removed.`);
      await load();
    });
  }

  await load();
}
