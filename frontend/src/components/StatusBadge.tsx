import type { VideoStatus } from "@/lib/types";

const LABELS: Record<VideoStatus, string> = {
  uploading: "Uploading",
  uploaded: "Uploaded",
  processing: "Processing",
  ready: "Ready",
  failed: "Failed",
};

export function statusLabel(status: VideoStatus): string {
  return LABELS[status] ?? status;
}

export function StatusBadge({ status }: { status: VideoStatus }) {
  return (
    <span className={`badge badge--${status}`} data-testid="status-badge" data-status={status}>
      {statusLabel(status)}
    </span>
  );
}
