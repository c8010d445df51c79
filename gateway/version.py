"""The version of the installed gateway: pyproject.toml's `version`, read from the package
metadata (importlib.metadata), so `edge-gateway --version`, the status and health messages and
the Prometheus `edge_gateway_build_info` all say the same."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version

DISTRIBUTION = "edge-gateway"
UNKNOWN = "unknown"
"""Reported when the code runs from a source tree that was never installed (no metadata)."""


@cache
def package_version() -> str:
    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN
