import re

import pytest

from loras.filenames import extension_of, sanitize_filename


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wan22_style-v1.2.safetensors", "wan22_style-v1.2.safetensors"),
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\y.safetensors", "y.safetensors"),
        ("a/b\\..\\c.safetensors", "c.safetensors"),
        ("bad\x00na\x1bme\u202e.safetensors", "badname.safetensors"),
        ("zero\u200bwidth.safetensors", "zerowidth.safetensors"),
        ("ｆｕｌｌｗｉｄｔｈ.safetensors", "fullwidth.safetensors"),
        ("evil／..／x.safetensors", "x.safetensors"),
        ("Café Crème Brûlée.safetensors", "Cafe_Creme_Brulee.safetensors"),
        ("my 風景 lora.safetensors", "my_lora.safetensors"),
        ("🔥🔥🔥.safetensors", "lora.safetensors"),
        ("fire🔥style.safetensors", "fire_style.safetensors"),
        ("...hidden.safetensors", "hidden.safetensors"),
        (".safetensors", "safetensors"),
        ("a  --  b__c..d.SafeTensors", "a_b_c.d.safetensors"),
        ("name with spaces .safetensors", "name_with_spaces.safetensors"),
        ("trailing.dots...", "trailing.dots"),
        ("CON.safetensors", "_CON.safetensors"),
        ("", "lora"),
        ("../", "lora"),
        ("\x00\x01", "lora"),
    ],
)
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected


def test_long_names_keep_their_extension():
    result = sanitize_filename("x" * 500 + ".safetensors")
    assert len(result) == 120
    assert result == "x" * (120 - len(".safetensors")) + ".safetensors"


def test_truncation_does_not_leave_trailing_punctuation():
    result = sanitize_filename("ab_" + "c" * 100 + ".safetensors", max_length=15)
    assert result == "ab.safetensors"


def test_extension_longer_than_the_limit_is_dropped():
    assert sanitize_filename("model.safetensors", max_length=8) == "model"


def test_max_length_must_be_positive():
    with pytest.raises(ValueError):
        sanitize_filename("a.safetensors", max_length=0)


@pytest.mark.parametrize(
    "name",
    ["../../../../x", "\\\\server\\share\\f.bin", "ünïcödé/../..\\..\x7f.pt", "?" * 1000, "💀" * 200 + ".ckpt"],
)
def test_results_are_always_safe(name):
    result = sanitize_filename(name)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,119}", result)
    assert not result.startswith(".")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.SafeTensors", ".safetensors"),
        ("dir.v2/x.ckpt", ".ckpt"),
        ("C:\\dir\\x.PT", ".pt"),
        ("x", ""),
        (".safetensors", ""),
        ("x.", ""),
        ("x.tar.gz", ".gz"),
        ("x.with space", ""),
    ],
)
def test_extension_of(name, expected):
    assert extension_of(name) == expected
