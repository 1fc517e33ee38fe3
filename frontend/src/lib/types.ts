export type Role = "admin" | "editor" | "viewer";
export type VideoStatus = "uploading" | "uploaded" | "processing" | "ready" | "failed";
export type Visibility = "private" | "tenant" | "unlisted";

export const STATUSES: VideoStatus[] = ["uploading", "uploaded", "processing", "ready", "failed"];
export const VISIBILITIES: Visibility[] = ["private", "tenant", "unlisted"];
export const ROLES: Role[] = ["admin", "editor", "viewer"];

export interface User {
  id: string;
  email: string;
  display_name: string;
  role: Role;
  tenant_id: string;
  created_at?: string;
}

export interface Tenant {
  id: string;
  name: string;
}

export interface Rendition {
  name: string;
  width: number;
  height: number;
  bitrate: number;
}

export interface Playback {
  hls_url: string | null;
  original_url: string | null;
  token_expires_at: string | null;
}

export interface Video {
  id: string;
  title: string;
  description: string;
  status: VideoStatus;
  progress: number;
  duration: number | null;
  width: number | null;
  height: number | null;
  renditions: Rendition[];
  thumbnail_url: string | null;
  poster_url: string | null;
  storyboard_url: string | null;
  playback: Playback;
  error: string | null;
  created_at: string;
  owner_id: string;
  visibility: Visibility;
  size: number | null;
  filename: string | null;
  share_url?: string;
}

export interface Page<T> {
  items: T[];
  total: number;
  page: number;
  per_page: number;
}

export type WebhookEvent = "video.ready" | "video.failed";
export const WEBHOOK_EVENTS: WebhookEvent[] = ["video.ready", "video.failed"];

export interface Webhook {
  id: string;
  url: string;
  events: WebhookEvent[];
  active: boolean;
  created_at: string;
  secret?: string;
}

export interface Delivery {
  id: string;
  webhook_id: string;
  event: string;
  video_id: string | null;
  status: "pending" | "delivered" | "failed";
  attempts: number;
  next_attempt_at: number | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at?: string;
  updated_at?: string;
}

/** A Socket.IO event about one video (DESIGN §3); `seq` increases per video. `video.deleted` is the last one: the
 * video was deleted, or its upload cancelled or terminated. */
export interface VideoEvent {
  type:
    | "video.status"
    | "video.progress"
    | "video.playable"
    | "video.rendition_ready"
    | "video.ready"
    | "video.failed"
    | "video.deleted";
  video_id: string;
  seq: number;
  ts: number;
  tenant_id?: string;
  status?: VideoStatus;
  /** `video.playable`: which URL can be played now. */
  playback?: "original" | "hls";
  stage?: string;
  percent?: number;
  rendition?: string;
  error?: string;
}

export function hasRole(user: User | null | undefined, role: Role): boolean {
  if (!user) return false;
  const rank: Record<Role, number> = { viewer: 0, editor: 1, admin: 2 };
  return rank[user.role] >= rank[role];
}
