"""The soak test runs only from `make soak` (EDGE_SOAK=1): ten minutes is not for CI."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("EDGE_SOAK") else ["test_*.py"]
