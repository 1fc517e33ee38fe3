"use client";

import { useEffect, useSyncExternalStore } from "react";
import { getSessionState, restoreSession, subscribeSession, type SessionState } from "./session";
import { hasRole, type Role, type User } from "./types";

const loading: SessionState = { status: "loading", session: null };

/** The current session (re-renders on login, logout and every token refresh). */
export function useSession(): SessionState {
  useEffect(() => {
    void restoreSession();
  }, []);
  return useSyncExternalStore(subscribeSession, getSessionState, () => loading);
}

export function useUser(): User | null {
  const state = useSession();
  return state.status === "authenticated" ? state.session.user : null;
}

export function useCan(role: Role): boolean {
  return hasRole(useUser(), role);
}

/** Only relative, same-site paths are followed after login (no open redirects). */
export function safeNext(next: string | null | undefined): string {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
  if (next.startsWith("/login") || next.startsWith("/register")) return "/";
  return next;
}
