"use client";

/**
 * Resumable uploads with tus-js-client, owned by the app shell so they keep going while the user moves between
 * pages. Each file is fingerprinted (user, name, type, size, modification time): choosing the same file again
 * after a reload resumes it where the server stopped. Several files upload at once (at most MAX_PARALLEL).
 */
import { createContext, useContext, useEffect, useState, useSyncExternalStore, type ReactNode } from "react";
import * as tus from "tus-js-client";
import { getAccessToken, getSessionState, refreshSession, sessionExpired } from "./session";
import { formatBytes, titleFromFilename } from "./format";
import { useSession } from "./auth";
import { useVideoEvents } from "./realtime";
import type { VideoStatus } from "./types";

export const CHUNK_SIZE = 8 * 1024 * 1024; // >= 5 MiB: S3 multipart parts behind the upload service
const MAX_PARALLEL = 3;
/** How long to give the server to let go of an upload whose PATCH was cut off (it takes about 0.1 s). */
const ABORT_SETTLE_MS = 400;
const ENDPOINT_PATH = "/api/uploads";
const FINGERPRINT_PREFIX = "reelhouse";
const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|qt|mkv|webm|avi|wmv|flv|mpe?g|ts|mts|m2ts|3gp|3g2|ogv|mxf|vob|dv|hevc|h264|y4m)$/i;

export type UploadState = "queued" | "uploading" | "paused" | "done" | "error" | "cancelled";

export interface UploadItem {
  key: string;
  name: string;
  size: number;
  sent: number;
  state: UploadState;
  error: string | null;
  videoId: string | null;
  /** Bytes the server already had when this upload resumed an earlier one. */
  resumedFrom: number | null;
  speed: number;
  eta: number | null;
  /** What the server reports once the bytes are in (from live events). */
  serverStatus: VideoStatus | null;
  serverProgress: number | null;
  serverError: string | null;
}

export interface InterruptedUpload {
  storageKey: string;
  name: string;
  size: number | null;
  createdAt: string;
  uploadUrl: string | null;
}

interface Entry {
  item: UploadItem;
  file: File;
  upload: tus.Upload | null;
  samples: { t: number; bytes: number }[];
  /** A PATCH went out and its answer has not come back (it may have been aborted). */
  sending: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function fingerprintFor(userId: string) {
  return async (file: File, options: tus.UploadOptions) =>
    [FINGERPRINT_PREFIX, userId, file.name, file.type, file.size, file.lastModified, options.endpoint].join("|");
}

/** The human message of a tus failure: the server's `{"error": {message}}` when there is one. */
export function tusErrorMessage(error: Error | tus.DetailedError): string {
  const response = (error as tus.DetailedError).originalResponse;
  if (response) {
    const status = response.getStatus();
    try {
      const body = JSON.parse(response.getBody()) as { error?: { code?: string; message?: string } };
      if (body?.error?.message) return body.error.message;
    } catch {
      // not JSON
    }
    if (status === 413) return "The file is too large, or your organisation's storage quota is used up.";
    if (status === 415) return "This kind of file cannot be uploaded.";
    if (status === 401) return "Your session has ended. Log in again and choose the file once more to resume.";
    if (status === 403) return "Uploading needs the editor role.";
    if (status === 410) return "This upload expired. Start it again.";
    if (status >= 500) return `The server had a problem (HTTP ${status}). Try again to resume.`;
    return `The upload failed (HTTP ${status}).`;
  }
  if (typeof navigator !== "undefined" && !navigator.onLine) return "You are offline. Resume when you are back online.";
  return "The connection to the server was lost. Resume to continue where it stopped.";
}

/** Obvious non-videos (text, images, audio, documents) are refused before any byte is sent; files the browser
 * cannot name a type for go to the server, which probes them and fails the video with a reason if needed. */
export function looksLikeVideo(file: File): boolean {
  if (file.type.startsWith("video/") || VIDEO_EXTENSIONS.test(file.name)) return true;
  return file.type === "" || file.type === "application/octet-stream";
}

class UploadStore {
  private entries: Entry[] = [];
  private snapshot: UploadItem[] = [];
  private listeners = new Set<() => void>();
  private notifyTimer: ReturnType<typeof setTimeout> | null = null;
  private maxSize: number | null = null;
  private maxSizeLoaded: Promise<void> | null = null;
  private owner: string | null | undefined = undefined;

  subscribe = (listener: () => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = () => this.snapshot;

  private emit(now = false) {
    const flush = () => {
      this.notifyTimer = null;
      this.snapshot = this.entries.map((entry) => ({ ...entry.item }));
      for (const listener of this.listeners) listener();
    };
    if (now) {
      if (this.notifyTimer) clearTimeout(this.notifyTimer);
      flush();
    } else if (!this.notifyTimer) {
      this.notifyTimer = setTimeout(flush, 200); // progress events are frequent: at most 5 renders a second
    }
  }

  get active(): boolean {
    return this.entries.some((e) => e.item.state === "uploading" || e.item.state === "queued");
  }

  private loadLimits(): Promise<void> {
    if (!this.maxSizeLoaded) {
      this.maxSizeLoaded = fetch(ENDPOINT_PATH, { method: "OPTIONS" })
        .then((response) => {
          const value = Number(response.headers.get("Tus-Max-Size"));
          this.maxSize = Number.isFinite(value) && value > 0 ? value : null;
        })
        .catch(() => {
          this.maxSizeLoaded = null;
        });
    }
    return this.maxSizeLoaded;
  }

  async add(files: File[]): Promise<void> {
    await this.loadLimits();
    for (const file of files) {
      const item: UploadItem = {
        key: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
        name: file.name,
        size: file.size,
        sent: 0,
        state: "queued",
        error: null,
        videoId: null,
        resumedFrom: null,
        speed: 0,
        eta: null,
        serverStatus: null,
        serverProgress: null,
        serverError: null,
      };
      const rejection = this.rejection(file);
      if (rejection) {
        item.state = "error";
        item.error = rejection;
      }
      this.entries.unshift({ item, file, upload: null, samples: [], sending: false });
    }
    this.emit(true);
    this.pump();
  }

  private rejection(file: File): string | null {
    if (!looksLikeVideo(file)) {
      return `“${file.name}” is not a video file${file.type ? ` (${file.type})` : ""}. Choose a video such as MP4, MOV, MKV or WebM.`;
    }
    if (file.size === 0) return `“${file.name}” is empty.`;
    if (this.maxSize != null && file.size > this.maxSize) {
      return `“${file.name}” is too large (${formatBytes(file.size)}); the largest upload allowed is ${formatBytes(this.maxSize)}.`;
    }
    return null;
  }

  private pump() {
    let running = this.entries.filter((e) => e.item.state === "uploading").length;
    for (const entry of [...this.entries].reverse()) {
      if (running >= MAX_PARALLEL) break;
      if (entry.item.state === "queued") {
        running += 1;
        void this.start(entry);
      }
    }
  }

  private async start(entry: Entry) {
    const state = getSessionState();
    if (state.status !== "authenticated") {
      this.fail(entry, "You are not logged in.");
      return;
    }
    entry.item.state = "uploading";
    entry.item.error = null;
    entry.samples = [{ t: performance.now(), bytes: entry.item.sent }];
    this.emit(true);
    if (entry.upload) {
      entry.upload.start(); // resume after a pause or an error: HEAD, then PATCH from the server's offset
      return;
    }
    const endpoint = new URL(ENDPOINT_PATH, window.location.origin).href;
    let resumed = false;
    let refreshFirst = false; // the server refused the token: refresh before the retry
    const upload = new tus.Upload(entry.file, {
      endpoint,
      chunkSize: CHUNK_SIZE,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      fingerprint: fingerprintFor(state.session.user.id),
      metadata: {
        filename: entry.file.name,
        title: titleFromFilename(entry.file.name),
        filetype: entry.file.type || "application/octet-stream",
      },
      onBeforeRequest: async (req) => {
        const current = getSessionState();
        if (refreshFirst || (current.status === "authenticated" && current.session.expiresAt - Date.now() < 30_000)) {
          refreshFirst = false;
          await refreshSession(); // a refusal ends the session (and with it this tab's uploads)
        }
        const token = getAccessToken();
        if (token) req.setHeader("Authorization", `Bearer ${token}`);
        if (req.getMethod() === "PATCH") entry.sending = true;
      },
      onAfterResponse: (req, res) => {
        if (req.getMethod() === "PATCH") entry.sending = false;
        if (resumed && req.getMethod() === "HEAD" && res.getStatus() === 200) {
          const offset = Number(res.getHeader("Upload-Offset"));
          if (Number.isFinite(offset)) {
            entry.item.resumedFrom = offset;
            entry.item.sent = offset;
            entry.samples = [{ t: performance.now(), bytes: offset }];
          }
        }
      },
      onShouldRetry: (error, attempt) => {
        const status = error.originalResponse?.getStatus() ?? 0;
        if (status === 401) {
          refreshFirst = true;
          return attempt < 2;
        }
        return (status < 400 || status >= 500 || status === 409 || status === 423) && navigator.onLine !== false;
      },
      onUploadUrlAvailable: () => {
        entry.item.videoId = upload.url ? upload.url.split("/").pop()?.split("?")[0] ?? null : null;
        this.emit(true);
      },
      onProgress: (sent, total) => {
        this.progress(entry, sent, total);
      },
      onSuccess: () => {
        entry.item.sent = entry.item.size;
        entry.item.state = "done";
        entry.item.eta = 0;
        entry.item.serverStatus = entry.item.serverStatus ?? "uploaded";
        this.emit(true);
        this.pump();
      },
      onError: (error) => {
        this.fail(entry, tusErrorMessage(error));
        // A 401 that a refreshed token did not cure: the session is over (the login page says so).
        if ((error as tus.DetailedError).originalResponse?.getStatus() === 401) sessionExpired();
        this.pump();
      },
    });
    entry.upload = upload;
    try {
      const previous = await upload.findPreviousUploads();
      const newest = previous.sort((a, b) => b.creationTime.localeCompare(a.creationTime))[0];
      if (newest) {
        resumed = true;
        upload.resumeFromPreviousUpload(newest);
      }
    } catch {
      // no storage: a fresh upload
    }
    if (entry.item.state === "uploading") upload.start();
  }

  private progress(entry: Entry, sent: number, total: number) {
    const now = performance.now();
    entry.item.sent = sent;
    entry.item.size = total || entry.item.size;
    entry.samples.push({ t: now, bytes: sent });
    while (entry.samples.length > 2 && now - (entry.samples[0]?.t ?? now) > 4000) entry.samples.shift();
    const first = entry.samples[0];
    if (first && now - first.t > 300) {
      entry.item.speed = Math.max(0, ((sent - first.bytes) * 1000) / (now - first.t));
      entry.item.eta = entry.item.speed > 0 ? (total - sent) / entry.item.speed : null;
    }
    this.emit();
  }

  private fail(entry: Entry, message: string) {
    entry.item.state = "error";
    entry.item.error = message;
    entry.item.speed = 0;
    entry.item.eta = null;
    this.emit(true);
  }

  find(key: string): Entry | undefined {
    return this.entries.find((e) => e.item.key === key);
  }

  pause(key: string) {
    const entry = this.find(key);
    if (!entry || (entry.item.state !== "uploading" && entry.item.state !== "queued")) return;
    entry.item.state = "paused";
    entry.item.speed = 0;
    entry.item.eta = null;
    void entry.upload?.abort(false);
    this.emit(true);
    this.pump();
  }

  resume(key: string) {
    const entry = this.find(key);
    if (!entry || (entry.item.state !== "paused" && entry.item.state !== "error")) return;
    if (entry.item.state === "error" && !entry.upload) {
      // rejected before it started: nothing to resume
      return;
    }
    entry.item.state = "queued";
    entry.item.error = null;
    this.emit(true);
    this.pump();
  }

  async cancel(key: string) {
    const entry = this.find(key);
    if (!entry) return;
    const wasDone = entry.item.state === "done";
    entry.item.state = "cancelled";
    entry.item.speed = 0;
    entry.item.eta = null;
    this.emit(true);
    const upload = entry.upload;
    if (!wasDone && upload) {
      try {
        // Stop sending first. The server holds an upload while it receives a PATCH and refuses to delete it
        // (409 upload_busy) until it has noticed that the connection went away.
        await upload.abort(false);
        if (entry.sending) await sleep(ABORT_SETTLE_MS);
        await upload.abort(true); // DELETE: the server drops the bytes and the video
      } catch {
        // already gone, or the server cannot be reached: it sweeps abandoned uploads itself
      }
    }
    this.pump();
  }

  /** A different user (or nobody) is signed in now: stop this tab's uploads (they stay resumable) and forget them. */
  resetFor(userId: string | null) {
    if (this.owner === userId) return;
    if (this.owner !== undefined) {
      for (const entry of this.entries) void entry.upload?.abort(false);
      this.entries = [];
      this.emit(true);
    }
    this.owner = userId;
  }

  dismiss(key: string) {
    this.entries = this.entries.filter((e) => e.item.key !== key);
    this.emit(true);
  }

  onServerEvent(videoId: string, patch: Partial<Pick<UploadItem, "serverStatus" | "serverProgress" | "serverError">>) {
    let changed = false;
    for (const entry of this.entries) {
      if (entry.item.videoId === videoId) {
        Object.assign(entry.item, patch);
        changed = true;
      }
    }
    if (changed) this.emit();
  }

  progressOf(videoId: string): number | null {
    const entry = this.entries.find((e) => e.item.videoId === videoId && e.item.state !== "cancelled");
    if (!entry || entry.item.size <= 0) return null;
    return (entry.item.sent / entry.item.size) * 100;
  }
}

/** Uploads of this user that a reload or a closed tab interrupted (from tus' local storage). */
export async function interruptedUploads(userId: string): Promise<InterruptedUpload[]> {
  if (!tus.canStoreURLs) return [];
  const all = await tus.defaultOptions.urlStorage.findAllUploads();
  const prefix = `tus::${FINGERPRINT_PREFIX}|${userId}|`;
  return all
    .filter((u) => u.urlStorageKey.startsWith(prefix))
    .map((u) => ({
      storageKey: u.urlStorageKey,
      name: u.metadata?.filename ?? "Unnamed file",
      size: u.size,
      createdAt: u.creationTime,
      uploadUrl: u.uploadUrl,
    }))
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

/** Forget an interrupted upload and ask the server to drop what it has of it. */
export async function discardInterrupted(upload: InterruptedUpload): Promise<void> {
  if (upload.uploadUrl) {
    try {
      await tus.Upload.terminate(upload.uploadUrl, {
        headers: { Authorization: `Bearer ${getAccessToken() ?? ""}` },
      });
    } catch {
      // gone already, or expired
    }
  }
  await tus.defaultOptions.urlStorage.removeUpload(upload.storageKey);
}

const StoreContext = createContext<UploadStore | null>(null);

export function UploadProvider({ children }: { children: ReactNode }) {
  const [store] = useState(() => new UploadStore());
  const session = useSession();
  const userId = session.status === "authenticated" ? session.session.user.id : session.status === "anonymous" ? null : undefined;

  useEffect(() => {
    if (userId !== undefined) store.resetFor(userId);
  }, [store, userId]);

  useVideoEvents((event) => {
    if (event.type === "video.status" && event.status) {
      store.onServerEvent(event.video_id, { serverStatus: event.status });
    } else if (event.type === "video.progress") {
      store.onServerEvent(event.video_id, { serverStatus: "processing", serverProgress: event.percent ?? null });
    } else if (event.type === "video.failed") {
      store.onServerEvent(event.video_id, { serverStatus: "failed", serverError: event.error ?? "Processing failed." });
    } else if (event.type === "video.ready") {
      store.onServerEvent(event.video_id, { serverStatus: "ready", serverProgress: 100 });
    }
  });

  // Leaving the page stops running uploads (they can be resumed by choosing the files again): ask first.
  useEffect(() => {
    const warn = (event: BeforeUnloadEvent) => {
      if (store.active) {
        event.preventDefault();
        event.returnValue = "";
      }
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [store]);

  return <StoreContext.Provider value={store}>{children}</StoreContext.Provider>;
}

export function useUploadStore(): UploadStore {
  const store = useContext(StoreContext);
  if (!store) throw new Error("useUploadStore outside UploadProvider");
  return store;
}

export function useUploads(): UploadItem[] {
  const store = useUploadStore();
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}
