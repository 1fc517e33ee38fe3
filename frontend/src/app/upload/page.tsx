"use client";

import Link from "next/link";
import { useCallback, useEffect, useId, useRef, useState, type DragEvent } from "react";
import { UploadIcon } from "@/components/Icons";
import { ProgressBar } from "@/components/ProgressBar";
import { RequireAuth } from "@/components/RequireAuth";
import { StatusBadge } from "@/components/StatusBadge";
import { useUser } from "@/lib/auth";
import { formatBytes, formatDate, formatEta, formatSpeed } from "@/lib/format";
import {
  discardInterrupted,
  interruptedUploads,
  useUploadStore,
  useUploads,
  type InterruptedUpload,
  type UploadItem,
} from "@/lib/uploads";

const STATE_LABEL: Record<UploadItem["state"], string> = {
  queued: "Waiting",
  uploading: "Uploading",
  paused: "Paused",
  done: "Uploaded",
  error: "Failed",
  cancelled: "Cancelled",
};

function UploadRow({ item }: { item: UploadItem }) {
  const store = useUploadStore();
  const percent = item.size > 0 ? (item.sent / item.size) * 100 : 0;
  const active = item.state === "uploading" || item.state === "queued";
  const resumable = item.state === "paused" || (item.state === "error" && !!item.videoId);
  const serverFailed = item.serverStatus === "failed";
  const rowRef = useRef<HTMLLIElement>(null);
  const lastFocused = useRef<HTMLElement | null>(null);

  // The buttons follow the upload's state (Cancel gives way to "Remove from list", Pause goes when the upload
  // ends): when the focused one went away, focus moves to the row's first button instead of the page's start.
  useEffect(() => {
    const gone = lastFocused.current;
    const focused = document.activeElement;
    if (!gone || gone.isConnected || (focused && focused !== document.body)) return;
    rowRef.current?.querySelector<HTMLElement>(".upload-item__actions :is(button, a):not(:disabled)")?.focus();
  }, [item.state]);

  return (
    <li
      ref={rowRef}
      className="upload-item"
      data-testid="upload-item"
      data-state={item.state}
      data-video-id={item.videoId ?? ""}
      onFocus={(e) => {
        lastFocused.current = e.target;
      }}
      onBlur={(e) => {
        // Focus moved on to something else (not lost with a removed button): stop following it.
        if (e.relatedTarget && !e.currentTarget.contains(e.relatedTarget)) lastFocused.current = null;
      }}
    >
      <div className="upload-item__head">
        <span className="upload-item__name">{item.name}</span>
        <span className="btn-row">
          {item.state === "done" && item.serverStatus ? (
            <StatusBadge status={item.serverStatus} />
          ) : (
            <span className={`badge${item.state === "error" ? " badge--failed" : item.state === "uploading" ? " badge--uploading" : ""}`}>
              {STATE_LABEL[item.state]}
            </span>
          )}
        </span>
      </div>
      {item.state !== "error" || item.sent > 0 ? (
        <ProgressBar
          value={percent}
          label={`Upload of ${item.name}`}
          state={serverFailed || item.state === "error" ? "failed" : item.state === "done" ? "ready" : item.state}
          testId="upload-progress"
        />
      ) : null}
      <div className="upload-item__stats">
        <span data-testid="upload-bytes">
          {formatBytes(item.sent)} of {formatBytes(item.size)} ({Math.floor(percent)}%)
        </span>
        {item.state === "uploading" && (
          <>
            <span data-testid="upload-speed">{formatSpeed(item.speed)}</span>
            <span data-testid="upload-eta">{item.eta == null ? "Estimating…" : `${formatEta(item.eta)} left`}</span>
          </>
        )}
        {item.resumedFrom != null && item.resumedFrom > 0 && (
          <span data-testid="upload-resumed">Resumed at {formatBytes(item.resumedFrom)}</span>
        )}
        {item.state === "done" && item.serverStatus === "processing" && item.serverProgress != null && (
          <span>Processing {Math.floor(item.serverProgress)}%</span>
        )}
      </div>
      {item.error && (
        <p className="upload-item__error" role="alert" data-testid="upload-error">
          {item.error}
        </p>
      )}
      {serverFailed && (
        <p className="upload-item__error" role="alert" data-testid="upload-server-error">
          {item.serverError ?? "The server could not process this file."}
        </p>
      )}
      <div className="upload-item__actions btn-row">
        {(item.state === "uploading" || resumable) && (
          // One button for both, so that it keeps the focus when it turns from Pause into Resume and back.
          <button
            type="button"
            className="btn btn--small"
            onClick={() => (resumable ? store.resume(item.key) : store.pause(item.key))}
            data-testid={resumable ? "upload-resume" : "upload-pause"}
          >
            {resumable ? "Resume" : "Pause"}
            <span className="visually-hidden"> {item.name}</span>
          </button>
        )}
        {(active || resumable) && (
          <button
            type="button"
            className="btn btn--small btn--danger"
            onClick={() => void store.cancel(item.key)}
            data-testid="upload-cancel"
          >
            Cancel<span className="visually-hidden"> {item.name}</span>
          </button>
        )}
        {item.state === "done" && item.videoId && !serverFailed && (
          <Link className="btn btn--small" href={`/watch?v=${encodeURIComponent(item.videoId)}`}>
            Open<span className="visually-hidden"> {item.name}</span>
          </Link>
        )}
        {!active && item.state !== "paused" && (
          <button type="button" className="btn btn--small btn--ghost" onClick={() => store.dismiss(item.key)}>
            Remove from list<span className="visually-hidden"> {item.name}</span>
          </button>
        )}
      </div>
    </li>
  );
}

function Interrupted({ userId, refreshKey }: { userId: string; refreshKey: number }) {
  const [items, setItems] = useState<InterruptedUpload[]>([]);
  const uploads = useUploads();
  const activeNames = new Set(uploads.filter((u) => u.state !== "cancelled").map((u) => `${u.name}|${u.size}`));

  const reload = useCallback(() => {
    interruptedUploads(userId).then(setItems, () => setItems([]));
  }, [userId]);

  useEffect(() => {
    reload();
  }, [reload, refreshKey]);

  const visible = items.filter((i) => !activeNames.has(`${i.name}|${i.size}`));
  if (visible.length === 0) return null;
  return (
    <section className="card" aria-labelledby="interrupted-title" data-testid="interrupted" style={{ marginTop: "1.25rem" }}>
      <h2 id="interrupted-title">Unfinished uploads</h2>
      <p className="muted small">
        These uploads stopped before they finished. Choose the same file again to continue where it stopped.
      </p>
      <ul className="upload-list">
        {visible.map((item) => (
          <li key={item.storageKey} className="upload-item" data-testid="interrupted-item">
            <div className="upload-item__head">
              <span className="upload-item__name">{item.name}</span>
              <span className="muted small">
                {formatBytes(item.size)} · started {formatDate(item.createdAt)}
              </span>
            </div>
            <button
              type="button"
              className="btn btn--small btn--ghost"
              onClick={async () => {
                await discardInterrupted(item);
                reload();
              }}
            >
              Discard<span className="visually-hidden"> {item.name}</span>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Uploader() {
  const store = useUploadStore();
  const uploads = useUploads();
  const user = useUser();
  const inputRef = useRef<HTMLInputElement>(null);
  const [dragging, setDragging] = useState(false);
  const [added, setAdded] = useState(0);
  const hintId = useId();

  const addFiles = useCallback(
    (list: FileList | null) => {
      const files = list ? Array.from(list) : [];
      if (files.length === 0) return;
      void store.add(files).then(() => setAdded((n) => n + 1));
    },
    [store],
  );

  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    addFiles(event.dataTransfer.files);
  };

  const running = uploads.filter((u) => u.state === "uploading").length;
  const done = uploads.filter((u) => u.state === "done").length;
  const failed = uploads.filter((u) => u.state === "error").length;
  const summary = uploads.length
    ? `${running} uploading, ${done} finished${failed ? `, ${failed} failed` : ""}.`
    : "";

  return (
    <div className="page page--narrow">
      <div className="page-head">
        <h1>Upload videos</h1>
        <Link href="/" className="btn btn--ghost">
          Back to the library
        </Link>
      </div>

      <div
        className="dropzone"
        data-dragging={dragging ? "true" : "false"}
        data-testid="dropzone"
        onDragEnter={(e) => {
          e.preventDefault();
          setDragging(true);
        }}
        onDragOver={(e) => {
          e.preventDefault();
          e.dataTransfer.dropEffect = "copy";
        }}
        onDragLeave={(e) => {
          if (e.currentTarget.contains(e.relatedTarget as Node | null)) return;
          setDragging(false);
        }}
        onDrop={onDrop}
      >
        <UploadIcon size={40} />
        <p>
          <strong>Drag and drop video files here</strong>
        </p>
        <p className="muted small" id={hintId}>
          or choose them from your device. Several at once are fine; each upload can be paused and resumed, even after
          reloading the page.
        </p>
        <input
          ref={inputRef}
          id="file-input"
          tabIndex={-1}
          aria-hidden="true"
          type="file"
          accept="video/*,.mkv,.mov,.mp4,.m4v,.webm,.avi,.ts,.mts"
          multiple
          className="visually-hidden"
          data-testid="file-input"
          aria-describedby={hintId}
          onChange={(e) => {
            addFiles(e.target.files);
            e.target.value = ""; // choosing the same file again must fire change again
          }}
        />
        <button type="button" className="btn btn--primary" onClick={() => inputRef.current?.click()} data-testid="choose-files">
          Choose files
        </button>
      </div>

      <div className="visually-hidden" aria-live="polite" data-testid="upload-summary">
        {summary}
      </div>

      {uploads.length > 0 && (
        <ul className="upload-list" aria-label="Uploads" data-testid="upload-list">
          {uploads.map((item) => (
            <UploadRow key={item.key} item={item} />
          ))}
        </ul>
      )}

      {user && <Interrupted userId={user.id} refreshKey={added + done} />}
    </div>
  );
}

export default function UploadPage() {
  return (
    <RequireAuth role="editor">
      <Uploader />
    </RequireAuth>
  );
}
