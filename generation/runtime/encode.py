"""Encoding generated frames into files browsers can show: H.264 MP4 for video, PNG for images."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from generation.provenance import PARAMETERS_KEY, PROVENANCE_KEY, parameters_text

# Browsers' H.264 decoders reject tiny videos (and yuv420p needs even sides); below this the frames are scaled
# up by an integer factor with nearest-neighbour sampling, which keeps demo pixels crisp instead of blurred.
MIN_VIDEO_SIDE = 64

Frames = np.ndarray | Sequence[np.ndarray] | Sequence[Image.Image]


def to_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image, a uint8 array, or a float array in [0, 1] (diffusers' "np" output)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return array


def _video_frames(frames: Frames) -> np.ndarray:
    """(F, H, W, 3) uint8, upscaled to at least MIN_VIDEO_SIDE and padded to even sides."""
    video = np.stack([to_uint8(frame) for frame in frames])
    if video.ndim != 4 or video.shape[0] == 0 or video.shape[-1] != 3:
        raise ValueError(f"Expected a non-empty sequence of RGB frames, got shape {video.shape}")
    height, width = video.shape[1:3]
    scale = math.ceil(MIN_VIDEO_SIDE / min(height, width))
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_height, pad_width = video.shape[1] % 2, video.shape[2] % 2
    if pad_height or pad_width:
        video = np.pad(video, ((0, 0), (0, pad_height), (0, pad_width), (0, 0)), mode="edge")
    return np.ascontiguousarray(video)


def write_mp4(frames: Frames, path: Path, *, fps: int, provenance: dict[str, Any] | None = None) -> None:
    """Write an H.264 (yuv420p) MP4 with the index at the front, so browsers can start playing while loading;
    `provenance` (generation/provenance.py) goes into the container's `comment` tag as JSON."""
    video = _video_frames(frames)
    metadata = ["-metadata", f"comment={json.dumps(provenance, ensure_ascii=False)}"] if provenance else []
    height, width = video.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,  # let -crf below set the quality instead of imageio's variable-bitrate mapping
        macro_block_size=2,  # sides are already even; the default 16 would resize the frames again
        ffmpeg_log_level="error",
        output_params=["-crf", "18", "-movflags", "+faststart", *metadata],
    )
    writer.send(None)  # start the generator (it spawns ffmpeg)
    try:
        for frame in video:
            writer.send(frame)
    finally:
        writer.close()


def write_png(image: np.ndarray | Image.Image, path: Path, *, provenance: dict[str, Any] | None = None) -> None:
    """A PNG; with `provenance`, two text chunks: A1111's `parameters` (what Civitai and A1111/Forge read) and
    lorasite's own JSON (what "What made this?" reads back)."""
    info = None
    if provenance:
        info = PngInfo()
        info.add_text(PARAMETERS_KEY, parameters_text(provenance))  # tEXt, or iTXt when it is not Latin-1
        info.add_text(PROVENANCE_KEY, json.dumps(provenance, ensure_ascii=False))
    Image.fromarray(to_uint8(image)).save(path, format="PNG", pnginfo=info)


def poster_from_frames(frames: Frames) -> Image.Image:
    """The first frame, at the size of the encoded video (what a <video> element shows before playback)."""
    return Image.fromarray(_video_frames(frames[:1])[0])
