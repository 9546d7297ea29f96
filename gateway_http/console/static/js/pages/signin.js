// Sign in: email + password, first-user registration (that user becomes the admin), or the
// operator's admin key (seed 000).

import { get, post, userOf } from "../api.js";
import { h, field, input, statusLine } from "../dom.js";

export default async function render(view, ctx) {
  let registration = null; // null = unknown (the gateway has no /api/auth/registration yet)
  try {
    const r = await get("/api/auth/registration");
    registration = !!(r && (r.enabled ?? r.open));
  } catch { registration = null; }

  view.classList.add("signin");
  view.append(h("h1", null, "Sign in to Tollgate"),
    h("p", { class: "lead" }, "Your gateway's console: API tokens, provider keys, usage and spend, and a playground."));
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "How to sign in" });
  const panels = h("div");
  view.append(h("div", { class: "card narrow" }, tabs, panels));

  const forms = [["login", "Sign in", loginForm(ctx)]];
  if (registration !== false) forms.push(["register", "Create account", registerForm(ctx, registration)]);
  forms.push(["invite", "Invite", inviteForm(ctx)]);
  forms.push(["admin", "Admin key", adminForm(ctx)]);
  if (registration === false) {
    view.append(h("p", { class: "hint" }, "Registration is closed on this gateway: ask an administrator for an account."));
  }

  const buttons = forms.map(([id, label, panel], i) => {
    panel.id = `panel-${id}`;
    panel.setAttribute("role", "tabpanel");
    panel.setAttribute("aria-labelledby", `tab-${id}`);
    panel.hidden = i !== 0;
    panels.append(panel);
    const b = h("button", { type: "button", role: "tab", id: `tab-${id}`, "aria-controls": panel.id,
      "aria-selected": i === 0 ? "true" : "false", tabindex: i === 0 ? "0" : "-1" }, label);
    b.addEventListener("click", () => select(i));
    b.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight") select((i + 1) % forms.length, true);
      if (e.key === "ArrowLeft") select((i + forms.length - 1) % forms.length, true);
    });
    tabs.append(b);
    return b;
  });
  function select(i, focus) {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", j === i ? "true" : "false");
      b.tabIndex = j === i ? 0 : -1;
      forms[j][2].hidden = j !== i;
    });
    if (focus) buttons[i].focus();
  }
}

function credentialsForm(ctx, submitLabel, path, note) {
  const email = input({ type: "email", name: "email", autocomplete: "username", required: true });
  const password = input({ type: "password", name: "password", required: true,
    autocomplete: path.endsWith("register") ? "new-password" : "current-password", minlength: path.endsWith("register") ? 8 : null });
  const status = statusLine();
  const submit = h("button", { type: "submit" }, submitLabel);
  const form = h("form", { novalidate: true }, note ? h("p", { class: "hint" }, note) : null,
    field("Email", email), field("Password", password, path.endsWith("register") ? "At least 8 characters." : null), submit, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!email.value || !password.value) { status.fail("Enter your email and password."); return; }
    submit.disabled = true;
    status.clear();
    try {
      const resp = await post(path, { email: email.value, password: password.value }, { quiet401: true });
      ctx.signedIn(userOf(resp));
    } catch (err) {
      status.fail(err.status === 401 ? "The email or password is wrong." : err.message);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function loginForm(ctx) {
  return credentialsForm(ctx, "Sign in", "/api/auth/login");
}

function registerForm(ctx, registration) {
  return credentialsForm(ctx, "Create account", "/api/auth/register",
    "The first account created on a new gateway becomes its administrator." +
    (registration === null ? "" : " Registration is open."));
}

function inviteForm(ctx) {
  const token = input({ type: "password", name: "invite_token", autocomplete: "off", required: true });
  const password = input({ type: "password", name: "password", autocomplete: "new-password", minlength: 8, required: true });
  const status = statusLine();
  const submit = h("button", { type: "submit" }, "Set password and sign in");
  const form = h("form", { novalidate: true },
    h("p", { class: "hint" }, "An administrator added you and gave you a one-time invite token."),
    field("Invite token", token), field("New password", password, "At least 8 characters."), submit, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!token.value || !password.value) { status.fail("Enter the invite token and a password."); return; }
    submit.disabled = true;
    status.clear();
    try {
      const resp = await post("/api/auth/invite/accept", { invite_token: token.value, password: password.value }, { quiet401: true });
      ctx.signedIn(userOf(resp));
    } catch (err) {
      status.fail(err.status === 401 || err.status === 404 ? "That invite token is not valid, or was used already." : err.message);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function adminForm(ctx) {
  const key = input({ type: "password", name: "admin_key", autocomplete: "off", required: true });
  const status = statusLine();
  const submit = h("button", { type: "submit" }, "Sign in as operator");
  const form = h("form", { novalidate: true },
    h("p", { class: "hint" }, "The admin key printed when the gateway first started (or TOLLGATE_ADMIN_KEY)."),
    field("Admin key", key), submit, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!key.value) { status.fail("Enter the admin key."); return; }
    submit.disabled = true;
    status.clear();
    try {
      // The accounts API turns the admin key into an operator session (user "operator", role admin).
      const resp = await post("/api/auth/login", { admin_key: key.value }, { quiet401: true });
      key.value = "";
      ctx.signedIn(userOf(resp));
    } catch (err) {
      status.fail(err.status === 401 ? "That admin key is not valid." : err.message);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
