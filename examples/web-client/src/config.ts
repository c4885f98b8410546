// Where the services are, and the session kept in localStorage.

export interface Endpoints {
  /** Base URL of auth-service, e.g. http://127.0.0.1:50051 (no trailing slash). */
  auth: string;
  /** Base URL of task-service, e.g. http://127.0.0.1:50052 (no trailing slash). */
  tasks: string;
}

export const DEFAULT_ENDPOINTS: Endpoints = {
  auth: "http://127.0.0.1:50051",
  tasks: "http://127.0.0.1:50052",
};

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 500;

export interface Config {
  endpoints: Endpoints;
  /** Tasks per ListTasks page. */
  pageSize: number;
  /** Query parameters that were present but unusable, in plain words. */
  problems: string[];
}

/**
 * Reads the configuration from the page's query string:
 * `?auth=http://host:port&tasks=http://host:port&pageSize=N`. The query string is never
 * rewritten, so a reload keeps the same services.
 */
export function readConfig(search: string): Config {
  const params = new URLSearchParams(search);
  const problems: string[] = [];

  const endpoint = (name: "auth" | "tasks"): string => {
    const raw = params.get(name);
    if (raw === null || raw.trim() === "") return DEFAULT_ENDPOINTS[name];
    const parsed = parseBaseUrl(raw.trim());
    if (parsed === null) {
      problems.push(`Ignoring ?${name}=${raw}: expected an http:// or https:// URL.`);
      return DEFAULT_ENDPOINTS[name];
    }
    return parsed;
  };

  let pageSize = DEFAULT_PAGE_SIZE;
  const rawPageSize = params.get("pageSize");
  if (rawPageSize !== null) {
    const n = Number(rawPageSize);
    if (Number.isInteger(n) && n >= 1 && n <= MAX_PAGE_SIZE) {
      pageSize = n;
    } else {
      problems.push(`Ignoring ?pageSize=${rawPageSize}: expected a whole number from 1 to ${MAX_PAGE_SIZE}.`);
    }
  }

  return { endpoints: { auth: endpoint("auth"), tasks: endpoint("tasks") }, pageSize, problems };
}

function parseBaseUrl(raw: string): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return url.href.replace(/\/+$/, "");
}

/** A logged-in session: the bearer token, the refresh token that renews it, and who it belongs to. */
export interface Session {
  accessToken: string;
  /** Renews the access token (AuthService.Refresh); rotates on every use. */
  refreshToken: string;
  /** The session's id on the server (the `sid` claim): marks "this device" in the sessions list. */
  sessionId: string;
  email: string;
  /** Milliseconds since the epoch after which the token is no longer accepted. */
  expiresAt: number;
  /** The auth-service that issued the token: a token is only kept for that service. */
  authUrl: string;
}

export const SESSION_KEY = "todo-grpc.session";

export function loadSession(authUrl: string): Session | null {
  let raw: string | null;
  try {
    raw = localStorage.getItem(SESSION_KEY);
  } catch {
    return null;
  }
  if (raw === null) return null;
  try {
    const s = JSON.parse(raw) as Partial<Session>;
    if (
      typeof s.accessToken === "string" &&
      s.accessToken !== "" &&
      typeof s.email === "string" &&
      typeof s.expiresAt === "number" &&
      s.authUrl === authUrl
    ) {
      // A session stored before refresh tokens existed has none: it lasts until its token expires.
      const refreshToken = typeof s.refreshToken === "string" ? s.refreshToken : "";
      const sessionId = typeof s.sessionId === "string" ? s.sessionId : "";
      return { accessToken: s.accessToken, refreshToken, sessionId, email: s.email, expiresAt: s.expiresAt, authUrl: s.authUrl };
    }
  } catch {
    // Not ours or corrupted: treated as no session.
  }
  return null;
}

export function saveSession(session: Session): void {
  try {
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  } catch {
    // Storage disabled (private mode, quota): the session then lasts until the page closes.
  }
}

export function clearSession(): void {
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {
    // Nothing to clear.
  }
}
