// Admin: users (search, plan, role, suspend / reactivate, delete) and adding a user.

import { get, post, patch, del } from "../api.js";
import { h, field, input, select, button, table, section, statusLine, act, when, usd, failure, toast, copyButton } from "../dom.js";

export default async function render(view, ctx) {
  view.append(h("h1", null, "Users"));
  let plans = [];
  try {
    const p = await get("/api/admin/plans");
    plans = (Array.isArray(p) ? p : p.items || []).map((x) => x.name);
  } catch { /* the plan picker falls back to a text field */ }

  const q = input({ type: "search", name: "q", placeholder: "email contains…" });
  const state = select([["", "any state"], "active", "suspended", "deleted"], { name: "state" });
  const role = select([["", "any role"], "admin", "user"], { name: "role" });
  const searchBtn = h("button", { type: "submit" }, "Search");
  const search = h("form", { class: "inline-form", role: "search" }, field("Search", q), field("State", state), field("Role", role), searchBtn);
  const listSlot = h("div");
  const status = statusLine();

  const email = input({ type: "email", name: "email", required: true });
  const newPlan = plans.length ? select(plans, { name: "plan" }) : input({ name: "plan", placeholder: "plan name" });
  const newRole = select(["user", "admin"], { name: "role" });
  const pw = input({ type: "password", name: "password", autocomplete: "new-password", placeholder: "empty: invite link" });
  const addBtn = h("button", { type: "submit" }, "Add user");
  const addStatus = statusLine();
  const addReveal = h("div");
  const add = h("form", { class: "grid-form", novalidate: true }, field("Email", email), field("Plan", newPlan), field("Role", newRole),
    field("Password (optional)", pw), addBtn);

  const detailSlot = h("div");
  view.append(section("Find users", search, status, listSlot), detailSlot, section("Add a user", add, addStatus, addReveal));

  search.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  add.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!email.value) { addStatus.fail("Enter the new user's email."); return; }
    act(addBtn, addStatus, async () => {
      const body = { email: email.value, plan: newPlan.value, role: newRole.value };
      if (pw.value) body.password = pw.value;
      const r = await post("/api/admin/users", body);
      email.value = ""; pw.value = "";
      addStatus.ok(`User ${r.user ? r.user.email : body.email} added.`);
      if (r.invite_token) {
        addReveal.replaceChildren(h("div", { class: "reveal" },
          h("p", null, h("strong", null, "One-time invite token (shown once). The user opens this console, picks the "),
            h("strong", null, "Invite"), " tab and sets a password with it."),
          h("div", { class: "secret-row" }, h("code", { class: "secret" }, r.invite_token), copyButton(r.invite_token))));
      }
      await load();
    });
  });

  async function load() {
    const params = new URLSearchParams({ limit: "100" });
    if (q.value) params.set("q", q.value);
    if (state.value) params.set("state", state.value);
    if (role.value) params.set("role", role.value);
    try {
      const r = await get(`/api/admin/users?${params}`);
      const rows = r.items || [];
      listSlot.replaceChildren(h("p", { class: "hint" }, `${r.total ?? rows.length} user(s).`), table(rows, [
        ["Email", (u) => u.email],
        ["Role", (u) => roleSelect(u)],
        ["Plan", (u) => planSelect(u)],
        ["State", (u) => h("span", { class: `badge ${u.state}` }, u.state)],
        ["Tokens", (u) => String(u.tokens ?? "")],
        ["Spend (month)", (u) => usd(u.spend_month_usd)],
        ["Created", (u) => when(u.created_at)],
        ["", (u) => actions(u)],
      ], "No user matches.", "Users"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "The user list"));
    }
  }

  function change(u, body, what) {
    return act(null, status, async () => {
      await patch(`/api/admin/users/${encodeURIComponent(u.id)}`, body);
      toast(`${u.email}: ${what}.`);
      await load();
      return true;
    });
  }

  function roleSelect(u) {
    const s = select(["user", "admin"], { value: u.role, "aria-label": `Role of ${u.email}` });
    s.addEventListener("change", async () => {
      // A role is a grant: confirm it (a keyboard user arrowing through the list changes it too).
      if (!window.confirm(s.value === "admin" ? `Make ${u.email} an administrator?` : `Take the admin role from ${u.email}?`)) {
        s.value = u.role;
        return;
      }
      if ((await change(u, { role: s.value }, `role set to ${s.value}`)) === undefined) s.value = u.role;
    });
    return s;
  }

  function planSelect(u) {
    const opts = plans.includes(u.plan) || !u.plan ? plans : [u.plan, ...plans];
    if (!opts.length) return u.plan;
    const s = select(opts, { value: u.plan, "aria-label": `Plan of ${u.email}` });
    s.addEventListener("change", async () => {
      if ((await change(u, { plan: s.value }, `plan set to ${s.value}`)) === undefined) s.value = u.plan;
    });
    return s;
  }

  function actions(u) {
    const self = ctx.user && ctx.user.id === u.id;
    const suspend = u.state === "suspended"
      ? button("Reactivate", () => change(u, { state: "active" }, "reactivated"), { class: "secondary", "aria-label": `Reactivate ${u.email}` })
      : button("Suspend", () => {
        if (window.confirm(`Suspend ${u.email}? Their tokens stop working at once.`)) change(u, { state: "suspended" }, "suspended");
      }, { class: "secondary", "aria-label": `Suspend ${u.email}`, disabled: self || u.state === "deleted" });
    const remove = button("Delete", (ev) => {
      if (!window.confirm(`Delete ${u.email}? Their tokens are revoked; their ledger rows are kept.`)) return;
      act(ev.currentTarget, status, async () => {
        await del(`/api/admin/users/${encodeURIComponent(u.id)}`);
        toast(`${u.email} deleted.`);
        await load();
      });
    }, { class: "danger", "aria-label": `Delete ${u.email}`, disabled: self || u.state === "deleted" });
    const more = button("Details", () => details(u), { class: "ghost", "aria-label": `Details of ${u.email}` });
    return h("div", { class: "row" }, more, suspend, remove);
  }

  // One user's tokens, provider keys, month's usage, sessions and $ budgets.
  async function details(u) {
    detailSlot.replaceChildren(h("p", { class: "hint" }, "Loading…"));
    let d;
    try {
      d = await get(`/api/admin/users/${encodeURIComponent(u.id)}`);
    } catch (e) {
      detailSlot.replaceChildren(failure(e, `${u.email}'s details`));
      return;
    }
    const day = input({ type: "number", name: "budget_usd_day", min: 0, step: "0.01", value: d.budget_usd_day ?? "" });
    const month = input({ type: "number", name: "budget_usd_month", min: 0, step: "0.01", value: d.budget_usd_month ?? "" });
    const saveBudgets = h("button", { type: "submit" }, "Save budgets");
    const bStatus = statusLine();
    const budgets = h("form", { class: "grid-form", novalidate: true }, field("Budget USD / day", day, "Empty: the plan's."),
      field("Budget USD / month", month, "Empty: the plan's."), saveBudgets);
    budgets.addEventListener("submit", (e) => {
      e.preventDefault();
      act(saveBudgets, bStatus, async () => {
        await patch(`/api/admin/users/${encodeURIComponent(u.id)}`, {
          budget_usd_day: day.value === "" ? null : Number(day.value), budget_usd_month: month.value === "" ? null : Number(month.value) });
        bStatus.ok("Budgets saved.");
      });
    });
    const endSessions = button(`Sign out everywhere (${d.sessions ?? 0} sessions)`, (ev) => act(ev.currentTarget, bStatus, async () => {
      await del(`/api/admin/users/${encodeURIComponent(u.id)}/sessions`);
      bStatus.ok(`${u.email} is signed out of every browser.`);
    }), { class: "secondary", disabled: !d.sessions });
    const usage = d.usage || {};
    detailSlot.replaceChildren(section(`${d.email}: details`,
      h("dl", { class: "stats" },
        h("div", null, h("dt", null, "Requests this month"), h("dd", null, String(usage.requests ?? 0))),
        h("div", null, h("dt", null, "Tokens this month"), h("dd", null, String((usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0)))),
        h("div", null, h("dt", null, "Spend this month"), h("dd", null, usd(usage.cost_usd ?? 0)))),
      h("h3", null, "API tokens"),
      table(d.tokens || [], [["Name", (t) => t.name], ["Prefix", (t) => h("code", null, t.prefix + "…")],
        ["Created", (t) => when(t.createdAt ?? t.created_at)], ["Last used", (t) => when(t.lastUsedAt ?? t.last_used_at) || "never"]],
      "No API tokens.", "Tokens"),
      h("h3", null, "Provider keys"),
      table(d.provider_keys || [], [["Name", (k) => k.name], ["Provider", (k) => k.provider], ["Key", (k) => h("code", null, k.maskedKey || k.mask)]],
        "No provider keys of their own.", "Provider keys"),
      h("h3", null, "Budgets and sessions"), budgets, h("div", { class: "row" }, endSessions,
        button("Close", () => detailSlot.replaceChildren(), { class: "ghost" })), bStatus));
    detailSlot.scrollIntoView({ block: "start" });
  }

  await load();
}
