"use client";

/**
 * The video player: hls.js (adaptive, with a quality menu) where Media Source Extensions exist, Safari's native
 * HLS on Safari, and the original file by range requests while HLS is not ready yet; it switches to HLS when the
 * video becomes ready, keeping the position and whether it was playing. Custom controls with a seek bar that
 * previews storyboard thumbnails on hover.
 */
import type Hls from "hls.js";
import type { ErrorData, Level } from "hls.js";
import { useCallback, useEffect, useMemo, useRef, useState, type KeyboardEvent, type PointerEvent } from "react";
import { formatDuration } from "@/lib/format";
import { cueAt, loadStoryboard, type StoryboardCue } from "@/lib/storyboard";
import type { Video } from "@/lib/types";
import { FullscreenIcon, PauseIcon, PlayIcon, VolumeIcon } from "./Icons";

export type PlaybackMode = "hls" | "native-hls" | "original" | "none";

interface Source {
  kind: "hls" | "original" | "none";
  url: string | null;
}

/** HLS once the video is ready (or when the original cannot play in browsers); the original before that. */
export function chooseSource(video: Video): Source {
  const { hls_url: hls, original_url: original } = video.playback;
  if (hls && (video.status === "ready" || !original)) return { kind: "hls", url: hls };
  if (original) return { kind: "original", url: original };
  return { kind: "none", url: null };
}

function tokenOf(url: string | null): string | null {
  if (!url) return null;
  try {
    return new URL(url, "http://x").searchParams.get("token");
  } catch {
    return null;
  }
}

/** Playlists carry the token they were fetched with; later requests get the newest one instead. */
function withToken(url: string, token: string | null): string {
  if (!token) return url;
  try {
    const parsed = new URL(url);
    if (parsed.origin !== window.location.origin || !parsed.pathname.startsWith("/api/stream/")) return url;
    if (!parsed.searchParams.has("token") || parsed.searchParams.get("token") === token) return url;
    parsed.searchParams.set("token", token);
    return parsed.href;
  } catch {
    return url;
  }
}

function isSafari(): boolean {
  const ua = navigator.userAgent;
  return /Safari\//.test(ua) && !/(Chrome|Chromium|CriOS|FxiOS|Edg|OPR|Android)\//.test(ua);
}

interface QualityLevel {
  index: number;
  label: string;
  height: number;
}

function levelLabel(level: Level): string {
  if (level.height) return `${level.height}p`;
  if (level.name) return level.name;
  return `${Math.round(level.bitrate / 1000)} kbps`;
}

const MEDIA_ERRORS: Record<number, string> = {
  1: "Playback was aborted.",
  2: "A network error stopped the video.",
  3: "The video could not be decoded.",
  4: "This video format is not supported by your browser.",
};

export function Player({ video, title }: { video: Video; title: string }) {
  const containerRef = useRef<HTMLDivElement>(null);
  const videoRef = useRef<HTMLVideoElement>(null);
  const seekRef = useRef<HTMLInputElement>(null);
  const hlsRef = useRef<Hls | null>(null);
  const tokenRef = useRef<string | null>(null);
  const seekingRef = useRef(false);
  const wantsPlayRef = useRef(false);
  const retriesRef = useRef(0);
  const latestUrlRef = useRef<string | null>(null);
  const lastTimeRef = useRef(0);

  const source = chooseSource(video);
  const sourceKind = source.kind;
  const sourceUrl = source.url;
  const attachedRef = useRef<{ kind: Source["kind"]; url: string } | null>(null);

  const [streamMode, setStreamMode] = useState<"hls" | "native-hls" | "none">("none");
  const mode: PlaybackMode = sourceKind === "hls" ? streamMode : sourceKind;
  const [levels, setLevels] = useState<QualityLevel[]>([]);
  const [selectedLevel, setSelectedLevel] = useState(-1);
  const [activeLevel, setActiveLevel] = useState(-1);
  const [playing, setPlaying] = useState(false);
  const [current, setCurrent] = useState(0);
  const [mediaDuration, setDuration] = useState(0);
  const duration = mediaDuration || video.duration || 0;
  const [muted, setMuted] = useState(false);
  const [volume, setVolume] = useState(1);
  const [message, setMessage] = useState<string | null>(null);
  const [mediaError, setMediaError] = useState<string | null>(null);
  const [storyboard, setStoryboard] = useState<{ id: string; cues: StoryboardCue[] } | null>(null);
  const [hover, setHover] = useState<{ x: number; time: number; width: number } | null>(null);

  useEffect(() => {
    tokenRef.current = tokenOf(sourceUrl);
    latestUrlRef.current = sourceUrl;
  }, [sourceUrl]);

  // Attach the chosen source. Re-runs only when the kind of source changes (original → HLS), never for a new
  // token: the position and the play state carry over the switch.
  useEffect(() => {
    const element = videoRef.current;
    const url = sourceUrl;
    tokenRef.current = tokenOf(url);
    if (!element || sourceKind === "none" || !url) {
      attachedRef.current = null;
      return;
    }
    attachedRef.current = { kind: sourceKind, url };
    retriesRef.current = 0;
    let cancelled = false;
    // An original watched to its end hands over a stream at its start, paused, as an ended video replays from
    // the start. Started at the end instead, the stream sat paused on its last frame (hls.js fetching its first
    // and last segments for it), and Play played the frame or two by which it is longer than the original.
    const ended = element.ended;
    const resumeAt = ended ? 0 : element.currentTime || lastTimeRef.current || 0;
    const wasPlaying = !ended && (wantsPlayRef.current || !element.paused);
    if (ended) lastTimeRef.current = 0;
    setMediaError(null);
    setMessage(null);
    setLevels([]);
    setSelectedLevel(-1);
    setActiveLevel(-1);

    const resume = () => {
      if (resumeAt > 0) {
        try {
          element.currentTime = resumeAt;
        } catch {
          // not seekable yet
        }
      }
      if (wasPlaying) void element.play().catch(() => undefined);
    };

    if (sourceKind === "original") {
      element.src = url;
      element.addEventListener("loadedmetadata", resume, { once: true });
      element.load();
      return () => {
        cancelled = true;
        element.removeEventListener("loadedmetadata", resume);
      };
    }

    const nativeHls = element.canPlayType("application/vnd.apple.mpegurl") !== "";
    (async () => {
      const { default: HlsClass, Events, ErrorTypes } = await import("hls.js");
      if (cancelled) return;
      if (!HlsClass.isSupported() || (isSafari() && nativeHls)) {
        if (nativeHls) {
          element.src = url;
          element.addEventListener("loadedmetadata", resume, { once: true });
          element.load();
          setStreamMode("native-hls");
        } else {
          setMessage("Your browser cannot play adaptive streams.");
          setStreamMode("none");
        }
        return;
      }
      element.removeAttribute("src");
      const hls = new HlsClass({
        enableWorker: true,
        startPosition: resumeAt > 0 ? resumeAt : 0,
        capLevelToPlayerSize: false,
        xhrSetup: (xhr, requestUrl) => {
          const fresh = withToken(requestUrl, tokenRef.current);
          if (fresh !== requestUrl) xhr.open("GET", fresh, true);
        },
      });
      hlsRef.current = hls;
      let networkRetries = 0;
      let mediaRetries = 0;
      hls.on(Events.MANIFEST_PARSED, (_event, data) => {
        const list = data.levels
          .map((level, index) => ({ index, label: levelLabel(level), height: level.height || 0 }))
          .sort((a, b) => b.height - a.height);
        setLevels(list);
        if (wasPlaying) void element.play().catch(() => undefined);
      });
      hls.on(Events.LEVEL_SWITCHED, (_event, data) => setActiveLevel(data.level));
      hls.on(Events.FRAG_LOADED, () => {
        networkRetries = 0;
      });
      hls.on(Events.ERROR, (_event, data: ErrorData) => {
        if (!data.fatal) return;
        if (data.type === ErrorTypes.NETWORK_ERROR && networkRetries < 5) {
          networkRetries += 1;
          setTimeout(() => hls.startLoad(), 1000 * networkRetries);
        } else if (data.type === ErrorTypes.MEDIA_ERROR && mediaRetries < 2) {
          mediaRetries += 1;
          hls.recoverMediaError();
        } else {
          setMediaError(`The stream could not be played (${data.details}).`);
          hls.destroy();
          hlsRef.current = null;
        }
      });
      hls.loadSource(url);
      hls.attachMedia(element);
      setStreamMode("hls");
    })();

    return () => {
      cancelled = true;
      element.removeEventListener("loadedmetadata", resume);
      if (hlsRef.current) {
        hlsRef.current.destroy();
        hlsRef.current = null;
      }
    };
    // a new token alone (same kind of source) must not reload the player
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sourceKind]);

  // A new playback URL (every refetch of the video issues a fresh token): hls.js picks the token up per request
  // (tokenRef) and Safari's HLS is given the URL in place. The original keeps the URL it plays: swapping it
  // reloads the element (a stall), and a reload still underway when the video becomes ready hands the switch
  // to HLS neither the position nor the end of an original watched to its end; were its token to expire while
  // playing, the next range request fails and the error handler reloads it from the newest URL.
  useEffect(() => {
    const attached = attachedRef.current;
    const element = videoRef.current;
    if (!element || !sourceUrl || !attached || attached.kind !== sourceKind || attached.url === sourceUrl) return;
    if (attached.kind === "original") return;
    attached.url = sourceUrl;
    if (!hlsRef.current) {
      const at = element.currentTime;
      const wasPlaying = !element.paused;
      element.src = sourceUrl;
      const swapped = element.src;
      element.addEventListener(
        "loadedmetadata",
        () => {
          if (element.src !== swapped) return; // replaced again meanwhile
          element.currentTime = at;
          if (wasPlaying) void element.play().catch(() => undefined);
        },
        { once: true },
      );
    }
  }, [sourceUrl, sourceKind]);

  // Storyboard for seek previews (only ready videos have one).
  const storyboardUrl = video.storyboard_url;
  useEffect(() => {
    let cancelled = false;
    if (!storyboardUrl) return;
    loadStoryboard(storyboardUrl).then(
      (cues) => !cancelled && setStoryboard({ id: video.id, cues }),
      () => undefined,
    );
    return () => {
      cancelled = true;
    };
    // a new token does not change the pictures
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [video.id, !!storyboardUrl]);
  const cues = storyboardUrl && storyboard?.id === video.id ? storyboard.cues : [];

  // Media element state → controls.
  useEffect(() => {
    const element = videoRef.current;
    if (!element) return;
    const onTime = () => {
      if (!element.error && element.currentTime > 0) lastTimeRef.current = element.currentTime;
      if (!seekingRef.current) setCurrent(element.currentTime);
    };
    const onDuration = () => {
      if (Number.isFinite(element.duration) && element.duration > 0) setDuration(element.duration);
    };
    const onPlay = () => {
      wantsPlayRef.current = true;
      setPlaying(true);
    };
    const onPause = () => {
      if (!element.error) wantsPlayRef.current = false;
      setPlaying(false);
    };
    const onVolume = () => {
      setMuted(element.muted);
      setVolume(element.volume);
    };
    const onError = () => {
      const error = element.error;
      if (!error || (mode !== "original" && mode !== "native-hls")) return;
      // The file behind the original's URL can change while the video is processed (the upload, then its
      // faststart copy): a reader caught between the two fails. Load it again where it was, a few times.
      if (mode === "original" && retriesRef.current < 3 && element.currentSrc) {
        retriesRef.current += 1;
        const at = lastTimeRef.current;
        const url = new URL(latestUrlRef.current ?? element.currentSrc, element.currentSrc);
        url.searchParams.set("attempt", String(retriesRef.current));
        element.src = url.href;
        element.addEventListener(
          "loadedmetadata",
          () => {
            if (element.src !== url.href) return; // switched to HLS meanwhile: hls.js places the position
            if (at > 0) element.currentTime = at;
            if (wantsPlayRef.current) void element.play().catch(() => undefined);
          },
          { once: true },
        );
        element.load();
        return;
      }
      setMediaError(MEDIA_ERRORS[error.code] ?? "The video could not be played.");
    };
    const onWaiting = () => setMessage(null);
    element.addEventListener("timeupdate", onTime);
    element.addEventListener("durationchange", onDuration);
    element.addEventListener("loadedmetadata", onDuration);
    element.addEventListener("play", onPlay);
    element.addEventListener("pause", onPause);
    element.addEventListener("ended", onPause);
    element.addEventListener("volumechange", onVolume);
    element.addEventListener("error", onError);
    element.addEventListener("playing", onWaiting);
    return () => {
      element.removeEventListener("timeupdate", onTime);
      element.removeEventListener("durationchange", onDuration);
      element.removeEventListener("loadedmetadata", onDuration);
      element.removeEventListener("play", onPlay);
      element.removeEventListener("pause", onPause);
      element.removeEventListener("ended", onPause);
      element.removeEventListener("volumechange", onVolume);
      element.removeEventListener("error", onError);
      element.removeEventListener("playing", onWaiting);
    };
  }, [mode]);

  const togglePlay = useCallback(() => {
    const element = videoRef.current;
    if (!element) return;
    if (element.paused || element.ended) {
      wantsPlayRef.current = true;
      void element.play().catch(() => undefined);
    } else {
      wantsPlayRef.current = false;
      element.pause();
    }
  }, []);

  const seekTo = useCallback(
    (time: number) => {
      const element = videoRef.current;
      if (!element) return;
      const clamped = Math.max(0, Math.min(duration || element.duration || 0, time));
      element.currentTime = clamped;
      setCurrent(clamped);
    },
    [duration],
  );

  const toggleFullscreen = useCallback(() => {
    const container = containerRef.current;
    if (!container) return;
    if (document.fullscreenElement) void document.exitFullscreen();
    else void container.requestFullscreen?.().catch(() => undefined);
  }, []);

  // Keys anywhere in the player (the player itself, the video, its buttons and sliders): space/k play and pause,
  // ←/→ seek 5 s (on the seek bar too, instead of its 0.1 s steps), f full screen, m mute. Keys a control needs
  // for itself stay with it: letters and arrows in the quality list, arrows on the volume slider, space on buttons.
  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>) => {
    const element = videoRef.current;
    if (!element || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target as HTMLElement;
    const slider = target instanceof HTMLInputElement && target.type === "range";
    const field = target.tagName === "SELECT" || target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && !slider);
    if (field) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (key === " " && target.tagName === "BUTTON") return;
    if ((key === "ArrowLeft" || key === "ArrowRight") && slider && target !== seekRef.current) return;
    if (key === " " || key === "k") togglePlay();
    else if (key === "ArrowLeft") seekTo(element.currentTime - 5);
    else if (key === "ArrowRight") seekTo(element.currentTime + 5);
    else if (key === "f") toggleFullscreen();
    else if (key === "m") element.muted = !element.muted;
    else return;
    event.preventDefault();
  };

  const onSeekHover = (event: PointerEvent<HTMLDivElement>) => {
    const rect = event.currentTarget.getBoundingClientRect();
    const fraction = Math.max(0, Math.min(1, (event.clientX - rect.left) / rect.width));
    setHover({ x: fraction * rect.width, time: fraction * (duration || 0), width: rect.width });
  };

  const chooseLevel = (value: number) => {
    setSelectedLevel(value);
    const hls = hlsRef.current;
    if (hls) hls.currentLevel = value; // -1: automatic (ABR)
  };

  const hoverCue = hover && cues.length ? cueAt(cues, hover.time) : null;
  const previewWidth = hoverCue ? Math.min(hoverCue.w, 200) : 0;
  const scale = hoverCue ? previewWidth / hoverCue.w : 1;
  const activeLabel = useMemo(() => levels.find((l) => l.index === activeLevel)?.label, [levels, activeLevel]);
  const seekMax = duration;

  return (
    <div
      ref={containerRef}
      className="player"
      data-testid="player"
      data-playback={mode}
      data-level={activeLabel ?? ""}
      data-media-error={mediaError ? "true" : "false"}
      onKeyDown={onKeyDown}
      role="region"
      aria-label={`Video player: ${title}`}
      tabIndex={0}
    >
      {source.kind === "none" && (
        <div className="player__placeholder" data-testid="player-placeholder">
          <div>
            <div className="spinner" aria-hidden="true" />
            <p>
              {video.status === "failed"
                ? "This video could not be processed."
                : "This video is being prepared. It starts playing here as soon as it can."}
            </p>
          </div>
        </div>
      )}
      <video
        ref={videoRef}
        playsInline
        preload="metadata"
        poster={video.poster_url ?? undefined}
        hidden={source.kind === "none"}
        onClick={togglePlay}
        data-testid="video"
        aria-label={title}
        tabIndex={-1}
      />
      {(mediaError || message) && (
        <p className="player__message" role="alert" data-testid="player-error">
          {mediaError ?? message}
        </p>
      )}
      {source.kind !== "none" && (
        <div className="controls">
          <div className="seek" onPointerMove={onSeekHover} onPointerLeave={() => setHover(null)}>
            {hoverCue && hover && (
              <div
                className="seek__preview"
                data-testid="storyboard-preview"
                style={{
                  left: Math.max(previewWidth / 2, Math.min(hover.x, hover.width - previewWidth / 2)),
                  width: previewWidth,
                  height: hoverCue.h * scale,
                }}
              >
                <div
                  className="seek__preview-image"
                  style={{
                    width: hoverCue.w,
                    height: hoverCue.h,
                    backgroundImage: `url("${hoverCue.url}")`,
                    backgroundPosition: `-${hoverCue.x}px -${hoverCue.y}px`,
                    transform: `scale(${scale})`,
                    transformOrigin: "0 0",
                  }}
                />
                <span className="seek__preview-time">{formatDuration(hover.time)}</span>
              </div>
            )}
            <input
              ref={seekRef}
              type="range"
              min={0}
              max={seekMax || 0}
              step={0.1}
              value={Math.min(current, seekMax || current)}
              aria-label="Seek"
              aria-valuetext={`${formatDuration(current)} of ${formatDuration(seekMax)}`}
              data-testid="seek"
              onPointerDown={() => {
                seekingRef.current = true;
              }}
              onPointerUp={() => {
                seekingRef.current = false;
              }}
              onChange={(e) => seekTo(Number(e.target.value))}
            />
          </div>
          <div className="controls__row">
            <button type="button" onClick={togglePlay} aria-label={playing ? "Pause" : "Play"} data-testid="play-toggle">
              {playing ? <PauseIcon size={18} /> : <PlayIcon size={18} />}
            </button>
            <span className="controls__time" data-testid="time">
              {formatDuration(current)} / {formatDuration(seekMax)}
            </span>
            <span className="controls__spacer" />
            <button
              type="button"
              onClick={() => {
                const element = videoRef.current;
                if (element) element.muted = !element.muted;
              }}
              aria-label={muted ? "Unmute" : "Mute"}
              aria-pressed={muted}
            >
              <VolumeIcon size={18} muted={muted || volume === 0} />
            </button>
            <input
              className="controls__volume"
              type="range"
              min={0}
              max={1}
              step={0.05}
              value={muted ? 0 : volume}
              aria-label="Volume"
              onChange={(e) => {
                const element = videoRef.current;
                if (!element) return;
                element.volume = Number(e.target.value);
                element.muted = Number(e.target.value) === 0;
              }}
            />
            {mode === "hls" && levels.length > 0 && (
              <>
                <label htmlFor="quality" className="visually-hidden">
                  Quality
                </label>
                <select
                  id="quality"
                  value={selectedLevel}
                  onChange={(e) => chooseLevel(Number(e.target.value))}
                  data-testid="quality"
                >
                  <option value={-1}>{`Auto${selectedLevel === -1 && activeLabel ? ` (${activeLabel})` : ""}`}</option>
                  {levels.map((level) => (
                    <option key={level.index} value={level.index}>
                      {level.label}
                    </option>
                  ))}
                </select>
              </>
            )}
            {mode === "original" && (
              <span className="controls__time" title="Adaptive streaming starts when processing finishes">
                Original
              </span>
            )}
            <button type="button" onClick={toggleFullscreen} aria-label="Full screen">
              <FullscreenIcon size={18} />
            </button>
          </div>
        </div>
      )}
    </div>
  );
}
