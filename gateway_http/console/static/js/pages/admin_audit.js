// Admin: the audit log (one row per admin action), filtered by actor, action and time.

import { get } from "../api.js";
import { h, field, input, table, section, when, failure } from "../dom.js";

function brief(v) {
  if (v === null || v === undefined || v === "") return "";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 120 ? s.slice(0, 119) + "…" : s;
}

const parse = (v) => { if (typeof v !== "string") return v; try { return JSON.parse(v); } catch { return v; } };

// What an action changed: "state: active → suspended" for the fields that differ, else the new value.
function change(before, after) {
  const b = parse(before), a = parse(after);
  if (b && a && typeof b === "object" && typeof a === "object") {
    const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])].filter((k) => JSON.stringify(b[k]) !== JSON.stringify(a[k]));
    if (keys.length) return keys.map((k) => `${k}: ${brief(b[k]) || "—"} → ${brief(a[k]) || "—"}`).join("; ");
  }
  return a !== null && a !== undefined && a !== "" ? brief(a) : `removed: ${brief(b)}`;
}

export default async function render(view) {
  view.append(h("h1", null, "Audit log"));
  const actor = input({ name: "actor" });
  const action = input({ name: "action", placeholder: "e.g. user.update" });
  const since = input({ type: "datetime-local", name: "since" });
  const go = h("button", { type: "submit" }, "Filter");
  const form = h("form", { class: "inline-form", role: "search" }, field("Actor", actor), field("Action", action), field("Since (UTC)", since), go);
  const slot = h("div");
  view.append(section("Filters", form), section("Entries", slot));
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

  async function load() {
    const p = new URLSearchParams({ limit: "200" });
    if (actor.value.trim()) p.set("actor", actor.value.trim());
    if (action.value.trim()) p.set("action", action.value.trim());
    if (since.value) p.set("since", new Date(since.value + "Z").toISOString());
    try {
      const r = await get(`/api/admin/audit?${p}`);
      const rows = Array.isArray(r) ? r : r.items || [];
      slot.replaceChildren(table(rows, [
        ["Time", (a) => when(a.created_at)], ["Actor", (a) => a.actor], ["Action", (a) => a.action], ["Target", (a) => a.target],
        ["IP", (a) => a.ip], ["Change", (a) => h("code", { class: "small wrap" }, change(a.before, a.after))],
      ], "No audit entries match.", "Audit log"));
    } catch (e) {
      slot.replaceChildren(failure(e, "The audit log"));
    }
  }
  await load();
}
