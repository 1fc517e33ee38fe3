/** Parses a WebVTT storyboard index whose cues name sprite tiles (`storyboard.jpg?token=…#xywh=x,y,w,h`). */
export interface StoryboardCue {
  start: number;
  end: number;
  url: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

function seconds(stamp: string): number {
  const parts = stamp.trim().split(":").map(Number);
  let total = 0;
  for (const part of parts) total = total * 60 + (Number.isFinite(part) ? part : 0);
  return total;
}

export function parseStoryboard(text: string, baseUrl: string): StoryboardCue[] {
  const cues: StoryboardCue[] = [];
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const timing = line.match(/^\s*([\d:.]+)\s+-->\s+([\d:.]+)/);
    if (!timing) continue;
    const target = (lines[i + 1] ?? "").trim();
    const match = target.match(/^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)$/);
    if (!match) continue;
    cues.push({
      start: seconds(timing[1] ?? "0"),
      end: seconds(timing[2] ?? "0"),
      url: new URL(match[1] ?? "", baseUrl).href,
      x: Number(match[2]),
      y: Number(match[3]),
      w: Number(match[4]),
      h: Number(match[5]),
    });
  }
  return cues;
}

export function cueAt(cues: StoryboardCue[], time: number): StoryboardCue | null {
  let lo = 0;
  let hi = cues.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const cue = cues[mid]!;
    if (time < cue.start) hi = mid - 1;
    else if (time >= cue.end) lo = mid + 1;
    else return cue;
  }
  return cues.length ? (time < (cues[0]?.start ?? 0) ? cues[0]! : cues[cues.length - 1]!) : null;
}

export async function loadStoryboard(url: string): Promise<StoryboardCue[]> {
  const absolute = new URL(url, window.location.href).href;
  const response = await fetch(absolute, { cache: "no-store" });
  if (!response.ok) return [];
  return parseStoryboard(await response.text(), absolute);
}
