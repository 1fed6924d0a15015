"""Safe file names for uploaded LoRAs.

Uploaded names end up in storage keys, in ``Content-Disposition`` headers and on users' disks, so they
are reduced to ASCII letters, digits, ``.``, ``_`` and ``-``, with no path components and no leading dot.
"""

import re
import unicodedata

FALLBACK_STEM = "lora"
_MAX_EXTENSION_LENGTH = 16
_EXTENSION = re.compile(rf"\.([A-Za-z0-9]{{1,{_MAX_EXTENSION_LENGTH}}})$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_PUNCTUATION_RUN = re.compile(r"[._-]{2,}")
# Windows refuses these as file stems whatever the extension, so a download named CON.safetensors
# could not be saved there.
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def sanitize_filename(name: str, *, max_length: int = 120) -> str:
    """Return a safe, non-empty ASCII file name that keeps the original's extension where possible."""
    if max_length < 1:
        raise ValueError("max_length must be at least 1.")
    # NFKC first so that look-alike characters (fullwidth letters, a fullwidth solidus) become the
    # plain ASCII they display as, and a disguised "／" is then treated as the separator it pretends to be.
    name = unicodedata.normalize("NFKC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(_ascii_or_underscore(char) for char in name if unicodedata.category(char) not in ("Cc", "Cf"))
    name = name.lstrip(".")

    extension = extension_of(name)
    stem = name[: len(name) - len(extension)]
    stem = _PUNCTUATION_RUN.sub(lambda run: run.group(0)[0], _UNSAFE_RUN.sub("_", stem)).strip("._-")
    if stem.upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"

    if len(extension) >= max_length:
        extension = ""
    stem = stem[: max_length - len(extension)].rstrip("._-") or FALLBACK_STEM[: max_length - len(extension)]
    return stem + extension


def extension_of(name: str) -> str:
    """The lower-case extension with its dot (".safetensors"), or "" when the name has none."""
    # Leading dots are stripped first: a dotfile such as ".safetensors" has no extension.
    basename = re.split(r"[/\\]", name)[-1].lstrip(".")
    match = _EXTENSION.search(basename)
    return f".{match.group(1).lower()}" if match else ""


def _ascii_or_underscore(char: str) -> str:
    # NFKD splits "é" into "e" plus a combining accent, which the ASCII encoding then drops; characters
    # with no ASCII form at all (CJK, emoji) become "_" so the words around them stay apart.
    return unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii") or "_"
