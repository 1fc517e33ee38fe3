"use client";

import Link from "next/link";
import { usePathname, useRouter } from "next/navigation";
import { useEffect, type ReactNode } from "react";
import { useSession } from "@/lib/auth";
import { hasRole, type Role } from "@/lib/types";

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      <span>{label}</span>
    </div>
  );
}

/** Renders its children only for a signed-in user (with at least `role`); otherwise sends them to log in. */
export function RequireAuth({ children, role }: { children: ReactNode; role?: Role }) {
  const state = useSession();
  const router = useRouter();
  const pathname = usePathname();

  useEffect(() => {
    if (state.status !== "anonymous") return;
    const here = pathname + window.location.search;
    const next = here && here !== "/" ? `?next=${encodeURIComponent(here)}` : "";
    router.replace(`/login${next}${state.reason === "expired" ? (next ? "&" : "?") + "expired=1" : ""}`);
  }, [state, router, pathname]);

  if (state.status !== "authenticated") return <Loading />;
  if (role && !hasRole(state.session.user, role)) {
    return (
      <div className="page page--narrow">
        <div className="alert alert--error" role="alert">
          This page needs the {role} role; you are {state.session.user.role === "admin" ? "an" : "a"}{" "}
          {state.session.user.role}.
        </div>
        <Link href="/">Back to the library</Link>
      </div>
    );
  }
  return <>{children}</>;
}
