"""A defensive parser for the header of a safetensors file.

A safetensors file is an 8-byte little-endian header length, a JSON header of that many bytes, and a
data section. Uploaded files are untrusted and may be gigabytes in size, so the parser reads only the
length prefix and the header (two calls to ``read_range``) and never touches the data section. Every
structural problem raises ``HeaderError`` with one sentence a user can act on.

The checks follow the reference implementation (safetensors 0.8): known dtypes only, byte spans
that match shape x dtype size, offsets inside the data section and no overlapping tensors. Unlike
the reference implementation, holes between tensors are tolerated: they waste space but are harmless.
"""

import json
import math
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

DEFAULT_MAX_HEADER_BYTES = 100 * 1024 * 1024
METADATA_KEY = "__metadata__"
_PREFIX_BYTES = 8

# Sizes in bits, because F4 and F6 pack several elements into a byte; the reference implementation
# rejects a tensor whose total bit count is not a whole number of bytes.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

ReadRange = Callable[[int, int], bytes]


class HeaderError(Exception):
    """The file is not a well-formed safetensors file; the message says why in one sentence."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets are relative to the start of the data section, as in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_length: int
    file_size: int
    bytes_read: int

    @property
    def data_start(self) -> int:
        """Absolute file offset of the data section; add a tensor's ``start`` to locate it."""
        return _PREFIX_BYTES + self.header_length


def read_header(
    read_range: ReadRange, *, file_size: int, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> SafetensorsHeader:
    """Parse and validate the header through ``read_range(offset, length)``, reading nothing else."""
    if file_size == 0:
        raise HeaderError("The file is empty.")
    if file_size < _PREFIX_BYTES:
        raise HeaderError(
            f"The file is only {file_size} bytes long, too short to be a safetensors file "
            f"(it must start with an {_PREFIX_BYTES}-byte header length)."
        )

    prefix = _read_exactly(read_range, 0, _PREFIX_BYTES, what="the header length")
    (header_length,) = struct.unpack("<Q", prefix)
    if header_length == 0:
        raise HeaderError("The safetensors header length is 0, so the file has no header.")
    if header_length > file_size - _PREFIX_BYTES:
        raise HeaderError(
            f"The safetensors header says it is {header_length} bytes long, but the file is only {file_size} bytes."
        )
    if header_length > max_header_bytes:
        raise HeaderError(
            f"The safetensors header is {header_length} bytes long, more than the {max_header_bytes}-byte "
            f"limit ({max_header_bytes / 1024 / 1024:g} MiB) for a header."
        )

    raw = _read_exactly(read_range, _PREFIX_BYTES, header_length, what="the header")
    parsed = _parse_json_object(raw)
    metadata = _parse_metadata(parsed.pop(METADATA_KEY, None))
    data_size = file_size - _PREFIX_BYTES - header_length
    tensors = {name: _parse_tensor(name, entry, data_size=data_size) for name, entry in parsed.items()}
    if not tensors:
        raise HeaderError("The safetensors file contains no tensors.")
    _check_no_overlaps(tensors.values())

    return SafetensorsHeader(
        tensors=tensors,
        metadata=metadata,
        header_length=header_length,
        file_size=file_size,
        bytes_read=_PREFIX_BYTES + header_length,
    )


def read_header_from_path(
    path: str | os.PathLike, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> SafetensorsHeader:
    with open(path, "rb") as file:
        return read_header(
            range_reader(file), file_size=os.fstat(file.fileno()).st_size, max_header_bytes=max_header_bytes
        )


def range_reader(file: BinaryIO) -> ReadRange:
    """Adapt a seekable binary file object to the ``read_range(offset, length)`` interface."""

    def read_range(offset: int, length: int) -> bytes:
        file.seek(offset)
        return file.read(length)

    return read_range


def _read_exactly(read_range: ReadRange, offset: int, length: int, *, what: str) -> bytes:
    data = read_range(offset, length)
    if len(data) != length:
        # A short read means the file changed or the storage lied about its size; either way the
        # header cannot be trusted.
        raise HeaderError(f"Could not read {what}: asked for {length} bytes at offset {offset} but got {len(data)}.")
    return data


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            # Silently keeping the last duplicate would let two readers disagree about the file.
            raise HeaderError(f"The safetensors header lists the key '{key}' more than once.")
        result[key] = value
    return result


def _parse_json_object(raw: bytes) -> dict[str, object]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HeaderError(
            f"The safetensors header is not valid UTF-8 text (bad byte at position {error.start})."
        ) from None
    try:
        parsed = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        # json.JSONDecodeError is a ValueError; RecursionError comes from absurdly deep nesting.
        raise HeaderError(f"The safetensors header is not valid JSON ({_short(error)}).") from None
    if not isinstance(parsed, dict):
        raise HeaderError(f"The safetensors header must be a JSON object, but it is a JSON {_json_type(parsed)}.")
    return parsed


def _parse_metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HeaderError(
            f"The safetensors __metadata__ must be an object of strings, but it is a JSON {_json_type(value)}."
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise HeaderError(
                f"The safetensors __metadata__ entry '{key}' must be a string, but it is a JSON {_json_type(item)}."
            )
    # PostgreSQL cannot store NUL in text or JSON; the metadata is informational, so NULs are dropped.
    return {key.replace("\x00", ""): item.replace("\x00", "") for key, item in value.items()}


def _parse_tensor(name: str, entry: object, *, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise HeaderError(
            f"The header entry for tensor '{name}' must be an object, but it is a JSON {_json_type(entry)}."
        )
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in entry]
    if missing:
        raise HeaderError(f"The tensor '{name}' has no {' or '.join(missing)} in the header.")

    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HeaderError(f"The tensor '{name}' has dtype {json.dumps(dtype)}, which is not a known safetensors dtype.")

    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise HeaderError(
            f"The tensor '{name}' has shape {json.dumps(shape)}; a shape must be a list of non-negative integers."
        )

    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(offset) for offset in offsets):
        raise HeaderError(
            f"The tensor '{name}' has data_offsets {json.dumps(offsets)}; "
            "they must be two non-negative integers [start, end]."
        )
    start, end = offsets
    if start > end:
        raise HeaderError(f"The tensor '{name}' has data_offsets [{start}, {end}]: its start is after its end.")

    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - start:
        raise HeaderError(
            f"The tensor '{name}' is {dtype} with shape {shape}, which needs {bits / 8:g} bytes, "
            f"but its data_offsets span {end - start} bytes."
        )
    if end > data_size:
        raise HeaderError(
            f"The tensor '{name}' ends at byte {end} of the data section, "
            f"but the data section is only {data_size} bytes long."
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), start=start, end=end)


def _check_no_overlaps(tensors: Iterable[TensorInfo]) -> None:
    covered_until, owner = 0, None
    for tensor in sorted(tensors, key=lambda t: (t.start, t.end)):
        if tensor.start < covered_until:
            raise HeaderError(f"The tensors '{owner}' and '{tensor.name}' overlap in the data section.")
        if tensor.end >= covered_until:
            covered_until, owner = tensor.end, tensor.name


def _is_count(value: object) -> bool:
    # bool is a subclass of int in Python, and `true` is never a valid dimension or offset.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "value")


def _short(error: Exception) -> str:
    return str(error)[:200] or type(error).__name__
