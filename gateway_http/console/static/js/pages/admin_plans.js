// Admin: plans (limits, price) and their $ budgets; create, edit, delete.

import { get, post, put, del } from "../api.js";
import { h, field, input, button, table, section, statusLine, act, num, usd, failure, toast } from "../dom.js";

const FIELDS = [
  ["rpm", "Requests / minute"], ["rpd", "Requests / day"], ["tpd", "Tokens / day"], ["tpm_month", "Tokens / month"],
  ["price_usd_month", "Price USD / month"], ["budget_usd_day", "Budget USD / day"], ["budget_usd_month", "Budget USD / month"],
];

// 0 or nothing is "no limit" in a plan.
const lim = (v) => (v ? num(v) : "no limit");

export default async function render(view) {
  view.append(h("h1", null, "Plans & budgets"),
    h("p", { class: "lead" }, "A plan's limits apply to all of a user's tokens together. Empty means no limit (or a custom price)."));
  const listSlot = h("div");
  const status = statusLine();
  const name = input({ name: "name", required: true, maxlength: 50 });
  const desc = input({ name: "description", maxlength: 200 });
  const inputs = Object.fromEntries(FIELDS.map(([k]) => [k, input({ type: "number", name: k, min: 0, step: k.includes("usd") ? "0.01" : "1" })]));
  const save = h("button", { type: "submit" }, "Save plan");
  const form = h("form", { class: "grid-form", novalidate: true }, field("Name", name), field("Description", desc),
    FIELDS.map(([k, label]) => field(label, inputs[k])), save);
  let editing = null;
  const formTitle = h("h2", null, "New plan");
  view.append(section("Plans", listSlot), h("section", { class: "card" }, formTitle, form, status));

  function fill(p) {
    editing = p ? p.name : null;
    formTitle.textContent = p ? `Edit plan "${p.name}"` : "New plan";
    name.value = p ? p.name : ""; name.readOnly = !!p;
    desc.value = p ? p.description || "" : "";
    for (const [k] of FIELDS) inputs[k].value = p && p[k] !== null && p[k] !== undefined && (p[k] !== 0 || k === "price_usd_month") ? p[k] : "";
    if (p) name.scrollIntoView({ block: "center" }), desc.focus();
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!name.value.trim()) { status.fail("Give the plan a name."); return; }
    act(save, status, async () => {
      const body = { name: name.value.trim(), description: desc.value };
      for (const [k] of FIELDS) body[k] = inputs[k].value === "" ? null : Number(inputs[k].value);
      if (editing) await put(`/api/admin/plans/${encodeURIComponent(editing)}`, body);
      else await post("/api/admin/plans", body);
      status.ok(`Plan "${body.name}" saved.`);
      fill(null);
      await load();
    });
  });

  async function load() {
    try {
      const r = await get("/api/admin/plans");
      const rows = Array.isArray(r) ? r : r.items || [];
      listSlot.replaceChildren(table(rows, [
        ["Plan", (p) => h("span", null, h("strong", null, p.name), p.description ? h("small", { class: "hint block" }, p.description) : null)],
        ["Req/min", (p) => lim(p.rpm)], ["Req/day", (p) => lim(p.rpd)], ["Tokens/day", (p) => lim(p.tpd)],
        ["Tokens/month", (p) => lim(p.tpm_month)],
        ["Price/month", (p) => (p.price_usd_month === null || p.price_usd_month === undefined ? "custom" : usd(p.price_usd_month))],
        ["Budget day / month", (p) => [usd(p.budget_usd_day) || "—", usd(p.budget_usd_month) || "—"].join(" / ")],
        ["Users", (p) => String(p.users ?? "")],
        ["", (p) => h("div", { class: "row" },
          button("Edit", () => fill(p), { class: "secondary", "aria-label": `Edit plan ${p.name}` }),
          button("Delete", (ev) => remove(ev.currentTarget, p), { class: "danger", "aria-label": `Delete plan ${p.name}`, disabled: p.users > 0 }))],
      ], "No plans are defined.", "Plans"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "The plan list"));
    }
  }

  async function remove(btn, p) {
    if (!window.confirm(`Delete the plan "${p.name}"?`)) return;
    await act(btn, status, async () => {
      await del(`/api/admin/plans/${encodeURIComponent(p.name)}`);
      toast(`Plan "${p.name}" deleted.`);
      await load();
    });
  }

  await load();
}
