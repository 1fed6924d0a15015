"""What made an output: the provenance a job writes into its files, and reading it back from an uploaded PNG.

One dict per job (`job_provenance`) is the truth: the worker passes it to the encoder, which writes it as a PNG
`lorasite` text chunk (JSON) beside A1111's `parameters` chunk (`parameters_text`, the infotext convention
Civitai, A1111/Forge and ComfyUI readers parse, with `Lora hashes: "name: autov2, …"`), or as the MP4's `comment`;
the job API (`provenance`) and the job page show the same dict.

Reading is for files from anywhere ("What made this?"), so nothing in them is trusted: the PNG is walked chunk by
chunk with CRC checks and bounded decompression (no image library: the web process has none), and every value
is type-checked and size-bounded before it is shown. No Django imports: the worker's encoder uses this too.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import Any

PROVENANCE_KEY = "lorasite"  # the PNG text chunk (and MP4 comment) holding the JSON
PARAMETERS_KEY = "parameters"  # A1111's PNG text chunk
SCHEMA = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 256 * 1024  # a text chunk larger than this (after decompression) is refused, not read
MAX_LORAS = 20
MAX_FIELD = 4000  # the prompt's own limit
HEX = re.compile(r"[0-9a-f]+")
# A1111's `re_param` (modules/infotext_utils.py): `key: value` pairs, values optionally JSON-quoted.
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_LORA_HASH = re.compile(r"\s*([^,:]+?):\s*([0-9a-fA-F]{8,64})\s*(?:,|$)")
A1111_LORA_TAG = re.compile(r"<lora:([^:>]+):(-?[0-9.]+)")  # a weight in the prompt: <lora:name:0.8>


class ProvenanceError(ValueError):
    """The file cannot be read as an output with provenance; the message says why."""


# --- writing: the dict and A1111's text -------------------------------------------------------------------------


def job_provenance(job) -> dict[str, Any]:
    """The provenance of a job (a GenerationJob with its `job_loras`): model, prompts, params, and each LoRA's
    name, version, AutoV2 (the first 10 hex of the sha256 the job snapshot holds), expert and weight(s)."""
    loras = []
    for job_lora in job.job_loras.all():
        entry = {
            "name": job_lora.name,
            "version": job_lora.version,
            "autov2": job_lora.sha256[:10],
            "sha256": job_lora.sha256,
            "expert": job_lora.expert,
            "weight": job_lora.weight,
        }
        if job_lora.weight_low is not None:
            entry["weight_low"] = job_lora.weight_low
        loras.append(entry)
    return {
        "schema": SCHEMA,
        "generator": "lorasite",
        "job_id": str(job.id),
        "model": {"key": job.model_key, "name": job.model_name},
        "kind": job.kind,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "params": dict(job.params),
        "loras": loras,
    }


def _a1111_name(name: str) -> str:
    # A1111 drops the characters its own `Lora hashes` syntax uses from the alias (extra_networks_lora.py).
    return name.replace(":", "").replace(",", "").replace('"', "").strip()


def parameters_text(provenance: dict[str, Any]) -> str:
    """A1111's infotext: the prompt, `Negative prompt: …`, then one line of `key: value` pairs."""
    params = provenance["params"]
    pairs = [
        ("Steps", params.get("steps")),
        ("CFG scale", params.get("guidance")),
        ("CFG scale 2", params.get("guidance_2")),
        ("Seed", params.get("seed")),
        ("Size", f"{params['width']}x{params['height']}" if "width" in params else None),
        ("Frames", params.get("num_frames") if provenance.get("kind") == "video" else None),
        ("FPS", params.get("fps") if provenance.get("kind") == "video" else None),
        ("Model", provenance["model"]["name"]),
    ]
    if provenance["loras"]:
        hashes = ", ".join(f"{_a1111_name(lora['name'])}: {lora['autov2']}" for lora in provenance["loras"])
        pairs.append(("Lora hashes", json.dumps(hashes)))
    pairs.append(("Lorasite job", provenance["job_id"]))
    line = ", ".join(f"{key}: {value}" for key, value in pairs if value is not None)
    lines = [provenance["prompt"]]
    if provenance["negative_prompt"]:
        lines.append(f"Negative prompt: {provenance['negative_prompt']}")
    return "\n".join([*lines, line])


# --- reading: PNG text chunks, then either format ---------------------------------------------------------------


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error as error:
        raise ProvenanceError(f"A compressed text chunk is corrupt ({error}).") from None
    if inflater.unconsumed_tail:
        raise ProvenanceError(f"A text chunk is larger than {MAX_TEXT_BYTES // 1024} KiB.")
    return text


def _text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    keyword, separator, rest = body.partition(b"\0")
    if not separator or not 1 <= len(keyword) <= 79:
        raise ProvenanceError("A text chunk has no valid keyword.")
    if kind == b"tEXt":
        raw, encoding = rest, "latin-1"
    elif kind == b"zTXt":
        raw, encoding = _inflate(rest[1:]), "latin-1"
    else:  # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
        if len(rest) < 2:
            raise ProvenanceError("An iTXt chunk is truncated.")
        compressed, tail = rest[0], rest[2:]
        parts = tail.split(b"\0", 2)
        if len(parts) != 3:
            raise ProvenanceError("An iTXt chunk is truncated.")
        raw, encoding = (_inflate(parts[2]) if compressed else parts[2]), "utf-8"
    if len(raw) > MAX_TEXT_BYTES:
        raise ProvenanceError(f"A text chunk is larger than {MAX_TEXT_BYTES // 1024} KiB.")
    try:
        return keyword.decode("latin-1"), raw.decode(encoding)
    except UnicodeDecodeError:
        raise ProvenanceError("A text chunk is not valid UTF-8.") from None


def png_text_chunks(data: bytes) -> dict[str, str]:
    """Keyword → text of a PNG's tEXt, zTXt and iTXt chunks (the first of each keyword). Raises ProvenanceError
    for anything that is not a well-formed PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ProvenanceError("This is not a PNG image.")
    texts: dict[str, str] = {}
    position = len(PNG_SIGNATURE)
    while True:
        if position + 12 > len(data):
            raise ProvenanceError("The PNG is truncated (no IEND chunk).")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 8 + length
        if end + 4 > len(data):
            raise ProvenanceError("The PNG is truncated (a chunk runs past the end of the file).")
        body = data[position + 8 : end]
        if zlib.crc32(kind + body) != int.from_bytes(data[end : end + 4], "big"):
            raise ProvenanceError(f"The PNG is corrupt (chunk {kind.decode('latin-1')!r} fails its CRC).")
        if kind == b"IEND":
            return texts
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, text = _text_chunk(kind, body)
            texts.setdefault(keyword, text)
        position = end + 4


def _text(value: Any, *, limit: int = MAX_FIELD) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _number(value: Any) -> float | int | None:
    # bool is an int in Python; a flag is not a weight.
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _hex(value: Any, length: int) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    return text[:length] if HEX.fullmatch(text[:length] or "-") else ""


def _recipe_from_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise ProvenanceError("The 'lorasite' chunk is not valid JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("loras", []), list):
        raise ProvenanceError("The 'lorasite' chunk does not hold a lorasite provenance object.")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    loras = []
    for entry in data.get("loras", [])[:MAX_LORAS]:
        if not isinstance(entry, dict):
            continue
        lora = {
            "name": _text(entry.get("name"), limit=100),
            "autov2": _hex(entry.get("autov2"), 10),
            "sha256": _hex(entry.get("sha256"), 64),
            "expert": _text(entry.get("expert"), limit=4),
            "weight": _number(entry.get("weight")),
        }
        if _number(entry.get("weight_low")) is not None:
            lora["weight_low"] = _number(entry.get("weight_low"))
        loras.append(lora)
    return {
        "source": "lorasite",
        "model": {"key": _text(model.get("key"), limit=64), "name": _text(model.get("name"), limit=100)},
        "prompt": _text(data.get("prompt")),
        "negative_prompt": _text(data.get("negative_prompt")),
        "params": {str(k)[:32]: v for k, v in list(params.items())[:20] if _number(v) is not None},
        "loras": loras,
    }


def _a1111_value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"'):
        try:
            return str(json.loads(raw))
        except ValueError:
            return raw.strip('"')
    return raw


def _recipe_from_parameters(text: str) -> dict[str, Any]:
    """A1111's infotext (also what Forge, Civitai and lorasite write): prompt, `Negative prompt:`, a params line."""
    *prompt_lines, last = text.strip().split("\n") or [""]
    pairs = {key.strip(): _a1111_value(value) for key, value in A1111_PARAM.findall(last)}
    if len(pairs) < 2:  # not a params line: the whole text is the prompt
        prompt_lines, pairs = [*prompt_lines, last], {}
    prompt, negative, in_negative = [], [], False
    for line in prompt_lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)

    def number(key: str) -> float | int | None:
        try:
            value = float(pairs.get(key, ""))
        except ValueError:
            return None
        return int(value) if value.is_integer() and key in ("Steps", "Seed", "Frames", "FPS") else value

    params: dict[str, float | int] = {}
    for key, name in (
        ("Steps", "steps"),
        ("CFG scale", "guidance"),
        ("CFG scale 2", "guidance_2"),
        ("Seed", "seed"),
        ("Frames", "num_frames"),
        ("FPS", "fps"),
    ):
        if (value := number(key)) is not None:
            params[name] = value
    width, _, height = pairs.get("Size", "").partition("x")
    if width.isdigit() and height.isdigit():
        params["width"], params["height"] = int(width), int(height)
    weights = {}
    for name, weight in A1111_LORA_TAG.findall("\n".join(prompt)):
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            continue
    loras = [
        {
            "name": name.strip()[:100],
            "autov2": digest.lower()[:10],
            "sha256": "",
            "expert": "",
            "weight": weights.get(name.strip()),
        }
        for name, digest in A1111_LORA_HASH.findall(pairs.get("Lora hashes", ""))[:MAX_LORAS]
    ]
    return {
        "source": "a1111",
        "model": {"key": "", "name": pairs.get("Model", "")[:100]},
        "prompt": "\n".join(prompt)[:MAX_FIELD],
        "negative_prompt": "\n".join(negative)[:MAX_FIELD],
        "params": params,
        "loras": loras,
    }


def read_png_provenance(data: bytes) -> dict[str, Any]:
    """The recipe an output PNG carries: lorasite's own chunk when present, else A1111's `parameters`."""
    texts = png_text_chunks(data)
    if PROVENANCE_KEY in texts:
        return _recipe_from_json(texts[PROVENANCE_KEY])
    if PARAMETERS_KEY in texts:
        return _recipe_from_parameters(texts[PARAMETERS_KEY])
    raise ProvenanceError("This PNG carries no generation parameters (no 'lorasite' or 'parameters' text chunk).")
