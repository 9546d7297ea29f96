// Small DOM helpers: elements are built with textContent, never parsed from HTML, so no server string
// is ever parsed as markup; styles come from classes (the CSP has no 'unsafe-inline').

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uid = 0;
export const nextId = (p = "f") => `${p}${++uid}`;

// A labelled input: <label for=…> + control.
export function field(label, control, hint) {
  const id = control.id || (control.id = nextId());
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("small", { class: "hint" }, hint) : null);
}

export function input(attrs) { return h("input", { type: "text", ...attrs }); }

export function select(options, attrs = {}) {
  const s = h("select", attrs);
  for (const o of options) {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    s.append(h("option", { value }, label));
  }
  if (attrs.value !== undefined) s.value = attrs.value;
  return s;
}

export function button(label, onclick, attrs = {}) {
  return h("button", { type: "button", ...attrs, onclick }, label);
}

// A table from rows and [header, cell(row)] columns; an empty list shows `empty` instead.
export function table(rows, columns, empty, caption) {
  if (!rows || !rows.length) return h("p", { class: "empty" }, empty);
  const head = h("tr", null, columns.map(([title]) => h("th", { scope: "col" }, title)));
  const body = rows.map((r) => h("tr", null, columns.map(([title, cell]) => {
    const v = cell(r);
    return h("td", { "data-label": title }, v === undefined || v === null || v === "" ? "—" : v);
  })));
  return h("div", { class: "table-wrap" },
    h("table", null, caption ? h("caption", { class: "sr-only" }, caption) : null, h("thead", null, head), h("tbody", null, body)));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

// One status line per form: role=alert for failures so screen readers say why.
export function statusLine() {
  const el = h("p", { class: "status", "aria-live": "polite" });
  el.ok = (msg) => { el.className = "status ok"; el.setAttribute("role", "status"); el.textContent = msg; };
  el.fail = (msg) => { el.className = "status error"; el.setAttribute("role", "alert"); el.textContent = msg; };
  el.clear = () => { el.className = "status"; el.textContent = ""; };
  return el;
}

export function toast(msg, bad = false) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, 4000);
}

// Runs an action behind a button: disabled while it runs, the failure's words shown in `status`.
export async function act(btn, status, fn) {
  if (btn) btn.disabled = true;
  if (status) status.clear();
  try {
    return await fn();
  } catch (e) {
    const msg = e && e.message ? e.message : String(e);
    if (status) status.fail(msg); else toast(msg, true);
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}

// ---------------------------------------------------------------- formats

export function when(v) {
  if (v === null || v === undefined || v === "" || v === 0) return "";
  const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
  if (isNaN(d)) return String(v);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export const num = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"));

export function usd(n) {
  if (n === null || n === undefined || n === "") return "";
  const v = Number(n);
  return "$" + (v !== 0 && Math.abs(v) < 0.01 ? v.toFixed(6) : v.toFixed(2));
}

export function copyButton(text, label = "Copy") {
  const b = button(label, async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
    } catch {
      b.textContent = "Select and copy by hand";
    }
  }, { class: "secondary" });
  return b;
}

// A "this needs a gateway route that is not there yet" panel, or the error's words.
export function failure(e, what) {
  if (e && e.missing) {
    return h("p", { class: "empty" }, `${what} is not available on this gateway yet (its API route is missing).`);
  }
  return h("p", { class: "error", role: "alert" }, `${what} could not be loaded: ${e && e.message ? e.message : e}`);
}
