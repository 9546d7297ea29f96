// The console's one way to the REST API: credentials, CSRF and error messages in one place.
//
// A browser session is the tg_session cookie (HttpOnly, SameSite=Strict, set by /api/auth/login
// or /register); every write carries X-CSRF-Token copied from the readable tg_csrf cookie
// (ACCOUNTS_API.md). No credential is ever kept in page storage.

const WRITE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
  get missing() { return (this.status === 404 || this.status === 405) && isRouteMissing(this.body); }
}

// aiohttp's own 404 / 405 for a path or method no route serves (the bridge renders them as
// {"error": {"message": "Not found" | "Method not allowed"}}): a route not on this gateway yet.
function isRouteMissing(body) {
  const m = body && typeof body.error === "object" && body.error ? body.error.message : "";
  return m === "Not found" || m === "Method not allowed";
}

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [k, v] = part.trim().split("=");
    if (k === "tg_csrf") return decodeURIComponent(v || "");
  }
  return "";
}

function authHeaders(method) {
  const h = {};
  if (WRITE.has(method)) {
    const csrf = csrfToken();
    if (csrf) h["X-CSRF-Token"] = csrf;
  }
  return h;
}

// Words for a failed call, from whichever error shape the route uses.
export function errorMessage(status, body) {
  let msg = "";
  if (body && typeof body === "object") {
    const e = body.error;
    if (e && typeof e === "object") msg = e.message || e.code || "";
    else if (typeof e === "string") msg = body.message ? (e === body.message ? e : `${e}: ${body.message}`) : e;
    if (!msg && body.message) msg = body.message;
    if (body.details && body.details.length) {
      msg += " (" + body.details.map((d) => `${d.field}: ${d.message}`).join("; ") + ")";
    }
  }
  if (isRouteMissing(body)) msg = "";
  if (msg === "csrf") msg = "The request was refused: its CSRF token is missing or stale. Reload the page and try again.";
  const plain = {
    0: "The gateway could not be reached. Is it running?",
    401: "You are not signed in, or your session has ended. Sign in again.",
    403: "You are not allowed to do this.",
    404: "This gateway does not offer that yet (the route is missing).",
    405: "This gateway does not offer that action yet (the route is missing).",
    429: "Too many requests: a rate limit was reached. Wait a moment and retry.",
    502: "The model provider failed to answer.",
    503: "The gateway is unavailable right now.",
  };
  return msg || plain[status] || `The request failed with HTTP ${status}.`;
}

// How many API calls are on their way (document.body's data-busy), so a test can wait for quiet.
function inflight(d) {
  const n = (Number(document.body.dataset.busy) || 0) + d;
  document.body.dataset.busy = String(n);
}

export async function request(method, path, body, opts = {}) {
  const headers = { Accept: "application/json", ...authHeaders(method), ...(opts.headers || {}) };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (opts.signal) init.signal = opts.signal;
  let res;
  inflight(1);
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, errorMessage(0, null), null);
  } finally {
    inflight(-1);
  }
  if (opts.raw) {
    if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, await safeJson(res)), null);
    return res;
  }
  const data = res.status === 204 ? null : await safeJson(res);
  if (!res.ok) {
    if (res.status === 401 && !opts.quiet401) window.dispatchEvent(new CustomEvent("tg:signed-out"));
    throw new ApiError(res.status, errorMessage(res.status, data), data);
  }
  return data;
}

async function safeJson(res) {
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return { error: text.slice(0, 200) }; }
}

export const get = (p, o) => request("GET", p, undefined, o);
export const post = (p, b, o) => request("POST", p, b === undefined ? {} : b, o);
export const put = (p, b) => request("PUT", p, b);
export const patch = (p, b) => request("PATCH", p, b);
export const del = (p) => request("DELETE", p);

// Headers for a call made outside request() (the playground's streamed fetch).
export function headersFor(method) {
  return authHeaders(method);
}

// ---------------------------------------------------------------- the signed-in user

// Who is signed in: the session cookie's user from /api/auth/me. Asked only when there may be a
// session (the tg_csrf cookie is there), so a signed-out visit makes no failing request.
export async function whoAmI() {
  if (!csrfToken()) return null;
  try {
    const me = await request("GET", "/api/auth/me", undefined, { quiet401: true });
    const user = me && me.user ? me.user : me;
    return user && user.role ? user : null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export function userOf(resp) {
  return resp && resp.user ? resp.user : null;
}

export async function signOut() {
  try { await request("POST", "/api/auth/logout", {}, { quiet401: true }); } catch { /* already gone */ }
}
