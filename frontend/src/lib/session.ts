/**
 * The browser session: the access token lives only in this module's memory; the refresh token is an HttpOnly
 * cookie (`reelhouse_refresh`, Path=/api/auth) that JavaScript never sees. On page load `restoreSession()` asks
 * /api/auth/refresh for a fresh access token with that cookie; a timer refreshes it again about a minute before
 * it expires. Refreshes are serialised across tabs (Web Locks; a lease in localStorage where the page is not a
 * secure context and Web Locks are missing) because each one rotates the cookie and a spent refresh token presented
 * again revokes the whole session family. The server forgives a spent token presented again within a few seconds
 * (409 refresh_superseded: another tab got there first and the browser already holds the newer cookie), so a tab
 * that raced another one past the lock retries once.
 */
import { errorFromResponse } from "./errors";
import type { Tenant, User } from "./types";

export interface Session {
  accessToken: string;
  user: User;
  tenant: Tenant | null;
  /** ms since epoch */
  expiresAt: number;
}

export type SessionState =
  | { status: "loading"; session: null }
  | { status: "anonymous"; session: null; reason?: "expired" | "logout" }
  | { status: "authenticated"; session: Session };

interface TokenResponse {
  access_token: string;
  expires_in: number;
  user: User;
  tenant?: Tenant;
}

type Listener = (state: SessionState) => void;

let state: SessionState = { status: "loading", session: null };
const listeners = new Set<Listener>();
let refreshTimer: ReturnType<typeof setTimeout> | null = null;
let inFlight: Promise<boolean> | null = null;
let restoring: Promise<void> | null = null;
let channel: BroadcastChannel | null = null;
let listening = false;
/** The last refresh could not get an answer about the session (network down, server trouble). */
let transient = false;

/** Answers to a refresh that refuse the session (rather than failing to answer about it). */
const REFUSED = new Set([400, 401, 409, 422]);
/** How long (at least) a tab whose refresh token another tab spent a moment ago waits for that answer to land. */
const SUPERSEDED_RETRY_MS = 300;

// A hint (not a secret) that this browser has a session cookie, so logged-out visits skip a refresh call that
// can only fail. The cookie itself is HttpOnly and cannot be looked at.
const HINT = "reelhouse.session";

function setHint(on: boolean) {
  try {
    if (on) localStorage.setItem(HINT, "1");
    else localStorage.removeItem(HINT);
  } catch {
    // storage disabled: every visit tries the refresh
  }
}

function hinted(): boolean {
  try {
    return localStorage.getItem(HINT) !== null;
  } catch {
    return true;
  }
}

function setState(next: SessionState) {
  if (next.status === "authenticated") setHint(true);
  else if (next.status === "anonymous") setHint(false);
  state = next;
  scheduleRefresh();
  for (const listener of listeners) listener(state);
}

export function getSessionState(): SessionState {
  return state;
}

export function subscribeSession(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function getAccessToken(): string | null {
  return state.status === "authenticated" ? state.session.accessToken : null;
}

function scheduleRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
  if (state.status !== "authenticated" || typeof window === "undefined") return;
  const remaining = (state.session.expiresAt - Date.now()) / 1000;
  // About a minute before expiry; half-way through for short-lived tokens.
  const delay = Math.max(5, remaining > 120 ? remaining - 60 : remaining / 2);
  refreshTimer = setTimeout(() => {
    void refreshSession();
  }, delay * 1000);
}

async function postJson(path: string, body: unknown): Promise<Response> {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function withRefreshLock<T>(work: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  if (locks && typeof locks.request === "function") {
    return locks.request("reelhouse-refresh", work) as Promise<T>;
  }
  return withStorageLease(work);
}

// Web Locks exist only in secure contexts (https, localhost). Elsewhere (plain http on a LAN name) tabs take
// turns through a lease in localStorage: who holds it and until when. Writes to localStorage are not atomic
// across tabs, so a tab that took the lease waits a moment and reads it back before going ahead; a tab that
// finds it taken waits for the holder to release it (a storage event) or for it to expire (a closed tab).
const LEASE = "reelhouse.refresh-lease";
const LEASE_MS = 10_000;
const LEASE_SETTLE_MS = 120;
const tabId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

interface Lease {
  owner: string;
  until: number;
}

function readLease(): Lease | null {
  try {
    const lease = JSON.parse(localStorage.getItem(LEASE) ?? "null") as Partial<Lease> | null;
    return lease && typeof lease.owner === "string" && typeof lease.until === "number" ? (lease as Lease) : null;
  } catch {
    return null;
  }
}

function releaseLease() {
  try {
    if (readLease()?.owner === tabId) localStorage.removeItem(LEASE);
  } catch {
    // storage disabled
  }
}

/** Resolves when another tab changes the lease, or after `ms`. */
function leaseChanged(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("storage", onStorage);
      resolve();
    };
    const onStorage = (event: StorageEvent) => {
      if (event.key === LEASE || event.key === null) done();
    };
    const timer = setTimeout(done, Math.max(50, ms));
    window.addEventListener("storage", onStorage);
  });
}

async function withStorageLease<T>(work: () => Promise<T>): Promise<T> {
  // Waiting is bounded: past it the tab goes ahead anyway, and the server's 409 for a raced refresh covers it.
  const giveUpAt = Date.now() + LEASE_MS + 5_000;
  for (let held = false; !held && Date.now() < giveUpAt; ) {
    const lease = readLease();
    if (lease && lease.owner !== tabId && lease.until > Date.now()) {
      await leaseChanged(Math.min(1000, lease.until - Date.now()));
      continue;
    }
    await sleep(Math.random() * 40); // tabs woken by the same release do not all write at once
    const taken = readLease();
    if (taken && taken.owner !== tabId && taken.until > Date.now()) continue;
    try {
      localStorage.setItem(LEASE, JSON.stringify({ owner: tabId, until: Date.now() + LEASE_MS }));
    } catch {
      break; // no storage: no lock either
    }
    await sleep(LEASE_SETTLE_MS);
    held = readLease()?.owner === tabId;
  }
  try {
    return await work();
  } finally {
    releaseLease();
  }
}

async function fetchTenant(token: string): Promise<Tenant | null> {
  try {
    const response = await fetch("/api/auth/me", {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) return null;
    const body = (await response.json()) as { tenant?: Tenant };
    return body.tenant ?? null;
  } catch {
    return null;
  }
}

async function accept(body: TokenResponse, tenant?: Tenant | null): Promise<Session> {
  const known = state.status === "authenticated" && state.session.user.tenant_id === body.user.tenant_id
    ? state.session.tenant
    : null;
  const session: Session = {
    accessToken: body.access_token,
    user: body.user,
    tenant: tenant ?? body.tenant ?? known ?? (await fetchTenant(body.access_token)),
    expiresAt: Date.now() + body.expires_in * 1000,
  };
  setState({ status: "authenticated", session });
  return session;
}

async function superseded(response: Response): Promise<boolean> {
  if (response.status !== 409) return false;
  return (await errorFromResponse(response.clone())).code === "refresh_superseded";
}

/** POST /api/auth/refresh; once more, a moment later, when another tab spent the same cookie just before. */
async function postRefresh(): Promise<Response> {
  const response = await postJson("/api/auth/refresh", {});
  if (!(await superseded(response))) return response;
  // Meanwhile the browser stores the newer cookie from the other tab's answer. The random part keeps tabs that
  // raced together from retrying together.
  await sleep(SUPERSEDED_RETRY_MS * (1 + Math.random()));
  return postJson("/api/auth/refresh", {});
}

/**
 * Swap the refresh cookie for a new access token. Resolves false when there is no (valid) session. A refusal
 * while signed in ends the session here (reason "expired": the login page says so); a failure to get an answer
 * (offline, server trouble) keeps it, and a later call tries again.
 */
export function refreshSession(): Promise<boolean> {
  if (inFlight) return inFlight;
  inFlight = withRefreshLock(async () => {
    let response: Response;
    try {
      response = await postRefresh();
    } catch {
      transient = true;
      return false; // offline: keep what we have; the next call retries
    }
    transient = !response.ok && !REFUSED.has(response.status);
    if (!response.ok) {
      if (!transient) sessionExpired();
      return false;
    }
    await accept((await response.json()) as TokenResponse);
    return true;
  }).finally(() => {
    inFlight = null;
  });
  return inFlight;
}

/** Whether the last failed refresh failed for want of an answer (offline, server trouble), not a refusal. */
export function refreshWasTransient(): boolean {
  return transient;
}

/** On page load: a session cookie, if any, becomes an access token. */
export function restoreSession(): Promise<void> {
  if (restoring) return restoring;
  listenToOtherTabs();
  restoring = (hinted() ? refreshSession() : Promise.resolve(false)).then((ok) => {
    if (!ok && state.status === "loading") {
      const keepHint = transient;
      setState({ status: "anonymous", session: null });
      if (keepHint) setHint(true); // the server could not be asked: the cookie may still be good
    }
  });
  return restoring;
}

/** Called when the server refused the session (a 401 that a refresh could not cure). */
export function sessionExpired() {
  if (state.status === "authenticated") setState({ status: "anonymous", session: null, reason: "expired" });
}

export async function login(email: string, password: string, tenant?: string): Promise<Session> {
  const body: Record<string, string> = { email, password, session: "cookie" };
  if (tenant) body.tenant = tenant;
  const response = await postJson("/api/auth/login", body);
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  return accept((await response.json()) as TokenResponse);
}

export async function register(input: {
  tenant_name: string;
  email: string;
  password: string;
  display_name?: string;
}): Promise<Session> {
  const response = await postJson("/api/auth/register", { ...input, session: "cookie" });
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  return accept((await response.json()) as TokenResponse);
}

export async function logout(): Promise<void> {
  try {
    await withRefreshLock(() => postJson("/api/auth/logout", {}));
  } catch {
    // the cookie is HttpOnly: if the server cannot be reached we still forget the access token
  }
  setState({ status: "anonymous", session: null, reason: "logout" });
  channel?.postMessage("logout");
}

function listenToOtherTabs() {
  if (typeof window === "undefined" || listening) return;
  listening = true;
  window.addEventListener("pagehide", releaseLease); // a tab reloaded or closed mid-refresh lets the others go
  if (typeof BroadcastChannel !== "undefined") {
    channel = new BroadcastChannel("reelhouse-session");
    channel.onmessage = (message) => {
      if (message.data === "logout" && state.status === "authenticated") {
        setState({ status: "anonymous", session: null, reason: "logout" });
      }
    };
  }
  // Timers are throttled in background tabs: catch up when the tab becomes visible again.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || state.status !== "authenticated") return;
    if (state.session.expiresAt - Date.now() < 90_000) void refreshSession();
  });
}
