"""Checks on user-given text shared by the services."""

import re

from lorasite.errors import InvalidInput

# Unicode's bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069): in a name
# they reorder what is displayed after them, so "gpj.exe" can show as "exe.jpg".
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def refuse_bidi_controls(value: str, *, field: str) -> None:
    if BIDI_CONTROLS.search(value):
        raise InvalidInput(
            f"{field}: bidirectional control characters (U+202A–U+202E, U+2066–U+2069) are not allowed.",
            errors={field: ["Remove the bidirectional control characters (U+202A–U+202E, U+2066–U+2069)."]},
        )
