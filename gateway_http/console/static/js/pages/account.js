// Your account: where you are signed in (revoke a session) and your password.

import { get, put, del } from "../api.js";
import { h, field, input, button, table, section, statusLine, act, when, failure, toast } from "../dom.js";

export default async function render(view, ctx) {
  view.append(h("h1", null, "Account"),
    h("p", { class: "lead" }, `${ctx.user.email} · role ${ctx.user.role}${ctx.user.plan ? ` · plan ${ctx.user.plan}` : ""}`));
  const listSlot = h("div");
  const current = input({ type: "password", name: "current_password", autocomplete: "current-password" });
  const next = input({ type: "password", name: "new_password", autocomplete: "new-password", minlength: 8 });
  const save = h("button", { type: "submit" }, "Change password");
  const status = statusLine();
  const form = h("form", { class: "grid-form", novalidate: true }, field("Current password", current),
    field("New password", next, "At least 8 characters. Your other sessions are signed out."), save);
  view.append(section("Where you are signed in", listSlot), section("Password", form, status));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!current.value || !next.value) { status.fail("Enter your current and your new password."); return; }
    act(save, status, async () => {
      await put("/api/auth/password", { current_password: current.value, new_password: next.value });
      current.value = ""; next.value = "";
      status.ok("Password changed. Your other sessions have been signed out.");
      await load();
    });
  });

  async function load() {
    try {
      const r = await get("/api/auth/sessions");
      const rows = Array.isArray(r) ? r : r.items || [];
      listSlot.replaceChildren(table(rows, [
        ["Signed in", (x) => when(x.created_at)], ["Last used", (x) => when(x.last_used_at)],
        ["Browser", (x) => (x.user_agent || "").slice(0, 60)], ["Address", (x) => x.ip],
        ["", (x) => (x.current ? h("span", { class: "badge active" }, "this browser")
          : button("Sign out", (ev) => act(ev.currentTarget, status, async () => {
            await del(`/api/auth/sessions/${encodeURIComponent(x.id)}`);
            toast("Session signed out.");
            await load();
          }), { class: "secondary", "aria-label": `Sign out the session from ${when(x.created_at)}` }))],
      ], "No sessions.", "Your sessions"));
    } catch (e) {
      listSlot.replaceChildren(failure(e, "Your sessions"));
    }
  }
  await load();
}
