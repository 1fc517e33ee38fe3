"use client";

import Link from "next/link";
import { usePathname, useRouter } from "next/navigation";
import { useSession } from "@/lib/auth";
import { useRealtimeStatus } from "@/lib/realtime";
import { logout } from "@/lib/session";
import { hasRole } from "@/lib/types";
import { LogoIcon } from "./Icons";

export function Header() {
  const state = useSession();
  const pathname = usePathname();
  const router = useRouter();
  const realtime = useRealtimeStatus();
  const user = state.status === "authenticated" ? state.session.user : null;
  const tenant = state.status === "authenticated" ? state.session.tenant : null;

  const links = [
    { href: "/", label: "Library", show: !!user },
    { href: "/upload", label: "Upload", show: hasRole(user, "editor") },
    { href: "/admin", label: "Admin", show: hasRole(user, "admin") },
  ].filter((l) => l.show);

  return (
    <header className="site-header">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <div className="site-header__inner">
        <Link href="/" className="brand" aria-label="Reelhouse, library">
          <LogoIcon size={24} />
          <span>Reelhouse</span>
        </Link>
        {links.length > 0 && (
          <nav className="main-nav" aria-label="Main">
            <ul>
              {links.map((link) => (
                <li key={link.href}>
                  <Link
                    href={link.href}
                    aria-current={pathname === link.href ? "page" : undefined}
                    data-testid={`nav-${link.label.toLowerCase()}`}
                  >
                    {link.label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
        )}
        {user ? (
          <div className="user-menu">
            <div className="user-menu__who">
              <span className="user-menu__name" data-testid="user-name" title={user.email}>
                <span
                  className="live-dot"
                  data-connected={realtime.connected ? "true" : "false"}
                  data-testid="live-indicator"
                  title={realtime.connected ? "Live updates connected" : "Live updates reconnecting"}
                />
                <span className="visually-hidden">
                  {realtime.connected ? "Live updates connected. " : "Live updates reconnecting. "}
                </span>
                {user.display_name || user.email}
              </span>
              <span className="user-menu__org" data-testid="tenant-name">
                {tenant?.name ? `${tenant.name} · ` : ""}
                {user.role}
              </span>
            </div>
            <button
              type="button"
              className="btn btn--small"
              data-testid="logout"
              onClick={async () => {
                await logout();
                router.replace("/login");
              }}
            >
              Log out
            </button>
          </div>
        ) : state.status === "anonymous" ? (
          <div className="user-menu">
            <Link className="btn btn--small btn--ghost" href="/login">
              Log in
            </Link>
            <Link className="btn btn--small btn--primary" href="/register">
              Create organisation
            </Link>
          </div>
        ) : null}
      </div>
    </header>
  );
}
