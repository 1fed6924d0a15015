"""`python -m bench gpu` runs end to end without Django: its tiny CPU smoke mode, in a fresh interpreter where
importing Django (or moto, or Celery: none of them is on the GPU machine) raises ImportError."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = """
import importlib.abc, sys

class Unavailable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"django", "moto", "celery"}:
            raise ImportError(f"{name} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, Unavailable())
from bench.__main__ import main
status = main(["gpu", "--no-write"])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {"django", "moto", "celery"})
print("LEAKED", leaked)
sys.exit(status or bool(leaked))
"""


def test_token_counts_of_the_benchmarked_videos():
    from bench.gpu import FULL
    from bench.lora_step import FRAMES, HEIGHT, WIDTH, wan_tokens

    assert wan_tokens(FRAMES, HEIGHT, WIDTH) == 1950  # the CPU per-step slice: 5 latent frames x 15 x 26
    assert (FULL.frames, FULL.height, FULL.width) == (81, 480, 832)
    assert wan_tokens(FULL.frames, FULL.height, FULL.width) == 32760  # 21 latent frames x 30 x 52


@pytest.mark.slow  # a fresh interpreter importing torch and diffusers: about 15-25 s on 2 cores
def test_gpu_bench_smoke_runs_without_django():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(LORASITE_BENCH_GPU_SMOKE="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", SMOKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "LEAKED []" in result.stdout
    for title in (
        "GPU memory: Wan 2.2 A14B-shaped pair",
        "Per-step LoRA overhead: Wan 2.2 A14B-shaped pair",
        "LoRA switch cost: Wan 2.2 A14B-shaped pair",
    ):
        assert title in result.stdout, output[-4000:]
    assert "model_offload failed" not in result.stdout  # the offload hooks also run host to host on a CPU
    assert result.stdout.count("SMOKE (not judged)") == 3
