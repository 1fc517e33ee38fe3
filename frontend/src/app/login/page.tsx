"use client";

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState, type FormEvent } from "react";
import { Loading } from "@/components/RequireAuth";
import { safeNext, useSession } from "@/lib/auth";
import { ApiError } from "@/lib/errors";
import { login } from "@/lib/session";

function LoginForm() {
  const router = useRouter();
  const params = useSearchParams();
  const state = useSession();
  const next = safeNext(params.get("next"));
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [tenant, setTenant] = useState("");
  const [needTenant, setNeedTenant] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (state.status === "authenticated") router.replace(next);
  }, [state.status, router, next]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(email.trim(), password, needTenant ? tenant.trim() || undefined : undefined);
      router.replace(next);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        setNeedTenant(true);
        setError("This email belongs to several organisations. Enter the organisation's name.");
      } else {
        setError(err instanceof Error ? err.message : "Login failed.");
      }
      setBusy(false);
    }
  }

  if (state.status === "loading") return <Loading />;

  return (
    <div className="center-page">
      <div className="card auth-card">
        <h1>Log in</h1>
        {params.get("expired") && !error && (
          <div className="alert alert--info" role="status">
            Your session ended. Log in again to continue.
          </div>
        )}
        {error && (
          <div className="alert alert--error" role="alert" data-testid="form-error">
            {error}
          </div>
        )}
        <form onSubmit={submit} noValidate={false}>
          <div className="field">
            <label htmlFor="email">Email</label>
            <input
              id="email"
              type="email"
              autoComplete="username"
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="password">Password</label>
            <input
              id="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </div>
          {needTenant && (
            <div className="field">
              <label htmlFor="tenant">Organisation</label>
              <input id="tenant" type="text" required value={tenant} onChange={(e) => setTenant(e.target.value)} />
            </div>
          )}
          <button type="submit" className="btn btn--primary btn--block" disabled={busy} data-testid="login-submit">
            {busy ? "Logging in…" : "Log in"}
          </button>
        </form>
        <p className="muted small" style={{ marginTop: "1rem" }}>
          New here? <Link href="/register">Create an organisation</Link>
        </p>
      </div>
    </div>
  );
}

export default function LoginPage() {
  return (
    <Suspense fallback={<Loading />}>
      <LoginForm />
    </Suspense>
  );
}
