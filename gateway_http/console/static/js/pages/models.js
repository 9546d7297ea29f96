// Models and prices: the catalogue this gateway routes, with USD per million tokens.

import { get } from "../api.js";
import { h, table, section, failure, input, field } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Models & prices"));
  const filter = input({ type: "search", name: "q", placeholder: "filter by name or provider" });
  const slot = h("div");
  view.append(section("Catalogue", field("Filter", filter), slot));
  let models = [];
  try {
    const r = await get("/api/models");
    models = r.models || r.items || [];
  } catch (e) {
    slot.replaceChildren(failure(e, "The model list"));
    return;
  }
  const price = (v) => (v ? `$${Number(v).toFixed(2)}` : "free");
  function draw() {
    const q = filter.value.trim().toLowerCase();
    const rows = models.filter((m) => !q || m.id.toLowerCase().includes(q) || (m.providers || []).join(" ").toLowerCase().includes(q));
    slot.replaceChildren(table(rows, [
      ["Model", (m) => h("code", null, m.id)],
      ["Providers", (m) => (m.providers || [m.provider]).join(", ") + (m.demo ? " (demo: local, no network)" : "")],
      ["Context", (m) => (m.contextLength ? m.contextLength.toLocaleString("en-US") : "")],
      ["Prompt / 1M tokens", (m) => price(m.pricing && m.pricing.promptPerMTok)],
      ["Completion / 1M tokens", (m) => price(m.pricing && m.pricing.completionPerMTok)],
    ], q ? "No model matches that filter." : "No model is configured on this gateway.", "Models and prices"));
  }
  filter.addEventListener("input", draw);
  draw();
}
