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
import re
import threading
from pathlib import Path

_lock = threading.Lock()
_GGML_NAME = re.compile(r"libggml\.so(\.\d+)*")


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
    from llama_cpp import _logger

    # llama-cpp-python prints every llama.cpp message to stderr until a model is created with
    # verbose=False; loading the backend would print its "loaded CPU backend" line into every
    # command's output. The variant chosen is reported by the worker instead (cpu_variant).
    _logger.set_verbose(False)

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(_loaded_ggml(lib_dir)))
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


def _loaded_ggml(lib_dir: Path) -> Path:
    """The libggml that libllama itself was linked against and the loader mapped.

    A wheel cannot hold symlinks, so libggml.so, libggml.so.0 and libggml.so.0.25.3 are three
    copies of one file, and the dynamic loader maps each name it is given separately: backends
    registered in a copy libllama does not use stay invisible to it ("no backends are loaded").
    The copy to use is the one already in the process's memory map (by its SONAME)."""
    for line in _maps():
        path = Path(line.rsplit(" ", 1)[-1])
        if path.parent == lib_dir and _GGML_NAME.fullmatch(path.name):
            return path
    for name in ("libggml.so.0", "libggml.so"):
        if (lib_dir / name).exists():
            return lib_dir / name
    raise NoCpuBackend(f"no libggml in {lib_dir}")


def _maps() -> list[str]:
    try:
        return Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []


def cpu_variant() -> str | None:
    """Which CPU variant library the process loaded (e.g. libggml-cpu-icelake.so), or None for
    a build with its CPU backend linked in. Read from the process's own memory map."""
    for line in _maps():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            return name
    return None
