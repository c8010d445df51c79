"""The exit codes of `edge-gateway`: scripts and systemd read them, so they never change."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_ERROR_REPLY = 3
EXIT_TIMEOUT = 4
