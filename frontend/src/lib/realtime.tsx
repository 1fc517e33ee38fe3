"use client";

/**
 * One Socket.IO connection per signed-in tab (websocket transport, same origin, path /socket.io). The server
 * puts it in its tenant's room, so every video event of the organisation arrives without subscribing. Events
 * are de-duplicated per video by `seq`; a fresh access token is handed to the open socket with `auth`, and a
 * socket the server closed (expired token) reconnects with a fresh one, until the session is refused.
 */
import { createContext, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore, type ReactNode } from "react";
import { io, type Socket } from "socket.io-client";
import { getAccessToken, refreshSession, refreshWasTransient } from "./session";
import { useSession } from "./auth";
import type { VideoEvent } from "./types";

const EVENT_NAMES: VideoEvent["type"][] = [
  "video.status",
  "video.progress",
  "video.playable",
  "video.rendition_ready",
  "video.ready",
  "video.failed",
  "video.deleted",
];

type Handler = (event: VideoEvent) => void;

export interface RealtimeStatus {
  connected: boolean;
  /** Increments on every (re)connection: state may have been missed, so views refetch. */
  epoch: number;
}

class Hub {
  private handlers = new Set<Handler>();
  private lastSeq = new Map<string, number>();
  private statusListeners = new Set<(status: RealtimeStatus) => void>();
  status: RealtimeStatus = { connected: false, epoch: 0 };

  on(handler: Handler): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  onStatus(listener: (status: RealtimeStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  setConnected(connected: boolean) {
    this.status = { connected, epoch: this.status.epoch + (connected ? 1 : 0) };
    for (const listener of this.statusListeners) listener(this.status);
  }

  dispatch(type: VideoEvent["type"], data: unknown) {
    if (!data || typeof data !== "object") return;
    const event = { ...(data as Omit<VideoEvent, "type">), type } as VideoEvent;
    if (typeof event.video_id !== "string") return;
    if (typeof event.seq === "number") {
      const last = this.lastSeq.get(event.video_id) ?? 0;
      if (event.seq <= last) return; // a duplicate or an event overtaken by a newer one
      this.lastSeq.set(event.video_id, event.seq);
    }
    for (const handler of this.handlers) {
      try {
        handler(event);
      } catch (error) {
        console.error("video event handler failed", error);
      }
    }
  }

  reset() {
    this.lastSeq.clear();
  }
}

const HubContext = createContext<Hub | null>(null);

export function RealtimeProvider({ children }: { children: ReactNode }) {
  const [hub] = useState(() => new Hub());
  const state = useSession();
  const identity = state.status === "authenticated" ? `${state.session.user.tenant_id}/${state.session.user.id}` : null;
  const token = state.status === "authenticated" ? state.session.accessToken : null;
  const socketRef = useRef<Socket | null>(null);

  useEffect(() => {
    if (!identity) return;
    let closed = false;
    let refusals = 0;
    let retry: ReturnType<typeof setTimeout> | null = null;
    const socket = io({
      path: "/socket.io",
      transports: ["websocket"],
      auth: (cb) => cb({ token: getAccessToken() ?? "" }),
      reconnectionDelay: 1000,
      reconnectionDelayMax: 10000,
    });
    socketRef.current = socket;
    const reconnectLater = () => {
      if (closed || retry) return;
      const delay = Math.min(30000, 1000 * 2 ** Math.min(refusals, 5));
      refusals += 1;
      retry = setTimeout(async () => {
        retry = null;
        if (closed) return;
        const refreshed = await refreshSession();
        // A refused refresh ended the session (this provider closes the socket); only a failure to get an
        // answer (offline, server trouble) is worth another try later.
        if (!refreshed && !refreshWasTransient()) return;
        if (!closed && getAccessToken()) socket.connect();
      }, delay);
    };
    socket.on("connect", () => {
      refusals = 0;
      hub.setConnected(true);
    });
    socket.on("disconnect", (reason) => {
      hub.setConnected(false);
      // The server closes sockets whose token expired; the client does not reconnect those by itself.
      if (reason === "io server disconnect") reconnectLater();
    });
    socket.on("connect_error", () => {
      // A refused handshake (expired or revoked token) is not retried automatically: refresh, then retry.
      if (!socket.active) reconnectLater();
    });
    for (const name of EVENT_NAMES) {
      socket.on(name, (data: unknown) => hub.dispatch(name, data));
    }
    return () => {
      closed = true;
      if (retry) clearTimeout(retry);
      socket.removeAllListeners();
      socket.disconnect();
      socketRef.current = null;
      hub.setConnected(false);
      hub.reset();
    };
  }, [identity, hub]);

  // Every refreshed access token goes to the open socket, so the server does not close it at expiry.
  useEffect(() => {
    const socket = socketRef.current;
    if (!token || !socket || !socket.connected) return;
    socket.emit("auth", { token }, (answer: { ok?: boolean; error?: { code: string } } | undefined) => {
      if (answer && !answer.ok) {
        socket.disconnect().connect(); // start over with the current token
      }
    });
  }, [token]);

  return <HubContext.Provider value={hub}>{children}</HubContext.Provider>;
}

/** Calls `handler` for every (de-duplicated) video event of the tenant. */
export function useVideoEvents(handler: Handler) {
  const hub = useContext(HubContext);
  const ref = useRef(handler);
  useEffect(() => {
    ref.current = handler;
  });
  useEffect(() => {
    if (!hub) return;
    return hub.on((event) => ref.current(event));
  }, [hub]);
}

const OFFLINE: RealtimeStatus = { connected: false, epoch: 0 };
const noSubscription = () => () => undefined;

export function useRealtimeStatus(): RealtimeStatus {
  const hub = useContext(HubContext);
  const subscribe = useCallback(
    (listener: () => void) => (hub ? hub.onStatus(listener) : noSubscription()),
    [hub],
  );
  return useSyncExternalStore(
    subscribe,
    () => hub?.status ?? OFFLINE,
    () => OFFLINE,
  );
}
