"""Encoding generated frames: browser-playable H.264 MP4, PNG, poster frame."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from generation.runtime.encode import poster_from_frames, write_mp4, write_png


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """Float frames in [0, 1] like diffusers' output_type="np", changing from frame to frame."""
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    return np.stack([np.stack([ys, xs, np.full_like(ys, i / count)], axis=-1) for i in range(count)]).astype(np.float32)


def read_mp4(path: Path) -> tuple[dict, list[bytes]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, list(reader)


@pytest.mark.parametrize(
    ("height", "width", "expected_size"),
    [
        (32, 32, (64, 64)),  # tiny demo frames are scaled up by 2 to reach the minimum side
        (33, 35, (66, 70)),  # odd sides: scaled by 2, which also makes them even
        (80, 81, (80, 82)),  # large enough, odd width padded by one column
    ],
)
def test_write_mp4_is_h264_yuv420p_and_reads_back(tmp_path: Path, height: int, width: int, expected_size) -> None:
    path = tmp_path / "video.mp4"
    write_mp4(gradient_frames(5, height, width), path, fps=8)

    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    # +faststart: the index (moov) comes before the media data (mdat), so browsers can stream it.
    assert data.index(b"moov") < data.index(b"mdat")
    meta, frames = read_mp4(path)
    assert meta["codec"].startswith("h264") and "yuv420p" in meta["pix_fmt"]
    assert tuple(meta["size"]) == (expected_size[1], expected_size[0])
    assert meta["fps"] == 8
    assert len(frames) == 5


def test_write_mp4_accepts_uint8_and_pil_frames(tmp_path: Path) -> None:
    frames = (gradient_frames(3, 64, 64) * 255).astype(np.uint8)
    write_mp4(list(frames), tmp_path / "a.mp4", fps=4)
    write_mp4([Image.fromarray(frame) for frame in frames], tmp_path / "b.mp4", fps=4)
    assert len(read_mp4(tmp_path / "a.mp4")[1]) == len(read_mp4(tmp_path / "b.mp4")[1]) == 3


def test_write_mp4_rejects_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mp4(np.zeros((0, 8, 8, 3), dtype=np.uint8), tmp_path / "empty.mp4", fps=8)


def test_write_png_round_trips(tmp_path: Path) -> None:
    image = gradient_frames(1, 32, 48)[0]
    path = tmp_path / "image.png"
    write_png(image, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as reopened:
        assert reopened.size == (48, 32)
        np.testing.assert_array_equal(np.asarray(reopened), (image * 255).round().astype(np.uint8))


def test_poster_matches_the_video_size() -> None:
    poster = poster_from_frames(gradient_frames(5, 32, 32))
    assert poster.size == (64, 64) and poster.mode == "RGB"
