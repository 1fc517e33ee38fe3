"""What the ladder's one ffmpeg process makes of a source: the rungs (the top one copied when that is safe), the
images it writes on the side, and whether a short video track is padded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.media import Probe

from .facts import VideoFacts
from .hls import hls_command, output_fps
from .images import Stills, plan_storyboard
from .ladder import Rung, plan_ladder
from .passthrough import Passthrough, plan_passthrough


@dataclass(frozen=True)
class LadderPlan:
    rungs: list[Rung]
    stills: Stills
    passthrough: Passthrough | None
    pad_video: bool

    def command(self, source: str, hls_dir: Path, probe: Probe, *, segment_seconds: float = 2,
                preset: str = "veryfast", readrate: float | None = None) -> list[str]:
        """The argv the worker runs (bench/transcode.py runs the very same one directly)."""
        return hls_command(source, hls_dir, self.rungs, probe, segment_seconds=segment_seconds, preset=preset,
                           readrate=readrate, pad_video=self.pad_video, stills=self.stills,
                           passthrough=self.passthrough)


def plan_job(source: str, probe: Probe, facts: VideoFacts, work: Path, *, segment_seconds: float = 2) -> LadderPlan:
    """The plan for `source`, its images to be written into `work`."""
    rungs = plan_ladder(probe)
    # Pad only a video track its own headers declare short; a truncated file declares its full length, so padding
    # can never hide missing data from the decoded-length check after the ladder.
    pad = facts.video_duration is not None and facts.video_duration < probe.duration - 1
    passthrough = None if pad else plan_passthrough(source, probe, rungs[0], output_fps(probe), segment_seconds)
    if passthrough is not None:
        rungs = [passthrough.rung, *rungs[1:]]
    # The storyboard's tiles take the smallest rung's shape.
    stills = Stills(work / "thumbnail.jpg", work / "poster.jpg", work / "storyboard.jpg",
                    plan_storyboard(probe.duration, rungs[-1].width, rungs[-1].height))
    return LadderPlan(rungs, stills, passthrough, pad)
