"use client";

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { CopyField } from "@/components/CopyButton";
import { Player } from "@/components/Player";
import { ProgressBar } from "@/components/ProgressBar";
import { Loading, RequireAuth } from "@/components/RequireAuth";
import { StatusBadge } from "@/components/StatusBadge";
import { api } from "@/lib/api";
import { useUser } from "@/lib/auth";
import { ApiError } from "@/lib/errors";
import { formatBytes, formatDate, formatDuration } from "@/lib/format";
import { useVideoEvents } from "@/lib/realtime";
import { hasRole, VISIBILITIES, type Video, type Visibility } from "@/lib/types";

const VISIBILITY_LABELS: Record<Visibility, string> = {
  private: "Private",
  tenant: "Organisation",
  unlisted: "Unlisted",
};

const VISIBILITY_HINTS: Record<Visibility, string> = {
  private: "Only you and the organisation's editors and admins.",
  tenant: "Everyone in the organisation.",
  unlisted: "Everyone in the organisation, and anyone with the share link.",
};

function EditDetails({ video, onSaved }: { video: Video; onSaved: (video: Video) => void }) {
  const [title, setTitle] = useState(video.title);
  const [description, setDescription] = useState(video.description);
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState<{ kind: "ok" | "error"; text: string } | null>(null);
  const dirty = title !== video.title || description !== video.description;

  async function save(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setStatus(null);
    try {
      const updated = await api<Video>(`/api/videos/${encodeURIComponent(video.id)}`, {
        method: "PATCH",
        body: { title: title.trim(), description },
      });
      onSaved(updated);
      setTitle(updated.title);
      setDescription(updated.description);
      setStatus({ kind: "ok", text: "Saved." });
    } catch (err) {
      setStatus({ kind: "error", text: err instanceof Error ? err.message : "Saving failed." });
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={save} className="card" aria-labelledby="edit-title" data-testid="edit-form">
      <h2 id="edit-title">Details</h2>
      {video.renditions.length > 0 && (
        <p className="muted small">Streams: {video.renditions.map((r) => r.name).join(", ")}</p>
      )}
      <div className="field">
        <label htmlFor="video-title">Title</label>
        <input
          id="video-title"
          type="text"
          required
          maxLength={200}
          value={title}
          onChange={(e) => setTitle(e.target.value)}
          data-testid="edit-title"
        />
      </div>
      <div className="field">
        <label htmlFor="video-description">Description</label>
        <textarea
          id="video-description"
          maxLength={5000}
          value={description}
          onChange={(e) => setDescription(e.target.value)}
          data-testid="edit-description"
        />
      </div>
      <div className="btn-row">
        <button type="submit" className="btn btn--primary" disabled={busy || !dirty || !title.trim()} data-testid="edit-save">
          {busy ? "Saving…" : "Save"}
        </button>
        <span role="status" className={status?.kind === "error" ? "field-error" : "muted small"}>
          {status?.text}
        </span>
      </div>
    </form>
  );
}

/** Who can watch. Choosing in the list (arrow keys move through it) only marks the choice; Save applies it. */
function Sharing({ video, onSaved }: { video: Video; onSaved: (video: Video) => void }) {
  const [draft, setDraft] = useState<Visibility>(video.visibility);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const selectRef = useRef<HTMLSelectElement>(null);
  const refocus = useRef(false);
  const shareUrl = video.share_url ? new URL(video.share_url, window.location.origin).href : null;
  const changed = draft !== video.visibility;

  // The saved visibility changed (saved here, or a refetch): show it.
  const [saved, setSaved] = useState(video.visibility);
  if (video.visibility !== saved) {
    setSaved(video.visibility);
    setDraft(video.visibility);
  }

  async function save(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setNote(null);
    try {
      onSaved(await api<Video>(`/api/videos/${encodeURIComponent(video.id)}`, { method: "PATCH", body: { visibility: draft } }));
      setNote("Visibility saved.");
    } catch (err) {
      setError(err instanceof Error ? err.message : "Saving failed.");
    } finally {
      refocus.current = true;
      setBusy(false);
    }
  }

  // The Save button goes away once saved: the focus goes back to the list (enabled again by then).
  useEffect(() => {
    if (busy || !refocus.current) return;
    refocus.current = false;
    selectRef.current?.focus();
  }, [busy]);

  async function rotate() {
    setBusy(true);
    setError(null);
    try {
      onSaved(await api<Video>(`/api/videos/${encodeURIComponent(video.id)}/share`, { method: "POST" }));
      setNote("A new link was created; the previous one no longer works.");
    } catch (err) {
      setError(err instanceof Error ? err.message : "Could not create a new link.");
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card" aria-labelledby="sharing-title">
      <h2 id="sharing-title">Visibility</h2>
      <form onSubmit={save} data-testid="visibility-form">
        <div className="field">
          <label htmlFor="visibility">Who can watch</label>
          <select
            ref={selectRef}
            id="visibility"
            value={draft}
            disabled={busy}
            onChange={(e) => setDraft(e.target.value as Visibility)}
            data-testid="visibility"
            aria-describedby="visibility-hint"
          >
            {VISIBILITIES.map((v) => (
              <option key={v} value={v}>
                {VISIBILITY_LABELS[v]}
              </option>
            ))}
          </select>
          <span className="hint" id="visibility-hint">
            {VISIBILITY_HINTS[draft]}
            {changed && " Not saved yet."}
          </span>
        </div>
        {changed && (
          <div className="btn-row" style={{ marginBottom: "0.9rem" }}>
            <button type="submit" className="btn btn--small btn--primary" disabled={busy} data-testid="visibility-save">
              {busy ? "Saving…" : "Save visibility"}
            </button>
            <button
              type="button"
              className="btn btn--small btn--ghost"
              disabled={busy}
              onClick={() => {
                setDraft(video.visibility);
                selectRef.current?.focus();
              }}
            >
              Cancel
            </button>
          </div>
        )}
      </form>
      {video.visibility === "unlisted" && shareUrl && (
        <div className="field">
          <span className="label" id="share-label">
            Share link
          </span>
          <CopyField value={shareUrl} label="Share link" testId="share-link" />
          <span className="hint">Anyone with this link can watch, without an account.</span>
          <div>
            <button type="button" className="btn btn--small" disabled={busy} onClick={() => void rotate()} data-testid="share-rotate">
              Create a new link
            </button>
          </div>
        </div>
      )}
      <p role="status" className="muted small">
        {note}
      </p>
      {error && (
        <p role="alert" className="field-error">
          {error}
        </p>
      )}
    </section>
  );
}

function DeleteVideo({ video }: { video: Video }) {
  const router = useRouter();
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const confirmRef = useRef<HTMLButtonElement>(null);

  useEffect(() => {
    if (confirming) confirmRef.current?.focus();
  }, [confirming]);

  async function remove() {
    setBusy(true);
    setError(null);
    try {
      await api(`/api/videos/${encodeURIComponent(video.id)}`, { method: "DELETE" });
      router.replace("/");
    } catch (err) {
      setError(err instanceof Error ? err.message : "Deleting failed.");
      setBusy(false);
    }
  }

  return (
    <section className="card" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete</h2>
      {!confirming ? (
        <button type="button" className="btn btn--danger" onClick={() => setConfirming(true)} data-testid="delete">
          Delete this video
        </button>
      ) : (
        <div className="confirm" role="group" aria-labelledby="confirm-text">
          <p id="confirm-text">Delete “{video.title}” and all of its files? This cannot be undone.</p>
          <div className="btn-row">
            <button
              ref={confirmRef}
              type="button"
              className="btn btn--danger-solid"
              disabled={busy}
              onClick={() => void remove()}
              data-testid="delete-confirm"
            >
              {busy ? "Deleting…" : "Delete"}
            </button>
            <button type="button" className="btn" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </div>
        </div>
      )}
      {error && (
        <p role="alert" className="field-error">
          {error}
        </p>
      )}
    </section>
  );
}

/** Whether `status` would take a video back from `ready` (a stale answer or event): processing is never redone. */
function isStale(shown: Video, status: Video["status"]): boolean {
  return shown.status === "ready" && status !== "ready" && status !== "failed";
}

function Watch({ id, share }: { id: string; share: string | null }) {
  const user = useUser();
  const [video, setVideo] = useState<Video | null>(null);
  const [error, setError] = useState<{ status: number; message: string } | null>(null);
  const [announcement, setAnnouncement] = useState("");
  const [deleted, setDeleted] = useState(false);
  const lastFetch = useRef(0);
  const shownId = useRef<string | null>(null);
  const pending = useRef<ReturnType<typeof setTimeout> | null>(null);

  const [reloadKey, setReloadKey] = useState(0);
  const load = useCallback(() => setReloadKey((k) => k + 1), []);

  useEffect(() => {
    let cancelled = false;
    lastFetch.current = Date.now();
    const path = `/api/videos/${encodeURIComponent(id)}${share ? `?share=${encodeURIComponent(share)}` : ""}`;
    api<Video>(path, { auth: !share }).then(
      (fresh) => {
        if (cancelled) return;
        shownId.current = fresh.id;
        // A video never leaves `ready`: an answer that left the server before the ready event (a slow refetch)
        // must not take the player back from HLS to the original.
        setVideo((shown) => (shown && shown.id === fresh.id && isStale(shown, fresh.status) ? shown : fresh));
        setError(null);
      },
      (err) => {
        if (cancelled) return;
        const status = err instanceof ApiError ? err.status : 0;
        // A refetch that failed for a passing reason (no connection, a busy or restarting server, a session
        // refresh that did not get through: an expired session leaves the page for the login; a share link's 401
        // is final) keeps the video on the page, and its player where it was, and tries again; only a first load
        // shows the error.
        const passing = status === 0 || (status === 401 && !share) || status === 408 || status === 429 || status >= 500;
        if (shownId.current === id && passing) {
          if (!pending.current) {
            pending.current = setTimeout(() => {
              pending.current = null;
              load();
            }, 3000);
          }
          return;
        }
        if (err instanceof ApiError) setError({ status: err.status, message: err.message });
        else setError({ status: 0, message: "Could not load the video." });
      },
    );
    return () => {
      cancelled = true;
    };
  }, [id, share, reloadKey, load]);

  // At most one refetch every 2 s while a video is being prepared (new playback URLs appear as it goes).
  const refetchSoon = useCallback(
    (now = false) => {
      if (pending.current) {
        if (!now) return;
        clearTimeout(pending.current);
      }
      const wait = now ? 0 : Math.max(0, 2000 - (Date.now() - lastFetch.current));
      pending.current = setTimeout(() => {
        pending.current = null;
        load();
      }, wait);
    },
    [load],
  );

  useEffect(
    () => () => {
      if (pending.current) clearTimeout(pending.current);
    },
    [],
  );

  // Playback tokens expire: fetch fresh URLs a minute before.
  useEffect(() => {
    const expires = video?.playback.token_expires_at ? Date.parse(video.playback.token_expires_at) : NaN;
    if (!Number.isFinite(expires)) return;
    const timer = setTimeout(load, Math.max(10_000, expires - Date.now() - 60_000));
    return () => clearTimeout(timer);
  }, [video?.playback.token_expires_at, load]);

  useVideoEvents((event) => {
    if (event.video_id !== id) return;
    if (event.type === "video.deleted") {
      if (pending.current) clearTimeout(pending.current);
      pending.current = null;
      setDeleted(true);
      return;
    }
    if (!video) return;
    if (event.type === "video.status" && event.status) {
      setVideo((v) =>
        v && !isStale(v, event.status!) ? { ...v, status: event.status!, progress: event.status === "ready" ? 100 : v.progress } : v,
      );
      setAnnouncement(`Status: ${event.status}.`);
      refetchSoon(event.status === "ready" || event.status === "failed");
    } else if (event.type === "video.progress") {
      setVideo((v) => (v && v.status !== "ready" ? { ...v, status: "processing", progress: event.percent ?? v.progress } : v));
      if (!video.playback.hls_url || !video.playback.original_url) refetchSoon();
    } else if (event.type === "video.playable") {
      refetchSoon(true); // a URL that plays has appeared: fetch it now, not on the 2 s cadence
    } else if (event.type === "video.rendition_ready") {
      if (!video.playback.hls_url) refetchSoon();
    } else if (event.type === "video.ready") {
      setAnnouncement("The video is ready; switching to adaptive streaming.");
      refetchSoon(true);
    } else if (event.type === "video.failed") {
      setVideo((v) => (v ? { ...v, status: "failed", error: event.error ?? v.error } : v));
      setAnnouncement(`Processing failed: ${event.error ?? "unknown error"}.`);
      refetchSoon(true);
    }
  });

  useEffect(() => {
    if (video) document.title = `${video.title} · Reelhouse`;
  }, [video]);

  if (deleted) {
    return (
      <div className="page page--narrow">
        <div className="empty" data-testid="watch-error" data-status="deleted">
          <h1>This video was deleted</h1>
          <p className="muted">It was deleted, or its upload cancelled, while this page was open.</p>
          <Link className="btn" href="/">
            Back to the library
          </Link>
        </div>
      </div>
    );
  }

  if (error) {
    const notFound = error.status === 404 || error.status === 403;
    return (
      <div className="page page--narrow">
        <div className="empty" data-testid="watch-error" data-status={error.status}>
          <h1>{notFound ? "Video not found" : error.status === 401 && share ? "This link no longer works" : "Cannot show this video"}</h1>
          <p className="muted">
            {notFound ? "It may have been deleted, or it belongs to another organisation." : error.message}
          </p>
          {user && (
            <Link className="btn" href="/">
              Back to the library
            </Link>
          )}
        </div>
      </div>
    );
  }

  if (!video) return <Loading label="Loading video…" />;

  const canEdit = !share && hasRole(user, "editor");
  const inProgress = video.status === "uploading" || video.status === "uploaded" || video.status === "processing";

  return (
    <div className="page">
      <div className="watch-layout">
        <div>
          <Player key={video.id} video={video} title={video.title} />
          <h1 className="watch-title" data-testid="watch-title">
            {video.title}
          </h1>
          <div className="watch-meta">
            <StatusBadge status={video.status} />
            {video.duration != null && <span>{formatDuration(video.duration)}</span>}
            {video.width && video.height ? (
              <span>
                {video.width}×{video.height}
              </span>
            ) : null}
            {video.size ? <span>{formatBytes(video.size)}</span> : null}
            <span>{formatDate(video.created_at)}</span>
          </div>
          {inProgress && (
            <div style={{ maxWidth: 420, marginBottom: "0.75rem" }}>
              <ProgressBar
                value={video.status === "processing" ? video.progress : video.status === "uploaded" ? 0 : null}
                label={`Processing ${Math.floor(video.progress ?? 0)}%`}
                state={video.status}
              />
              <p className="muted small" style={{ marginTop: "0.35rem" }}>
                {video.playback.original_url
                  ? "Playing the original while the adaptive versions are prepared."
                  : video.status === "processing"
                    ? `Processing ${Math.floor(video.progress ?? 0)}%…`
                    : "Waiting to be processed…"}
              </p>
            </div>
          )}
          {video.status === "failed" && (
            <div className="alert alert--error" role="alert" data-testid="video-error">
              {video.error || "Processing failed."}
            </div>
          )}
          <div className="visually-hidden" aria-live="polite">
            {announcement}
          </div>
          {video.description && !canEdit && <p className="watch-description">{video.description}</p>}
        </div>
        <aside className="side-panel" aria-label="Video settings">
          {canEdit ? (
            <>
              <EditDetails video={video} onSaved={setVideo} />
              <Sharing video={video} onSaved={setVideo} />
              <DeleteVideo video={video} />
            </>
          ) : (
            <section className="card">
              <h2>About</h2>
              <p className="muted small">
                {video.renditions.length > 0
                  ? `Available in ${video.renditions.map((r) => r.name).join(", ")}.`
                  : "Adaptive versions are being prepared."}
              </p>
            </section>
          )}
        </aside>
      </div>
    </div>
  );
}

function WatchRoute() {
  const params = useSearchParams();
  const id = params.get("v");
  const share = params.get("share");
  if (!id) {
    return (
      <div className="page page--narrow">
        <div className="empty">
          <h1>No video chosen</h1>
          <Link href="/">Go to the library</Link>
        </div>
      </div>
    );
  }
  // A share link works logged out; everything else needs a session.
  if (share) return <Watch key={`${id}/${share}`} id={id} share={share} />;
  return (
    <RequireAuth>
      <Watch key={id} id={id} share={null} />
    </RequireAuth>
  );
}

export default function WatchPage() {
  return (
    <Suspense fallback={<Loading />}>
      <WatchRoute />
    </Suspense>
  );
}
