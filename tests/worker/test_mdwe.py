"""MemoryDenyWriteExecute=yes in the unit: llama.cpp (ctypes callbacks included) must work.

Linux 6.3+ has the same rule as a process flag (prctl PR_SET_MDWE: no writable+executable
mapping, no mapping gaining exec), inherited across fork and exec; newer systemd uses it for
MemoryDenyWriteExecute= instead of its seccomp filter. The worker is started through a wrapper
that sets it, and must load both models, embed and generate.
"""

from __future__ import annotations

import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from tests.worker.conftest import SupervisorFactory, worker_config

pytestmark = pytest.mark.slow
PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1

WRAPPER = f"""#!{sys.executable}
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed")
os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])
"""


def mdwe_supported() -> bool:
    result = subprocess.run(
        [sys.executable, "-c",
         f"import ctypes; print(ctypes.CDLL(None).prctl({PR_GET_MDWE}, 0, 0, 0, 0))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() in ("0", "1")


@pytest.fixture
def wrapper(tmp_path: Path) -> str:
    if not mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    path = tmp_path / "python-mdwe"
    path.write_text(WRAPPER)
    path.chmod(0o755)
    probe = subprocess.run(
        [str(path), "-c",
         f"import mmap; mmap.mmap(-1, {mmap.PAGESIZE}, prot=7)"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode != 0
    assert "Permission denied" in probe.stderr
    return str(path)


async def test_worker_embeds_and_generates_without_write_execute_memory(
    make_supervisor: SupervisorFactory, wrapper: str
) -> None:
    sup = make_supervisor(worker_config(), python=wrapper, confinement="none")
    await sup.start()
    vectors = await sup.embed(["hydraulic oil pressure low on press P2"])
    assert len(vectors[0]) == 384
    result = await sup.generate(
        [{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0
    )
    assert result.completion_tokens > 0
    assert await sup.ping() > 0
