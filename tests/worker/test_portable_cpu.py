"""The llama.cpp build runs on a CPU older than the one it was built on (issue 17, item 2).

The wheel `make venv` and `make bundle` use carries one CPU backend per instruction-set level. Run
under qemu's user-mode emulation of an older CPU (x86-64: Nehalem, SSE4.2 and no AVX; aarch64: a
Cortex-A53, ARMv8.0), the model must load with the matching variant and write what it writes on
this machine's own CPU, token for token (greedy). A wheel compiled with -march=native on this
machine dies there with SIGILL (measured: exit 132), which is what a plant's N100 or old Atom
would see.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCRIPT = """
import json
from gateway.llama_backends import cpu_variant, ensure_cpu_backend
from gateway.bundled import default_generation_model
ensure_cpu_backend()
import llama_cpp
llm = llama_cpp.Llama(model_path=str(default_generation_model()), n_ctx=256, n_threads=2,
                      verbose=False)
out = llm.create_completion("The hydraulic press", max_tokens=8, temperature=0, top_k=1)
print(json.dumps({"variant": cpu_variant(), "text": out["choices"][0]["text"]}))
"""
OLD_CPU = {
    "x86_64": ("qemu-x86_64", "Nehalem", "libggml-cpu-sse42.so"),
    "aarch64": ("qemu-aarch64", "cortex-a53", "libggml-cpu-armv8.0_1.so"),
}


def run(prefix: list[str]) -> dict[str, str]:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_model_runs_on_an_emulated_older_cpu_with_its_own_variant() -> None:
    emulator, cpu, expected = OLD_CPU[platform.machine()]
    binary = shutil.which(emulator)
    assert binary is not None, f"{emulator} is missing: `make deps` installs qemu-user"
    here = run([])
    old = run([binary, "-cpu", cpu])
    assert old["variant"] == expected
    assert here["variant"] != expected  # this CPU has a better level: the choice is per CPU
    assert old["text"] == here["text"]
    assert old["text"].strip()
