// The operator API as the console uses it: the operator's tokens (kept in this tab's
// sessionStorage, refreshed before the access token expires) and JSON requests that
// turn every error answer into an `ApiFailure` with the API's `code`, `message` and
// `field`. The API checks every request again; the console only hides what a role
// cannot do.

const KEY = "trunkd.session";
const ROLES = ["viewer", "dispatcher", "admin"];

export class ApiFailure extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "http_error";
    this.field = body.field;
  }
}

export class Api {
  // `onLogout(reason)` is called when the session ends (logout, or a refresh refused).
  constructor(onLogout) {
    this.onLogout = onLogout;
    this.session = null;
    this.timer = null;
    this.refreshing = null;
  }

  // The session this tab held before a reload, if its refresh token still works.
  async restore() {
    const saved = sessionStorage.getItem(KEY);
    if (!saved) return false;
    try {
      this.session = JSON.parse(saved);
      await this.refresh();
      return true;
    } catch {
      this.forget();
      return false;
    }
  }

  async login(username, password) {
    const tokens = await this.call("POST", "/api/v1/auth/login", { username, password }, null);
    await this.adopt(tokens);
  }

  async logout() {
    const s = this.session;
    this.forget();
    if (s) {
      try {
        await this.call("POST", "/api/v1/auth/logout", { refresh_token: s.refresh }, s.access);
      } catch {
        // The session is gone from this page either way.
      }
    }
    this.onLogout("logged out");
  }

  // New tokens for the refresh token, once at a time.
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.call("POST", "/api/v1/auth/refresh", { refresh_token: this.session.refresh }, null)
        .then((t) => this.adopt(t))
        .finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  async adopt(tokens) {
    const access = tokens.access_token;
    const who = await this.call("GET", "/api/v1/auth/whoami", undefined, access);
    this.session = {
      access,
      refresh: tokens.refresh_token,
      expiresAt: Date.now() + tokens.expires_in * 1000,
      name: who.name,
      role: who.role,
      fleets: who.fleets,
    };
    sessionStorage.setItem(KEY, JSON.stringify(this.session));
    clearTimeout(this.timer);
    // Refreshed at four fifths of its life, so a request never carries an expired one.
    const after = Math.max(1000, tokens.expires_in * 800);
    this.timer = setTimeout(() => this.refresh().catch((e) => this.lost(e)), after);
  }

  lost(e) {
    this.forget();
    this.onLogout(`session ended: ${e.message}`);
  }

  forget() {
    clearTimeout(this.timer);
    this.session = null;
    sessionStorage.removeItem(KEY);
  }

  // Whether the operator's role is at least `role`.
  can(role) {
    return this.session !== null && ROLES.indexOf(this.session.role) >= ROLES.indexOf(role);
  }

  // `method path` with the session's token: the answer's JSON (null for 204). A token
  // refused (expired, or signed by a key rotated since) is refreshed once and the
  // request sent again; a refresh refused ends the session.
  async request(method, path, body) {
    if (!this.session) throw new ApiFailure(401, { code: "missing_token", message: "not logged in" });
    try {
      return await this.call(method, path, body, this.session.access);
    } catch (e) {
      if (!(e instanceof ApiFailure) || e.status !== 401) throw e;
      try {
        await this.refresh();
      } catch (r) {
        this.lost(r);
        throw r;
      }
      return this.call(method, path, body, this.session.access);
    }
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  async call(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiFailure(0, { code: "unreachable", message: "the controller does not answer" });
    }
    if (r.status === 204) return null;
    let json;
    try {
      json = await r.json();
    } catch {
      json = { code: "http_error", message: `HTTP ${r.status}` };
    }
    if (!r.ok) throw new ApiFailure(r.status, json);
    return json;
  }
}

// A query string of the parameters in `q` that are set.
export function query(q) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}
