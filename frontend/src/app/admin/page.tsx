"use client";

import { Fragment, useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { CopyField } from "@/components/CopyButton";
import { Loading, RequireAuth } from "@/components/RequireAuth";
import { api } from "@/lib/api";
import { useUser } from "@/lib/auth";
import { ApiError } from "@/lib/errors";
import { formatDate } from "@/lib/format";
import { ROLES, WEBHOOK_EVENTS, type Delivery, type Page, type Role, type User, type Webhook, type WebhookEvent } from "@/lib/types";

function generatePassword(): string {
  const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

const ROLE_HINTS: Record<Role, string> = {
  viewer: "Watches the organisation's videos.",
  editor: "Also uploads, edits and deletes videos.",
  admin: "Everything, users and webhooks included.",
};

function message(err: unknown, fallback: string): string {
  return err instanceof Error ? err.message : fallback;
}

/** A user's role. Choosing one in the list (arrow keys move through it) only marks it; Save sends it, and
 * granting admin asks once more first. */
function RoleControl({ user, locked, save }: { user: User; locked: boolean; save: (role: Role) => Promise<boolean> }) {
  const [draft, setDraft] = useState<Role>(user.role);
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const selectRef = useRef<HTMLSelectElement>(null);
  const confirmRef = useRef<HTMLButtonElement>(null);
  const refocus = useRef(false);
  const changed = draft !== user.role;

  // The saved role changed (saved here, or the list was reloaded): show it.
  const [savedRole, setSavedRole] = useState(user.role);
  if (user.role !== savedRole) {
    setSavedRole(user.role);
    setDraft(user.role);
    setConfirming(false);
  }

  useEffect(() => {
    if (confirming) confirmRef.current?.focus();
  }, [confirming]);

  // The buttons go away once saved: the focus goes back to the list (enabled again by then).
  useEffect(() => {
    if (busy || !refocus.current) return;
    refocus.current = false;
    selectRef.current?.focus();
  }, [busy]);

  async function commit() {
    setBusy(true);
    if (!(await save(draft))) setDraft(user.role);
    refocus.current = true;
    setBusy(false);
    setConfirming(false);
  }

  function undo() {
    setDraft(user.role);
    setConfirming(false);
    selectRef.current?.focus();
  }

  return (
    <div className="role-control">
      <label className="visually-hidden" htmlFor={`role-${user.id}`}>
        Role of {user.email}
      </label>
      <select
        ref={selectRef}
        id={`role-${user.id}`}
        value={draft}
        disabled={locked || busy}
        title={locked ? "Another admin can change your role" : undefined}
        onChange={(e) => {
          setDraft(e.target.value as Role);
          setConfirming(false);
        }}
        data-testid="user-role"
      >
        {ROLES.map((role) => (
          <option key={role} value={role}>
            {role}
          </option>
        ))}
      </select>
      {changed && !confirming && (
        <span className="btn-row">
          <button
            type="button"
            className="btn btn--small btn--primary"
            disabled={busy}
            onClick={() => (draft === "admin" ? setConfirming(true) : void commit())}
            data-testid="user-role-save"
          >
            {busy ? "Saving…" : "Save"}
            <span className="visually-hidden"> the role of {user.email}</span>
          </button>
          <button type="button" className="btn btn--small btn--ghost" disabled={busy} onClick={undo}>
            Cancel<span className="visually-hidden"> the role change of {user.email}</span>
          </button>
        </span>
      )}
      {confirming && (
        <div className="confirm" role="group" aria-labelledby={`role-confirm-${user.id}`}>
          <p id={`role-confirm-${user.id}`} className="small">
            Make {user.email} an admin? Admins manage users, their roles and webhooks.
          </p>
          <div className="btn-row">
            <button
              ref={confirmRef}
              type="button"
              className="btn btn--small btn--danger-solid"
              disabled={busy}
              onClick={() => void commit()}
              data-testid="user-role-confirm"
            >
              {busy ? "Saving…" : "Make admin"}
            </button>
            <button type="button" className="btn btn--small" disabled={busy} onClick={undo}>
              Cancel
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

async function fetchUsers(): Promise<User[]> {
  const all: User[] = [];
  for (let page = 1; page < 50; page++) {
    const result = await api<Page<User>>(`/api/auth/users?page=${page}&per_page=100`);
    all.push(...result.items);
    if (all.length >= result.total || result.items.length === 0) break;
  }
  return all;
}

function Users() {
  const me = useUser();
  const [users, setUsers] = useState<User[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [form, setForm] = useState({ email: "", display_name: "", role: "editor" as Role, password: "" });
  const [created, setCreated] = useState<{ email: string; password: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirmRemove, setConfirmRemove] = useState<string | null>(null);

  const [reloadKey, setReloadKey] = useState(0);
  const load = useCallback(() => setReloadKey((k) => k + 1), []);

  useEffect(() => {
    let cancelled = false;
    fetchUsers().then(
      (all) => !cancelled && setUsers(all),
      (err) => !cancelled && setError(message(err, "Could not load the users.")),
    );
    return () => {
      cancelled = true;
    };
  }, [reloadKey]);

  async function invite(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setNotice(null);
    const password = form.password || generatePassword();
    try {
      await api<User>("/api/auth/users", {
        method: "POST",
        body: {
          email: form.email.trim(),
          password,
          role: form.role,
          ...(form.display_name.trim() ? { display_name: form.display_name.trim() } : {}),
        },
      });
      setCreated({ email: form.email.trim(), password });
      setForm({ email: "", display_name: "", role: form.role, password: "" });
      load();
    } catch (err) {
      setError(message(err, "Could not add the user."));
    } finally {
      setBusy(false);
    }
  }

  async function changeRole(user: User, role: Role): Promise<boolean> {
    setError(null);
    setNotice(null);
    try {
      const updated = await api<User>(`/api/auth/users/${encodeURIComponent(user.id)}`, { method: "PATCH", body: { role } });
      setUsers((list) => list?.map((u) => (u.id === user.id ? updated : u)) ?? null);
      setNotice(`${user.email} is now ${role === "viewer" ? "a" : "an"} ${role}.`);
      return true;
    } catch (err) {
      setError(message(err, "Could not change the role."));
      load();
      return false;
    }
  }

  async function remove(user: User) {
    setError(null);
    setNotice(null);
    try {
      await api(`/api/auth/users/${encodeURIComponent(user.id)}`, { method: "DELETE" });
      setConfirmRemove(null);
      setNotice(`${user.email} was removed.`);
      load();
    } catch (err) {
      setError(message(err, "Could not remove the user."));
    }
  }

  return (
    <section className="card" aria-labelledby="users-title" data-testid="users">
      <h2 id="users-title">Users</h2>
      {error && (
        <div className="alert alert--error" role="alert" data-testid="users-error">
          {error}
        </div>
      )}
      <p role="status" className="muted small">
        {notice}
      </p>
      {!users ? (
        <Loading label="Loading users…" />
      ) : (
        <div className="table-wrap">
          <table className="table table--stack">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.map((user) => (
                <tr key={user.id} data-testid="user-row" data-email={user.email}>
                  <td>
                    <div>{user.display_name || user.email}</div>
                    <div className="muted small">{user.email}</div>
                  </td>
                  <td>
                    <RoleControl user={user} locked={user.id === me?.id} save={(role) => changeRole(user, role)} />
                  </td>
                  <td>
                    {user.id === me?.id ? (
                      <span className="muted small">You</span>
                    ) : confirmRemove === user.id ? (
                      <span className="btn-row">
                        <button type="button" className="btn btn--small btn--danger-solid" onClick={() => void remove(user)} data-testid="user-remove-confirm">
                          Remove {user.email}
                        </button>
                        <button type="button" className="btn btn--small" onClick={() => setConfirmRemove(null)}>
                          Cancel
                        </button>
                      </span>
                    ) : (
                      <button type="button" className="btn btn--small btn--danger" onClick={() => setConfirmRemove(user.id)} data-testid="user-remove">
                        Remove<span className="visually-hidden"> {user.email}</span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <h3 style={{ marginTop: "1.5rem" }}>Invite someone</h3>
      <form onSubmit={invite} data-testid="invite-form">
        <div className="form-grid">
          <div className="field">
            <label htmlFor="invite-email">Email</label>
            <input
              id="invite-email"
              type="email"
              required
              value={form.email}
              onChange={(e) => setForm({ ...form, email: e.target.value })}
            />
          </div>
          <div className="field">
            <label htmlFor="invite-name">Name (optional)</label>
            <input id="invite-name" type="text" value={form.display_name} onChange={(e) => setForm({ ...form, display_name: e.target.value })} />
          </div>
          <div className="field">
            <label htmlFor="invite-role">Role</label>
            <select
              id="invite-role"
              value={form.role}
              onChange={(e) => setForm({ ...form, role: e.target.value as Role })}
              aria-describedby="invite-role-hint"
            >
              <option value="viewer">Viewer</option>
              <option value="editor">Editor</option>
              <option value="admin">Admin</option>
            </select>
            <span className="hint" id="invite-role-hint">
              {ROLE_HINTS[form.role]}
            </span>
          </div>
          <div className="field">
            <label htmlFor="invite-password">Initial password</label>
            <input
              id="invite-password"
              type="text"
              autoComplete="off"
              minLength={10}
              placeholder="Leave empty to generate one"
              value={form.password}
              onChange={(e) => setForm({ ...form, password: e.target.value })}
              aria-describedby="invite-password-hint"
            />
            <span className="hint" id="invite-password-hint">
              At least 10 characters. Share it with them safely.
            </span>
          </div>
        </div>
        <button type="submit" className="btn btn--primary" disabled={busy} data-testid="invite-submit">
          {busy ? "Adding…" : "Add user"}
        </button>
      </form>
      {created && (
        <div className="secret-box" role="status" data-testid="invite-result">
          <p>
            <strong>{created.email}</strong> can now log in with this password (shown once):
          </p>
          <CopyField value={created.password} label={`Initial password for ${created.email}`} testId="invite-password-value" />
          <button type="button" className="btn btn--small btn--ghost" style={{ marginTop: "0.5rem" }} onClick={() => setCreated(null)}>
            Done
          </button>
        </div>
      )}
    </section>
  );
}

function Deliveries({ webhook }: { webhook: Webhook }) {
  const [items, setItems] = useState<Delivery[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<Page<Delivery>>(`/api/webhooks/${encodeURIComponent(webhook.id)}/deliveries?per_page=20`).then(
      (page) => setItems(page.items),
      (err) => setError(message(err, "Could not load deliveries.")),
    );
  }, [webhook.id]);
  if (error) return <p className="field-error">{error}</p>;
  if (!items) return <Loading label="Loading deliveries…" />;
  if (items.length === 0) return <p className="muted small">No deliveries yet.</p>;
  return (
    <div className="table-wrap">
      <table className="table" data-testid="deliveries">
        <caption className="visually-hidden">Recent deliveries to {webhook.url}</caption>
        <thead>
          <tr>
            <th scope="col">Event</th>
            <th scope="col">Status</th>
            <th scope="col">Attempts</th>
            <th scope="col">Last answer</th>
            <th scope="col">When</th>
          </tr>
        </thead>
        <tbody>
          {items.map((d) => (
            <tr key={d.id}>
              <td className="mono">{d.event}</td>
              <td>
                <span className={`badge badge--${d.status === "delivered" ? "ready" : d.status === "failed" ? "failed" : "processing"}`}>{d.status}</span>
              </td>
              <td>{d.attempts}</td>
              <td className="small">{d.last_status_code ?? d.last_error ?? "–"}</td>
              <td className="small">{formatDate(d.updated_at ?? d.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Webhooks() {
  const [hooks, setHooks] = useState<Webhook[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<WebhookEvent[]>([...WEBHOOK_EVENTS]);
  const [secret, setSecret] = useState<{ url: string; secret: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [open, setOpen] = useState<string | null>(null);
  const [confirmDelete, setConfirmDelete] = useState<string | null>(null);

  const [reloadKey, setReloadKey] = useState(0);
  const load = useCallback(() => setReloadKey((k) => k + 1), []);

  useEffect(() => {
    let cancelled = false;
    api<Page<Webhook>>("/api/webhooks?per_page=100").then(
      (page) => !cancelled && setHooks(page.items),
      (err) => !cancelled && setError(message(err, "Could not load the webhooks.")),
    );
    return () => {
      cancelled = true;
    };
  }, [reloadKey]);

  async function add(event: FormEvent) {
    event.preventDefault();
    if (events.length === 0) {
      setError("Choose at least one event.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const created = await api<Webhook>("/api/webhooks", { method: "POST", body: { url: url.trim(), events } });
      if (created.secret) setSecret({ url: created.url, secret: created.secret });
      setUrl("");
      load();
    } catch (err) {
      setError(err instanceof ApiError && err.code === "unsafe_url" ? `${err.message}` : message(err, "Could not add the webhook."));
    } finally {
      setBusy(false);
    }
  }

  async function remove(hook: Webhook) {
    setError(null);
    try {
      await api(`/api/webhooks/${encodeURIComponent(hook.id)}`, { method: "DELETE" });
      setConfirmDelete(null);
      load();
    } catch (err) {
      setError(message(err, "Could not remove the webhook."));
    }
  }

  return (
    <section className="card" aria-labelledby="webhooks-title" data-testid="webhooks">
      <h2 id="webhooks-title">Webhooks</h2>
      <p className="muted small">
        Reelhouse POSTs <code>video.ready</code> and <code>video.failed</code> to these URLs, signed with HMAC-SHA256 in
        the <code>Reelhouse-Signature</code> header.
      </p>
      {error && (
        <div className="alert alert--error" role="alert" data-testid="webhooks-error">
          {error}
        </div>
      )}
      {secret && (
        <div className="secret-box" role="status" data-testid="webhook-secret">
          <p>
            The signing secret for <strong className="mono">{secret.url}</strong>. It is shown only now: copy it into
            your receiver.
          </p>
          <CopyField value={secret.secret} label="Webhook signing secret" testId="webhook-secret-value" />
          <button type="button" className="btn btn--small btn--ghost" style={{ marginTop: "0.5rem" }} onClick={() => setSecret(null)}>
            I have stored it
          </button>
        </div>
      )}
      {!hooks ? (
        <Loading label="Loading webhooks…" />
      ) : hooks.length === 0 ? (
        <p className="muted">No webhooks yet.</p>
      ) : (
        <div className="table-wrap">
          <table className="table table--stack">
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Added</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {hooks.map((hook) => (
                <Fragment key={hook.id}>
                  <tr data-testid="webhook-row">
                    <td className="mono">
                      {hook.url}
                      {!hook.active && <span className="badge" style={{ marginLeft: "0.4rem" }}>inactive</span>}
                    </td>
                    <td className="small" data-label="Events">
                      {hook.events.join(", ")}
                    </td>
                    <td className="small" data-label="Added">
                      {formatDate(hook.created_at)}
                    </td>
                    <td>
                      <span className="btn-row">
                        <button
                          type="button"
                          className="btn btn--small"
                          aria-expanded={open === hook.id}
                          aria-controls={`deliveries-${hook.id}`}
                          onClick={() => setOpen(open === hook.id ? null : hook.id)}
                        >
                          Deliveries
                        </button>
                        {confirmDelete === hook.id ? (
                          <>
                            <button type="button" className="btn btn--small btn--danger-solid" onClick={() => void remove(hook)}>
                              Remove webhook
                            </button>
                            <button type="button" className="btn btn--small" onClick={() => setConfirmDelete(null)}>
                              Cancel
                            </button>
                          </>
                        ) : (
                          <button type="button" className="btn btn--small btn--danger" onClick={() => setConfirmDelete(hook.id)} data-testid="webhook-remove">
                            Remove<span className="visually-hidden"> {hook.url}</span>
                          </button>
                        )}
                      </span>
                    </td>
                  </tr>
                  {open === hook.id && (
                    <tr id={`deliveries-${hook.id}`}>
                      <td colSpan={4}>
                        <Deliveries webhook={hook} />
                      </td>
                    </tr>
                  )}
                </Fragment>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <h3 style={{ marginTop: "1.5rem" }}>Add a webhook</h3>
      <form onSubmit={add} data-testid="webhook-form">
        <div className="field">
          <label htmlFor="webhook-url">URL</label>
          <input
            id="webhook-url"
            type="url"
            required
            placeholder="https://example.com/hooks/reelhouse"
            value={url}
            onChange={(e) => setUrl(e.target.value)}
          />
        </div>
        <fieldset className="field" style={{ border: 0, padding: 0, margin: "0 0 0.9rem" }}>
          <legend className="label">Events</legend>
          <div className="checkbox-row">
            {WEBHOOK_EVENTS.map((name) => (
              <label key={name}>
                <input
                  type="checkbox"
                  checked={events.includes(name)}
                  onChange={(e) =>
                    setEvents((list) => (e.target.checked ? [...list, name] : list.filter((x) => x !== name)))
                  }
                />
                <span className="mono">{name}</span>
              </label>
            ))}
          </div>
        </fieldset>
        <button type="submit" className="btn btn--primary" disabled={busy} data-testid="webhook-submit">
          {busy ? "Adding…" : "Add webhook"}
        </button>
      </form>
    </section>
  );
}

export default function AdminPage() {
  return (
    <RequireAuth role="admin">
      <div className="page">
        <div className="page-head">
          <h1>Administration</h1>
        </div>
        <div className="stack">
          <Users />
          <Webhooks />
        </div>
      </div>
    </RequireAuth>
  );
}
