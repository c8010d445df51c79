"""Exit codes of the worker process, shared by the worker and the supervisor (stdlib only:
the worker imports this before it has confined itself)."""

EXIT_PARENT_GONE = 0
"""The socket closed: the gateway is gone or stopping us."""
EXIT_START_FAILED = 3
"""Could not confine itself or load a model; the reason is on stderr."""
EXIT_OUT_OF_MEMORY = 86
"""A MemoryError (how an RLIMIT_AS overrun shows): classified like a kernel OOM kill."""
