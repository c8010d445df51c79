"""Fixtures of the worker tests: the real bundled models, real worker processes.

Timings are parameters: tests shorten the request timeout and the restart backoff through
WorkerConfig instead of patching anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.bundled import default_generation_model
from gateway.config import WorkerConfig
from gateway.worker.confinement import (
    CgroupV1Confinement,
    CgroupV2Confinement,
    Confinement,
)
from gateway.worker.supervisor import SupervisorState, WorkerSupervisor

TEST_DEFAULTS: dict[str, Any] = {
    "n_threads": 2,
    "request_timeout_s": 30.0,
    "start_timeout_s": 60.0,
    "restart_backoff_s": 0.0,
}


def worker_config(**overrides: Any) -> WorkerConfig:
    return WorkerConfig(**{**TEST_DEFAULTS, **overrides})


@pytest.fixture(scope="session")
def generation_gguf() -> Path:
    return default_generation_model()


@pytest.fixture(scope="session")
def embedding_gguf(model_cache: Path) -> Path:
    from gateway.rag.embedding_model import ensure_default_embedding_gguf

    return ensure_default_embedding_gguf(model_cache)


SupervisorFactory = Callable[..., WorkerSupervisor]


@pytest_asyncio.fixture
async def make_supervisor(
    generation_gguf: Path, embedding_gguf: Path
) -> AsyncIterator[SupervisorFactory]:
    """Build supervisors (not started); every one is stopped at the end of the test."""
    made: list[WorkerSupervisor] = []

    def build(
        cfg: WorkerConfig | None = None, *, instance: str = "test", **kwargs: Any
    ) -> WorkerSupervisor:
        kwargs.setdefault("allow_test_ops", True)
        sup = WorkerSupervisor(
            cfg or worker_config(),
            generation_model=generation_gguf,
            embedding_model=embedding_gguf,
            instance=instance,
            **kwargs,
        )
        made.append(sup)
        return sup

    yield build
    for sup in made:
        await sup.stop()


async def wait_for_state(
    sup: WorkerSupervisor, *states: SupervisorState, timeout_s: float = 60.0
) -> None:
    """Poll until the supervisor reaches one of `states` (a bound, not a measurement)."""
    async with asyncio.timeout(timeout_s):
        while sup.state not in states:  # noqa: ASYNC110 - polling a plain attribute
            await asyncio.sleep(0.02)


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 60.0) -> None:
    """Poll until `predicate()` holds (a bound, not a measurement)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling plain state
            await asyncio.sleep(0.02)


def proc_cgroups(pid: int) -> list[str]:
    """The cgroup paths of a process, one per hierarchy."""
    return [line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]


def cgroup_dirs_named(name: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/**/{name}") if p.is_dir()]


def memory_group(conf: Confinement) -> Path:
    """The directory whose memory limit confines the worker."""
    if isinstance(conf, CgroupV1Confinement):
        return conf.memory_path
    assert isinstance(conf, CgroupV2Confinement)
    return conf.path
