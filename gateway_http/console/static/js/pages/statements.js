// Monthly statements: your own (/api/statements), or every user's for an admin (/api/admin/statements).

import { get, request } from "../api.js";
import { h, field, input, table, section, statusLine, act, num, usd, failure, button } from "../dom.js";

export default async function render(view, ctx) {
  const all = ctx.path.startsWith("/admin");
  view.append(h("h1", null, all ? "All statements" : "Statements"));
  const now = new Date();
  const month = input({ type: "month", name: "month", value: now.toISOString().slice(0, 7) });
  const user = all ? input({ name: "user", placeholder: "all users" }) : null;
  const show = h("button", { type: "submit" }, "Show");
  const csv = button("Download CSV", () => act(csv, status, downloadCsv), { class: "secondary" });
  const form = h("form", { class: "inline-form" }, field("Month", month), user ? field("User id", user) : null, show, csv);
  const status = statusLine();
  const slot = h("div");
  view.append(section("Period", form, status), h("div", null, slot));

  const base = () => {
    const p = new URLSearchParams({ month: month.value });
    if (user && user.value.trim()) p.set("user", user.value.trim());
    return `${all ? "/api/admin/statements" : "/api/statements"}?${p}`;
  };

  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

  async function load() {
    try {
      const r = await get(base());
      const list = Array.isArray(r) ? r : r.items || (r.lines ? [r] : []);
      if (!list.length) { slot.replaceChildren(h("p", { class: "empty card" }, "No statement for this month.")); return; }
      slot.replaceChildren(...list.map((s) => section(`${s.email || s.user_id} · ${s.month} · plan ${s.plan || "—"}`,
        table(s.lines || [], [["Model", (l) => l.model], ["Requests", (l) => num(l.requests)],
          ["Prompt tokens", (l) => num(l.prompt_tokens)], ["Completion tokens", (l) => num(l.completion_tokens)],
          ["Cost", (l) => usd(l.cost_usd)]], "No usage in this month.", "Statement lines"),
        h("dl", { class: "stats" },
          h("div", null, h("dt", null, "Usage"), h("dd", null, usd(s.usage_cost_usd))),
          h("div", null, h("dt", null, "Plan price"), h("dd", null, s.plan_price_usd === null ? "custom" : usd(s.plan_price_usd))),
          h("div", null, h("dt", null, "Total"), h("dd", null, usd(s.total_usd)))))));
    } catch (e) {
      slot.replaceChildren(failure(e, "The statement"));
    }
  }

  async function downloadCsv() {
    const res = await request("GET", base() + "&format=csv", undefined, { raw: true, headers: { Accept: "text/csv" } });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `tollgate-statement-${month.value}.csv`, hidden: true });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  await load();
}
