"""Load llama.cpp's CPU backend when the wheel carries one per instruction-set level.

The bundle's wheel (`make bundle`, configs/build/) is built once for every x86-64 or aarch64 CPU a
plant may have: GGML_BACKEND_DL with GGML_CPU_ALL_VARIANTS compiles libggml-cpu-x64.so,
-sse42.so, -haswell.so, -icelake.so ... and ggml scores each against the running CPU and loads
the best one, so one wheel runs on an N100, an old Atom and a server alike instead of dying with
an illegal instruction. llama-cpp-python never asks ggml to load backends, and a model loaded
with none registered fails ("no backends are loaded"), so this module does it, once, from the
directory holding libggml.so. A wheel built for the machine itself (GGML_NATIVE, the developer's
venv) registers its CPU backend statically: nothing is loaded then.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

_lock = threading.Lock()


class NoCpuBackend(RuntimeError):
    """The wheel loads its CPU backend at run time, and none of its variants fits this CPU."""


def ensure_cpu_backend() -> tuple[str, ...]:
    """The backends registered with ggml, loading the best CPU variant first if none is.

    Idempotent and thread-safe (the embedder and the engine both call it); call it before the
    first `llama_cpp.Llama`.
    """
    with _lock:
        return _load()


@functools.cache
def _load() -> tuple[str, ...]:
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_reg_name.restype = ctypes.c_char_p
    ggml.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    if ggml.ggml_backend_reg_count() == 0:
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(lib_dir).encode())
        if ggml.ggml_backend_reg_count() == 0:
            variants = sorted(p.name for p in lib_dir.glob("libggml-cpu-*.so"))
            raise NoCpuBackend(
                f"llama.cpp found no CPU backend for this processor in {lib_dir} "
                f"(variants there: {', '.join(variants) or 'none'})"
            )
    return tuple(
        (ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)) or b"?").decode()
        for i in range(ggml.ggml_backend_reg_count())
    )


def cpu_variant() -> str | None:
    """Which CPU variant library the process loaded (e.g. libggml-cpu-icelake.so), or None for
    a build with its CPU backend linked in. Read from the process's own memory map."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            return name
    return None
