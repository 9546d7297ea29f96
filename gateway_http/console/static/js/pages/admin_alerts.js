// Admin: budget and quota alerts, newest first.

import { get } from "../api.js";
import { h, table, section, when, failure } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Alerts"));
  const slot = h("div");
  view.append(section("Latest alerts", slot));
  try {
    const r = await get("/api/admin/alerts?limit=200");
    const rows = Array.isArray(r) ? r : r.items || [];
    slot.replaceChildren(table(rows, [
      ["Time", (a) => when(a.created_at)], ["Kind", (a) => a.kind], ["Subject", (a) => a.subject],
      ["Message", (a) => a.message], ["Delivered", (a) => (a.delivered ? "yes" : "not yet")],
    ], "No alerts. Budgets that are crossed show up here.", "Alerts"));
  } catch (e) {
    slot.replaceChildren(failure(e, "Alerts"));
  }
}
