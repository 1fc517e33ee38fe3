import Link from "next/link";
import { formatDate, formatDuration } from "@/lib/format";
import type { Video } from "@/lib/types";
import { FilmIcon } from "./Icons";
import { ProgressBar } from "./ProgressBar";
import { StatusBadge } from "./StatusBadge";

interface Props {
  video: Video;
  /** Upload progress from this tab's uploads (percent), when the video is still uploading here. */
  uploadPercent: number | null;
}

function progressOf(video: Video, uploadPercent: number | null): { value: number | null; label: string } | null {
  switch (video.status) {
    case "uploading":
      return { value: uploadPercent, label: uploadPercent == null ? "Uploading" : `Uploading ${Math.floor(uploadPercent)}%` };
    case "uploaded":
      return { value: 0, label: "Waiting to be processed" };
    case "processing":
      return { value: video.progress ?? 0, label: `Processing ${Math.floor(video.progress ?? 0)}%` };
    default:
      return null;
  }
}

export function VideoCard({ video, uploadPercent }: Props) {
  const progress = progressOf(video, uploadPercent);
  const href = `/watch?v=${encodeURIComponent(video.id)}`;
  return (
    <article
      className="video-card"
      data-testid="video-card"
      data-video-id={video.id}
      data-status={video.status}
      aria-labelledby={`title-${video.id}`}
    >
      <div className="video-card__thumb">
        {video.thumbnail_url ? (
          // eslint-disable-next-line @next/next/no-img-element -- static export: tokenised URLs, no optimiser
          <img src={video.thumbnail_url} alt="" loading="lazy" decoding="async" />
        ) : (
          <FilmIcon size={36} />
        )}
        {video.duration != null && (
          <span className="video-card__duration" data-testid="duration">
            <span className="visually-hidden">Duration </span>
            {formatDuration(video.duration)}
          </span>
        )}
      </div>
      <div className="video-card__body">
        <h2 className="video-card__title" id={`title-${video.id}`}>
          <Link className="video-card__link" href={href} data-testid="video-link">
            {video.title}
          </Link>
        </h2>
        <div className="video-card__meta">
          <StatusBadge status={video.status} />
          <span>{formatDate(video.created_at)}</span>
        </div>
        {progress && (
          <>
            <ProgressBar value={progress.value} label={`${video.title}: ${progress.label}`} state={video.status} />
            <span className="visually-hidden">{progress.label}</span>
          </>
        )}
        {video.status === "failed" && (
          <p className="video-card__error" data-testid="video-error">
            {video.error || "Processing failed."}
          </p>
        )}
      </div>
    </article>
  );
}
