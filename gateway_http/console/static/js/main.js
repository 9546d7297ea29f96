// The console shell: who is signed in, the navigation, and a hash router that loads each page's
// module on first visit (only the shell and the page shown are fetched on first load).

import { whoAmI, signOut } from "./api.js";
import { h } from "./dom.js";

const USER_PAGES = [
  ["/", "Usage & quota", "usage"],
  ["/tokens", "API Tokens", "tokens"],
  ["/keys", "API Keys", "keys"],
  ["/playground", "Playground", "playground"],
  ["/models", "Models & prices", "models"],
  ["/statements", "Statements", "statements"],
  ["/account", "Account", "account"],
];
const ADMIN_PAGES = [
  ["/admin/users", "Users", "admin_users"],
  ["/admin/plans", "Plans & budgets", "admin_plans"],
  ["/admin/settings", "Settings", "admin_settings"],
  ["/admin/provider-keys", "Gateway keys", "admin_provider_keys"],
  ["/admin/health", "Router health", "admin_health"],
  ["/admin/usage", "Usage explorer", "admin_usage"],
  ["/admin/statements", "All statements", "statements"],
  ["/admin/alerts", "Alerts", "admin_alerts"],
  ["/admin/audit", "Audit log", "admin_audit"],
  ["/admin/keys", "Keys & stats", "admin_keys"],
];
// The operator (admin key) has no account of its own: no tokens, provider keys or usage of its own.
const OPERATOR_HIDES = new Set(["/", "/tokens", "/keys", "/statements", "/account"]);

let user = null;
let cleanup = null;
let rendering = 0;

function pagesFor(u) {
  if (!u) return [];
  const own = USER_PAGES.filter(([path]) => !(u.id === "operator" && OPERATOR_HIDES.has(path)));
  return u.role === "admin" ? [...own, ...ADMIN_PAGES] : own;
}

function renderNav() {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  if (!user) { nav.hidden = true; return; }
  nav.hidden = false;
  const list = (title, pages) => h("div", { class: "nav-group" }, h("h2", null, title),
    h("ul", null, pages.map(([path, label]) => h("li", null, h("a", { href: "#" + path, "data-path": path }, label)))));
  const visible = pagesFor(user);
  nav.append(list("Your account", visible.filter(([p]) => !p.startsWith("/admin"))));
  if (user.role === "admin") nav.append(list("Administration", ADMIN_PAGES));
  document.getElementById("who").textContent = `${user.email}${user.role === "admin" ? " (admin)" : ""}`;
  document.getElementById("logout").hidden = false;
}

function currentPath() {
  const raw = location.hash.replace(/^#/, "") || "/";
  return raw.split("?")[0];
}

async function route(ev) {
  const ticket = ++rendering;
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  const main = document.getElementById("main");
  const path = currentPath();
  let mod, title;
  if (!user) {
    mod = "signin"; title = "Sign in";
  } else {
    const all = [...USER_PAGES, ...ADMIN_PAGES];
    const hit = all.find(([p]) => p === path);
    const allowed = pagesFor(user).find(([p]) => p === path);
    if (!hit) {
      main.replaceChildren(h("h1", null, "Page not found"), h("p", null, "There is no console page at this address. ",
        h("a", { href: "#/" }, "Go to the start page.")));
      return;
    }
    if (!allowed) {
      main.replaceChildren(h("h1", null, hit[1]), h("p", { class: "error", role: "alert" },
        path.startsWith("/admin") ? "This page is for administrators only. Your account is not an administrator."
          : "This page belongs to a user account; the operator (admin key) has none."));
      markNav(path);
      return;
    }
    [, title, mod] = hit;
  }
  markNav(path);
  document.title = `${title} · Tollgate console`;
  const page = await import(`./pages/${mod}.js`);
  if (ticket !== rendering) return;
  const view = h("div", { class: "page" });
  main.replaceChildren(view);
  try {
    const done = await page.default(view, { user, path, signedIn: onSignedIn });
    if (ticket === rendering) cleanup = typeof done === "function" ? done : null;
    else if (typeof done === "function") done();
    view.dataset.ready = path; // the page's first data is drawn (tests and assistive tech can rely on it)
  } catch (e) {
    view.append(h("p", { class: "error", role: "alert" }, `This page failed to load: ${e.message || e}`));
  }
  // After a navigation, focus moves to the new page (screen readers announce it); not on first load.
  if (ev && ticket === rendering && document.activeElement === document.body) main.focus({ preventScroll: true });
}

function markNav(path) {
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.path === path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function onSignedIn(u) {
  user = u;
  renderNav();
  // The operator (seed 000's admin key) starts on its management panel: keys and stats.
  const start = u.id === "operator" ? "/admin/keys" : "/";
  if (currentPath() === start) route(); else location.hash = "#" + start;
}

async function boot() {
  try {
    user = await whoAmI();
  } catch (e) {
    user = null;
    document.getElementById("main").replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
  }
  renderNav();
  document.getElementById("logout").addEventListener("click", async () => {
    await signOut();
    user = null;
    renderNav();
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    location.hash = "#/";
    route();
  });
  window.addEventListener("tg:signed-out", () => {
    if (!user) return;
    user = null;
    renderNav();
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    route();
  });
  window.addEventListener("hashchange", route);
  await route();
}

boot();
