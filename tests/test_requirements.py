"""The requirements sets: web without torch or test tools, worker with the model runtime, dev with the suite's
tools; every package pinned and agreeing with constraints.txt; `make run` and `make test` install what they need."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_RUNTIME = {"torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy"}
TEST_TOOLS = {"pytest", "pytest-django", "factory-boy", "moto", "playwright", "requests", "ruff"}


def pins(name: str) -> dict[str, str]:
    """Package → pinned version of requirements/<name>.txt, with the files it includes (-r)."""
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= pins(line[3:].strip())
        elif line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[a-z0-9,]+\])?==(\S+)", line)
            assert match, f"requirements/{name}: not pinned with ==: {line!r}"
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_web_has_neither_the_model_runtime_nor_test_tools():
    web = set(pins("web.txt"))
    assert {"django", "django-filter", "gunicorn", "celery"} <= web
    assert not web & (MODEL_RUNTIME | TEST_TOOLS)


def test_worker_adds_the_model_runtime_and_dev_the_test_tools():
    web, worker, dev = pins("web.txt"), pins("worker.txt"), pins("dev.txt")
    assert web.items() <= worker.items() and worker.items() <= dev.items()
    assert MODEL_RUNTIME <= set(worker) and not set(worker) & TEST_TOOLS
    assert TEST_TOOLS <= set(dev)
    assert worker["torch"] == "2.13.0"


def test_every_pin_agrees_with_constraints_and_requirements_txt_is_gone():
    constraints = {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    }
    for package, version in pins("dev.txt").items():
        if package != "torch":  # the platform's build (+cpu, +cu128) is chosen at install time
            assert constraints.get(package) == version, package
    assert not (ROOT / "requirements.txt").exists()


def test_make_installs_what_run_and_test_need_and_lints_before_the_suite():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^RUN_STAMP := \$\(VENV\)/\.requirements-worker-installed$", makefile, re.M)
    assert re.search(r"^TEST_STAMP := \$\(VENV\)/\.requirements-dev-installed$", makefile, re.M)
    assert "-r $< -c constraints.txt" in makefile
    assert re.search(r"^run: \$\(RUN_STAMP\)$", makefile, re.M)
    test_recipe = re.search(r"^test: \$\(TEST_STAMP\)\n((?:\t.*\n)+)", makefile, re.M).group(1).split("\n")
    assert [line.strip() for line in test_recipe if line] == [
        "$(VENV)/bin/ruff check .",
        "$(VENV)/bin/ruff format --check .",
        "$(PY) -m pytest",
    ]


def test_ruff_is_configured_for_lint_and_format():
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120
    assert {"E", "F", "W", "I", "B", "UP"} <= set(ruff["lint"]["select"])
