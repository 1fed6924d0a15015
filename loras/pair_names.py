"""Which two file names are the halves of one Wan 2.2 pair: names that differ only by an expert marker.

`golden_hour_high_noise.safetensors` and `Golden-Hour-LOW-NOISE.safetensors` are partners; so are `x_HN` and
`x_LN`, and `x high` and `x low`. Names are compared as lower-case words split at `_ - . ` and spaces; the
marker's words are replaced by one placeholder, and two names whose keys are equal with opposite roles match.
Plain data, no database: `loras.selectors` looks the keys up among a workspace's LoRAs.
"""

import re

from loras.models import Expert

_SEPARATORS = re.compile(r"[_\-. ]+")
_EXTENSION = re.compile(r"\.safetensors$", re.IGNORECASE)
# Longest first, so that "high_noise" is one marker and not "high" followed by a word "noise".
MARKERS: dict[tuple[str, ...], str] = {
    ("high", "noise"): Expert.HIGH,
    ("low", "noise"): Expert.LOW,
    ("highnoise",): Expert.HIGH,
    ("lownoise",): Expert.LOW,
    ("high",): Expert.HIGH,
    ("low",): Expert.LOW,
    ("hn",): Expert.HIGH,
    ("ln",): Expert.LOW,
}
_PLACEHOLDER = "\0"
# The same markers inside a name as written, with the separator before them (to drop for the pair's name).
_MARKER_TEXT = re.compile(
    r"(?:^|[_\-. ]+)(?:high[_\-. ]?noise|low[_\-. ]?noise|high|low|hn|ln)(?=$|[_\-. ])", re.IGNORECASE
)

PairKey = tuple[tuple[str, ...], str]  # (the words with the marker as a placeholder, the marker's role)


def pair_keys(filename: str) -> set[PairKey]:
    """Every (words with one marker replaced, role) a file name reads as; empty when it has no marker."""
    words = [word for word in _SEPARATORS.split(_EXTENSION.sub("", filename).lower()) if word]
    keys: set[PairKey] = set()
    for index in range(len(words)):
        for marker, role in MARKERS.items():
            end = index + len(marker)
            if tuple(words[index:end]) == marker:
                keys.add(((*words[:index], _PLACEHOLDER, *words[end:]), role))
                break  # the longest marker at this word
    return keys


def partner_role(role: str) -> str:
    return Expert.LOW if role == Expert.HIGH else Expert.HIGH


def pair_name(name: str) -> str:
    """A pair's default name: its high half's name without the marker ("golden_hour_high_noise" → "golden_hour")."""
    stripped = _MARKER_TEXT.sub("", name, count=1).strip(" _-.")
    return stripped or name
