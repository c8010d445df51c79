"""Everything decided once before the first worker starts: the model files exist, how many
threads llama.cpp gets, which confinement is in force, and the exact command line.

Kept apart from the supervisor, whose job is the worker's life after that: the same launch plan
is reused for every restart, so a restarted worker is the same program under the same limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import WorkerConfig
from gateway.errors import ModelNotFound
from gateway.logging import get_logger
from gateway.worker.confinement import Confinement, ConfinementChoice, Limits, create_confinement
from gateway.worker.model_check import check_generation_model, service_memory_max
from gateway.worker.process import SpawnSpec, build_argv, plan_threads, worker_env

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Launch:
    confinement: Confinement
    spec: SpawnSpec


def plan_launch(
    cfg: WorkerConfig,
    *,
    generation_model: Path,
    embedding_model: Path,
    instance: str,
    python: str,
    confinement: ConfinementChoice,
    allow_test_ops: bool,
) -> Launch:
    """Check the models, size the threads, create the cgroup (or say why not) and the argv."""
    if not embedding_model.is_file():
        raise ModelNotFound(f"model file {embedding_model} does not exist")
    model = check_generation_model(
        generation_model,
        embedding_model=embedding_model,
        memory_limit_mb=cfg.memory_limit_mb,
        unit_memory_max=service_memory_max(),
    )
    log.info(
        "worker.model_checked",
        model=str(model.path),
        name=model.name,
        architecture=model.architecture,
        size_mb=model.size_bytes >> 20,
        needed_mb=model.needed_bytes >> 20,
        memory_limit_mb=cfg.memory_limit_mb,
    )
    plan = plan_threads(cfg.n_threads, cfg.cpu_quota_percent)
    if plan.clamped:
        log.warning(
            "worker.threads_clamped",
            configured=cfg.n_threads,
            threads=plan.threads,
            cores=plan.cores,
            hint="more threads than usable cores only slow llama.cpp down",
        )
    confined = create_confinement(
        Limits.from_config(cfg),
        instance=instance,
        cgroup_parent=cfg.cgroup_parent,
        choice=confinement,
    )
    spec = SpawnSpec(
        argv=build_argv(
            python=python,
            model=generation_model,
            embedding_model=embedding_model,
            n_ctx=cfg.n_ctx,
            n_threads=plan.threads,
            flash_attn=cfg.flash_attn,
            kv_cache_type=cfg.kv_cache_type if cfg.flash_attn else "f16",
            prefix_reuse=cfg.prefix_reuse,
            allow_test_ops=allow_test_ops,
            confinement_args=confined.child_args(),
        ),
        env=worker_env(confined.child_env()),
        start_timeout_s=cfg.start_timeout_s,
    )
    return Launch(confined, spec)
