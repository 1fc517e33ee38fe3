"use client";

import Link from "next/link";
import { usePathname, useRouter, useSearchParams } from "next/navigation";
import { Suspense, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { FilmIcon } from "@/components/Icons";
import { Loading, RequireAuth } from "@/components/RequireAuth";
import { statusLabel } from "@/components/StatusBadge";
import { VideoCard } from "@/components/VideoCard";
import { api } from "@/lib/api";
import { useCan } from "@/lib/auth";
import { useRealtimeStatus, useVideoEvents } from "@/lib/realtime";
import { STATUSES, type Page, type Video, type VideoEvent, type VideoStatus } from "@/lib/types";
import { useUploads } from "@/lib/uploads";

const PER_PAGE = 24;
const RANK: Record<VideoStatus, number> = { uploading: 0, uploaded: 1, processing: 2, ready: 3, failed: 3 };

/** A refetched video never moves a card backwards (an event may have been newer than the snapshot). */
function merge(current: Video | undefined, fresh: Video): Video {
  if (!current) return fresh;
  if (RANK[fresh.status] < RANK[current.status]) {
    return { ...fresh, status: current.status, progress: current.progress, error: current.error };
  }
  if (fresh.status === "processing" && current.status === "processing") {
    return { ...fresh, progress: Math.max(fresh.progress ?? 0, current.progress ?? 0) };
  }
  return fresh;
}

function applyEvent(video: Video, event: VideoEvent): Video {
  switch (event.type) {
    case "video.status":
      return event.status
        ? { ...video, status: event.status, progress: event.status === "ready" ? 100 : event.status === "processing" && video.status !== "processing" ? 0 : video.progress }
        : video;
    case "video.progress":
      return { ...video, status: video.status === "ready" || video.status === "failed" ? video.status : "processing", progress: event.percent ?? video.progress };
    case "video.ready":
      return { ...video, status: "ready", progress: 100, error: null };
    case "video.failed":
      return { ...video, status: "failed", error: event.error ?? video.error };
    default:
      return video;
  }
}

function Library() {
  const router = useRouter();
  const pathname = usePathname();
  const params = useSearchParams();
  const q = params.get("q") ?? "";
  const statusParam = params.get("status") ?? "";
  const status = (STATUSES as string[]).includes(statusParam) ? (statusParam as VideoStatus) : "";
  const page = Math.max(1, Number.parseInt(params.get("page") ?? "1", 10) || 1);
  const canUpload = useCan("editor");
  const uploads = useUploads();
  const realtime = useRealtimeStatus();

  const [data, setData] = useState<Page<Video> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [search, setSearch] = useState(q);
  const [announcement, setAnnouncement] = useState("");
  const headingRef = useRef<HTMLHeadingElement>(null);
  const refetchTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const checkedUnknown = useRef(new Set<string>());
  const queryKey = `${q}\u0000${status}\u0000${page}`;

  const [reloadKey, setReloadKey] = useState(0);
  const load = useCallback(() => setReloadKey((k) => k + 1), []);

  useEffect(() => {
    checkedUnknown.current = new Set();
  }, [queryKey]);

  // Load on every query change, on request, and after every (re)connection of the live updates, which may have
  // missed events meanwhile.
  useEffect(() => {
    let cancelled = false;
    const search = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    if (q) search.set("q", q);
    if (status) search.set("status", status);
    api<Page<Video>>(`/api/videos?${search}`).then(
      (result) => {
        if (cancelled) return;
        setData((prev) => {
          const known = new Map(prev?.items.map((v) => [v.id, v]));
          return { ...result, items: result.items.map((v) => merge(known.get(v.id), v)) };
        });
        setError(null);
      },
      (err) => {
        if (!cancelled) setError(err instanceof Error ? err.message : "Could not load the library.");
      },
    );
    return () => {
      cancelled = true;
    };
  }, [q, status, page, reloadKey, realtime.epoch]);

  // The search box follows the URL (back/forward, "clear filters").
  const [syncedQ, setSyncedQ] = useState(q);
  if (q !== syncedQ) {
    setSyncedQ(q);
    setSearch(q);
  }


  useEffect(
    () => () => {
      if (refetchTimer.current) clearTimeout(refetchTimer.current);
    },
    [],
  );

  const scheduleRefetch = useCallback(() => {
    if (refetchTimer.current) return;
    refetchTimer.current = setTimeout(() => {
      refetchTimer.current = null;
      load();
    }, 400);
  }, [load]);

  const refetchOne = useCallback(async (id: string) => {
    try {
      const fresh = await api<Video>(`/api/videos/${encodeURIComponent(id)}`);
      setData((prev) =>
        prev ? { ...prev, items: prev.items.map((v) => (v.id === id ? merge(v, fresh) : v)) } : prev,
      );
    } catch {
      // deleted or hidden meanwhile: the next list load drops it
    }
  }, []);

  useVideoEvents((event) => {
    if (event.type === "video.deleted") {
      checkedUnknown.current.add(event.video_id); // nothing to fetch about it any more
      const gone = data?.items.find((v) => v.id === event.video_id);
      if (!gone) return;
      setData((prev) =>
        prev
          ? { ...prev, total: Math.max(0, prev.total - 1), items: prev.items.filter((v) => v.id !== event.video_id) }
          : prev,
      );
      setAnnouncement(`${gone.title} was deleted.`);
      if (data && data.total > data.items.length) scheduleRefetch(); // the next page's first video moves up
      return;
    }
    const present = data?.items.some((v) => v.id === event.video_id);
    if (!present) {
      // A video this page does not show yet (a brand-new upload, or one that now matches the filter).
      // The list is fetched again once per such video (`video.status` "uploading" announces a new upload).
      if (!checkedUnknown.current.has(event.video_id)) {
        checkedUnknown.current.add(event.video_id);
        scheduleRefetch();
      }
      return;
    }
    setData((prev) =>
      prev ? { ...prev, items: prev.items.map((v) => (v.id === event.video_id ? applyEvent(v, event) : v)) } : prev,
    );
    const title = data?.items.find((v) => v.id === event.video_id)?.title ?? "A video";
    if (event.type === "video.ready") setAnnouncement(`${title} is ready to watch.`);
    if (event.type === "video.failed") setAnnouncement(`${title} failed: ${event.error ?? "processing failed"}.`);
    if (event.type === "video.status" && event.status === "uploaded") setAnnouncement(`${title} was uploaded.`);
    // new thumbnail, duration and playback URLs; a status filter may no longer match
    if (event.type === "video.ready" || event.type === "video.failed" || (event.type === "video.status" && event.status === "uploaded")) {
      void refetchOne(event.video_id);
    }
    if (status && event.type === "video.status" && event.status !== status) scheduleRefetch();
  });

  const setParams = useCallback(
    (changes: Record<string, string | null>) => {
      const next = new URLSearchParams(params.toString());
      for (const [key, value] of Object.entries(changes)) {
        if (value) next.set(key, value);
        else next.delete(key);
      }
      const query = next.toString();
      router.replace(query ? `${pathname}?${query}` : pathname, { scroll: false });
    },
    [params, pathname, router],
  );

  // Search as you type, a moment after the last key.
  useEffect(() => {
    if (search === q) return;
    const timer = setTimeout(() => setParams({ q: search.trim() || null, page: null }), 300);
    return () => clearTimeout(timer);
  }, [search, q, setParams]);

  const uploadPercent = useMemo(() => {
    const byVideo = new Map<string, number>();
    for (const u of uploads) {
      if (u.videoId && u.size > 0 && u.state !== "cancelled") byVideo.set(u.videoId, (u.sent / u.size) * 100);
    }
    return byVideo;
  }, [uploads]);

  const pages = data ? Math.max(1, Math.ceil(data.total / (data.per_page || PER_PAGE))) : 1;
  const filtered = !!(q || status);

  return (
    <div className="page">
      <div className="page-head">
        <h1 ref={headingRef} tabIndex={-1}>
          Library
        </h1>
        {canUpload && (
          <Link className="btn btn--primary" href="/upload" data-testid="upload-link">
            Upload videos
          </Link>
        )}
      </div>

      <form className="toolbar" role="search" onSubmit={(e) => { e.preventDefault(); setParams({ q: search.trim() || null, page: null }); }}>
        <div className="field toolbar__search">
          <label htmlFor="library-search">Search by title</label>
          <input
            id="library-search"
            type="search"
            value={search}
            placeholder="Search…"
            onChange={(e) => setSearch(e.target.value)}
            data-testid="search"
          />
        </div>
        <div className="field toolbar__status">
          <label htmlFor="library-status">Status</label>
          <select
            id="library-status"
            value={status}
            onChange={(e) => setParams({ status: e.target.value || null, page: null })}
            data-testid="status-filter"
          >
            <option value="">All</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
        </div>
      </form>

      <div className="visually-hidden" aria-live="polite" data-testid="library-announcement">
        {announcement}
      </div>

      {error && (
        <div className="alert alert--error" role="alert">
          {error}{" "}
          <button type="button" className="btn btn--small" onClick={load}>
            Try again
          </button>
        </div>
      )}

      {!data && !error && <Loading label="Loading videos…" />}

      {data && data.items.length === 0 && (
        <div className="empty" data-testid="empty-state">
          <FilmIcon size={40} />
          {filtered ? (
            <>
              <h2>No videos match</h2>
              <p className="muted">Try another search or status.</p>
              <button type="button" className="btn" onClick={() => { setSearch(""); setParams({ q: null, status: null, page: null }); }}>
                Clear filters
              </button>
            </>
          ) : (
            <>
              <h2>Your library is empty</h2>
              {canUpload ? (
                <>
                  <p className="muted">Upload your first video; it is ready to watch in moments.</p>
                  <Link className="btn btn--primary" href="/upload" data-testid="empty-upload">
                    Upload a video
                  </Link>
                </>
              ) : (
                <p className="muted">Videos your organisation uploads will appear here.</p>
              )}
            </>
          )}
        </div>
      )}

      {data && data.items.length > 0 && (
        <>
          <p className="muted small" aria-live="polite">
            {data.total} {data.total === 1 ? "video" : "videos"}
            {filtered ? " found" : ""}
          </p>
          <ul className="video-grid" data-testid="video-grid">
            {data.items.map((video) => (
              <li key={video.id}>
                <VideoCard video={video} uploadPercent={uploadPercent.get(video.id) ?? null} />
              </li>
            ))}
          </ul>
        </>
      )}

      {data && pages > 1 && (
        <nav className="pagination" aria-label="Pages">
          <button
            type="button"
            className="btn btn--small"
            disabled={page <= 1}
            onClick={() => {
              if (page - 1 <= 1) headingRef.current?.focus(); // this button is about to be disabled
              setParams({ page: page - 1 > 1 ? String(page - 1) : null });
            }}
          >
            Previous
          </button>
          <span aria-current="page">
            Page {page} of {pages}
          </span>
          <button
            type="button"
            className="btn btn--small"
            disabled={page >= pages}
            onClick={() => {
              if (page + 1 >= pages) headingRef.current?.focus(); // this button is about to be disabled
              setParams({ page: String(page + 1) });
            }}
          >
            Next
          </button>
        </nav>
      )}
    </div>
  );
}

export default function LibraryPage() {
  return (
    <RequireAuth>
      <Suspense fallback={<Loading />}>
        <Library />
      </Suspense>
    </RequireAuth>
  );
}
