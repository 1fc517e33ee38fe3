"""Rewriting HLS playlists and the storyboard index so every URI they reference carries the playback token."""

from __future__ import annotations

import re

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def add_token(uri: str, token: str) -> str:
    """`seg_00001.m4s` → `seg_00001.m4s?token=…`; a fragment (`#xywh=…`) stays last."""
    path, hash_, fragment = uri.partition("#")
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}token={token}{hash_}{fragment}"


def playlist_with_token(text: str, token: str) -> str:
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = add_token(line.strip(), token)
        elif 'URI="' in line:
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{add_token(m.group(1), token)}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def storyboard_with_token(text: str, token: str) -> str:
    """WebVTT cues name `storyboard.jpg#xywh=…`: the image URL needs the token too."""
    lines = []
    for line in text.splitlines():
        if "#xywh=" in line and "-->" not in line:
            line = add_token(line.strip(), token)
        lines.append(line)
    return "\n".join(lines) + "\n"


def is_vod(text: str) -> bool:
    return "#EXT-X-ENDLIST" in text
