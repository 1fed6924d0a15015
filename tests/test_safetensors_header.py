import json
import struct

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from loras.safetensors_header import HeaderError, TensorInfo, range_reader, read_header, read_header_from_path
from tests.lora_files import write_lora, write_raw, write_sparse_lora, write_tensors


def _tensor(dtype: str, shape: list[int], start: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def _error(path, **kwargs) -> str:
    with pytest.raises(HeaderError) as caught:
        read_header_from_path(path, **kwargs)
    return str(caught.value)


class RecordingReader:
    """A read_range that remembers every request, to prove the data section is never read."""

    def __init__(self, path):
        self.blob = path.read_bytes()
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        return self.blob[offset : offset + length]


def test_parses_tensors_metadata_and_sizes(tmp_path):
    path = write_tensors(
        tmp_path / "a.safetensors",
        {"x": ("F16", (2, 3), bytes(12)), "y": ("F32", (), bytes(4))},
        metadata={"format": "pt", "ss_network_dim": "4"},
    )
    header = read_header_from_path(path)

    assert header.tensors["x"] == TensorInfo(name="x", dtype="F16", shape=(2, 3), start=4, end=16)
    assert header.tensors["y"] == TensorInfo(name="y", dtype="F32", shape=(), start=0, end=4)
    assert header.metadata == {"format": "pt", "ss_network_dim": "4"}
    assert header.file_size == path.stat().st_size
    assert header.data_start == 8 + header.header_length
    assert header.file_size == header.data_start + 16


def test_reads_only_the_length_prefix_and_the_header(tmp_path):
    path = write_lora(tmp_path / "l.safetensors", family="wan-1.3b", blocks=1)
    reader = RecordingReader(path)
    header = read_header(reader, file_size=len(reader.blob))

    assert reader.calls == [(0, 8), (8, header.header_length)]
    assert header.bytes_read == 8 + header.header_length
    assert header.bytes_read < len(reader.blob) / 100


def test_bytes_read_does_not_grow_with_file_size(tmp_path):
    small = read_header_from_path(write_sparse_lora(tmp_path / "small.safetensors", 10 * 1024 * 1024))
    large = read_header_from_path(write_sparse_lora(tmp_path / "large.safetensors", 2 * 1024**3))

    assert large.file_size == 2 * 1024**3
    assert small.bytes_read == 8 + small.header_length
    assert large.bytes_read == 8 + large.header_length
    # Only the digits of one shape differ between the two headers.
    assert abs(large.bytes_read - small.bytes_read) < 16
    assert large.bytes_read < 1024


def test_agrees_with_the_safetensors_library(tmp_path):
    theirs = tmp_path / "theirs.safetensors"
    save_file({"a": np.ones((3, 4), np.float16), "b": np.zeros(5, np.int64)}, str(theirs), metadata={"k": "v"})
    header = read_header_from_path(theirs)
    assert {name: (t.dtype, t.shape) for name, t in header.tensors.items()} == {
        "a": ("F16", (3, 4)),
        "b": ("I64", (5,)),
    }
    assert header.metadata == {"k": "v"}

    ours = write_lora(tmp_path / "ours.safetensors", dtype="bfloat16", alpha=8, key_format="kohya")
    with safe_open(str(ours), framework="numpy") as opened:
        assert set(opened.keys()) == set(read_header_from_path(ours).tensors)


def test_tolerates_holes_between_tensors(tmp_path):
    header = {"a": _tensor("U8", [2], 0, 2), "b": _tensor("U8", [2], 6, 8)}
    path = write_raw(tmp_path / "hole.safetensors", header, bytes(8))
    assert set(read_header_from_path(path).tensors) == {"a", "b"}


def test_sub_byte_dtypes_need_whole_bytes(tmp_path):
    ok = write_raw(tmp_path / "f4.safetensors", {"a": _tensor("F4", [4], 0, 2)}, bytes(2))
    assert read_header_from_path(ok).tensors["a"].nbytes == 2
    odd = write_raw(tmp_path / "f4odd.safetensors", {"a": _tensor("F4", [3], 0, 2)}, bytes(2))
    assert "F4 with shape [3], which needs 1.5 bytes" in _error(odd)


def test_short_read_is_an_error(tmp_path):
    path = write_lora(tmp_path / "l.safetensors")
    blob = path.read_bytes()
    with pytest.raises(HeaderError, match="asked for .* bytes at offset 8 but got 10"):
        read_header(lambda offset, length: blob[offset : offset + min(length, 10)], file_size=len(blob))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert _error(path) == "The file is empty."


def test_file_shorter_than_the_length_prefix(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"abcde")
    assert "only 5 bytes long, too short to be a safetensors file" in _error(path)


def test_zero_header_length(tmp_path):
    path = write_raw(tmp_path / "zero.safetensors", b"{}", length_prefix=0)
    assert _error(path) == "The safetensors header length is 0, so the file has no header."


def test_header_longer_than_the_file(tmp_path):
    path = write_raw(tmp_path / "long.safetensors", b"{}" + bytes(110), length_prefix=3_000_000_000)
    assert _error(path) == "The safetensors header says it is 3000000000 bytes long, but the file is only 120 bytes."


def test_header_over_the_limit(tmp_path):
    path = write_lora(tmp_path / "l.safetensors")
    message = _error(path, max_header_bytes=64)
    assert "more than the 64-byte limit" in message


def test_default_limit_is_100_mib(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", 200 * 1024 * 1024))
        file.truncate(300 * 1024 * 1024)
    assert "more than the 104857600-byte limit (100 MiB)" in _error(path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\xff\xfe{}", "not valid UTF-8 text"),
        (b'{"a": ', "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, but it is a JSON array"),
        (b'{"a": 1, "a": 2}', "lists the key 'a' more than once"),
    ],
)
def test_header_that_is_not_a_json_object(tmp_path, header, expected):
    path = write_raw(tmp_path / "bad.safetensors", header)
    assert expected in _error(path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"__metadata__": ["a"]}, "__metadata__ must be an object of strings, but it is a JSON array"),
        ({"__metadata__": {"steps": 100}}, "__metadata__ entry 'steps' must be a string, but it is a JSON number"),
        ({"__metadata__": {"format": "pt"}}, "The safetensors file contains no tensors."),
        ({}, "The safetensors file contains no tensors."),
        ({"w": [1, 2]}, "The header entry for tensor 'w' must be an object, but it is a JSON array"),
        ({"w": {"shape": [1], "data_offsets": [0, 2]}}, "The tensor 'w' has no dtype in the header."),
        ({"w": {"dtype": "F16"}}, "The tensor 'w' has no shape or data_offsets in the header."),
        ({"w": _tensor("F17", [1], 0, 2)}, "The tensor 'w' has dtype \"F17\", which is not a known safetensors dtype."),
        ({"w": _tensor("F16", [-1], 0, 2)}, "has shape [-1]; a shape must be a list of non-negative integers"),
        ({"w": _tensor("F16", [True], 0, 2)}, "has shape [true]; a shape must be a list of non-negative integers"),
        ({"w": _tensor("F16", "1", 0, 2)}, 'has shape "1"; a shape must be a list'),
        ({"w": {"dtype": "F16", "shape": [1], "data_offsets": [0]}}, "data_offsets [0]; they must be two non-negative"),
        ({"w": _tensor("F16", [0], 2, 0)}, "has data_offsets [2, 0]: its start is after its end"),
        ({"w": _tensor("F16", [3], 0, 4)}, "F16 with shape [3], which needs 6 bytes, but its data_offsets span 4"),
        ({"w": _tensor("F32", [4], 0, 16)}, "ends at byte 16 of the data section, but the data section is only 8"),
        (
            {"a": _tensor("F16", [2], 0, 4), "b": _tensor("F16", [2], 2, 6)},
            "The tensors 'a' and 'b' overlap in the data section.",
        ),
        (
            {"a": _tensor("U8", [8], 0, 8), "b": _tensor("U8", [0], 4, 4)},
            "The tensors 'a' and 'b' overlap in the data section.",
        ),
    ],
)
def test_structural_problems_have_specific_messages(tmp_path, header, expected):
    path = write_raw(tmp_path / "bad.safetensors", header, bytes(8))
    assert expected in _error(path)


def test_range_reader_reads_a_slice(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    with open(path, "rb") as file:
        assert range_reader(file)(3, 4) == b"3456"


def test_header_json_is_read_as_written(tmp_path):
    metadata = {"ss_tag_frequency": json.dumps({"d": {"ünïcode tag": 3}})}
    path = write_tensors(tmp_path / "m.safetensors", {"x": ("U8", (1,), b"\x01")}, metadata=metadata)
    assert read_header_from_path(str(path)).metadata == metadata
