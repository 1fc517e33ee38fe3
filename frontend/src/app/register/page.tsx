"use client";

import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, useState, type FormEvent } from "react";
import { Loading } from "@/components/RequireAuth";
import { useSession } from "@/lib/auth";
import { ApiError } from "@/lib/errors";
import { register } from "@/lib/session";

const MIN_PASSWORD = 10;

export default function RegisterPage() {
  const router = useRouter();
  const state = useSession();
  const [form, setForm] = useState({ tenant_name: "", display_name: "", email: "", password: "" });
  const [error, setError] = useState<string | null>(null);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (state.status === "authenticated") router.replace("/");
  }, [state.status, router]);

  const set = (key: keyof typeof form) => (e: React.ChangeEvent<HTMLInputElement>) =>
    setForm((f) => ({ ...f, [key]: e.target.value }));

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setFieldErrors({});
    if (form.password.length < MIN_PASSWORD) {
      setFieldErrors({ password: `Use at least ${MIN_PASSWORD} characters.` });
      return;
    }
    setBusy(true);
    try {
      await register({
        tenant_name: form.tenant_name.trim(),
        email: form.email.trim(),
        password: form.password,
        display_name: form.display_name.trim() || undefined,
      });
      router.replace("/");
    } catch (err) {
      if (err instanceof ApiError) {
        setError(err.message);
        if (err.fields) setFieldErrors(err.fields);
        if (err.code === "weak_password") setFieldErrors({ password: err.message });
      } else {
        setError("Registration failed.");
      }
      setBusy(false);
    }
  }

  if (state.status === "loading") return <Loading />;

  const describe = (key: string) => (fieldErrors[key] ? `${key}-error` : undefined);

  return (
    <div className="center-page">
      <div className="card auth-card">
        <h1>Create an organisation</h1>
        <p className="muted small">You become its first administrator and can invite your team afterwards.</p>
        {error && (
          <div className="alert alert--error" role="alert" data-testid="form-error">
            {error}
          </div>
        )}
        <form onSubmit={submit}>
          <div className="field">
            <label htmlFor="tenant_name">Organisation name</label>
            <input
              id="tenant_name"
              type="text"
              required
              maxLength={100}
              autoComplete="organization"
              value={form.tenant_name}
              onChange={set("tenant_name")}
              aria-invalid={!!fieldErrors.tenant_name}
              aria-describedby={describe("tenant_name")}
            />
            {fieldErrors.tenant_name && (
              <span className="field-error" id="tenant_name-error">
                {fieldErrors.tenant_name}
              </span>
            )}
          </div>
          <div className="field">
            <label htmlFor="display_name">Your name</label>
            <input id="display_name" type="text" autoComplete="name" value={form.display_name} onChange={set("display_name")} />
          </div>
          <div className="field">
            <label htmlFor="email">Email</label>
            <input
              id="email"
              type="email"
              required
              autoComplete="username"
              value={form.email}
              onChange={set("email")}
              aria-invalid={!!fieldErrors.email}
              aria-describedby={describe("email")}
            />
            {fieldErrors.email && (
              <span className="field-error" id="email-error">
                {fieldErrors.email}
              </span>
            )}
          </div>
          <div className="field">
            <label htmlFor="password">Password</label>
            <input
              id="password"
              type="password"
              required
              minLength={MIN_PASSWORD}
              autoComplete="new-password"
              value={form.password}
              onChange={set("password")}
              aria-invalid={!!fieldErrors.password}
              aria-describedby={fieldErrors.password ? "password-error" : "password-hint"}
            />
            {fieldErrors.password ? (
              <span className="field-error" id="password-error">
                {fieldErrors.password}
              </span>
            ) : (
              <span className="hint" id="password-hint">
                At least {MIN_PASSWORD} characters; a passphrase works well.
              </span>
            )}
          </div>
          <button type="submit" className="btn btn--primary btn--block" disabled={busy} data-testid="register-submit">
            {busy ? "Creating…" : "Create organisation"}
          </button>
        </form>
        <p className="muted small" style={{ marginTop: "1rem" }}>
          Already have an account? <Link href="/login">Log in</Link>
        </p>
      </div>
    </div>
  );
}
