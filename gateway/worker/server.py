"""The confined model worker: `python -m gateway.worker.server --fd N --model M ...`.

Started by `WorkerSupervisor` with one end of a `socket.socketpair()` as fd N. Order matters:
1. confine itself (join the cgroup(s) / set RLIMIT_AS) before importing anything heavy, so that
   every page of llama.cpp and of the mapped models is charged to the worker's limit;
2. ask the kernel for SIGKILL when the parent dies (PR_SET_PDEATHSIG), and exit if the parent is
   already gone; EOF on the socket is the second, portable way it never outlives the gateway;
3. load the models, send `ready`, then serve one request at a time.

A request that cannot be parsed, is not allowed, or fails inside llama.cpp gets an error reply;
only EOF (the parent is gone) or running out of memory ends the worker. After a MemoryError the
native state cannot be trusted, so the worker exits with EXIT_OUT_OF_MEMORY, which the
supervisor classifies like a kernel OOM kill (this is how an RLIMIT_AS overrun shows).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import socket
import sys
from collections.abc import Sequence

from gateway.worker.exits import EXIT_OUT_OF_MEMORY, EXIT_PARENT_GONE, EXIT_START_FAILED

_PR_SET_PDEATHSIG = 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway.worker.server")
    parser.add_argument("--fd", type=int, required=True, help="inherited stream socket")
    parser.add_argument("--model", required=True, help="GGUF chat model")
    parser.add_argument("--embedding-model", required=True, help="GGUF embedding model")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=0, help="0: all cores in our affinity")
    parser.add_argument("--flash-attn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--kv-cache-type", choices=("f16", "q8_0"), default="f16")
    parser.add_argument("--prefix-reuse", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--allow-test-ops", action="store_true")
    parser.add_argument("--join-cgroup", action="append", default=[], metavar="CGROUP_PROCS")
    parser.add_argument("--rlimit-as", type=int, default=None, metavar="BYTES")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def confine_self(join: Sequence[str], rlimit_as: int | None) -> None:
    """Move this process into each `cgroup.procs` file, then cap the address space."""
    for procs in join:
        with open(procs, "w") as fh:  # stdlib only before the join
            fh.write(str(os.getpid()))
    if rlimit_as is not None:
        resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))


def die_with_parent(parent_pid: int | None) -> None:
    """Best effort: SIGKILL us when the parent thread exits (Linux). Closes the race of a
    parent that died before prctl by checking that it is still our parent."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(EXIT_PARENT_GONE)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        confine_self(args.join_cgroup, args.rlimit_as)
    except OSError as exc:
        print(f"worker: cannot confine itself: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    die_with_parent(args.parent_pid)
    # The parent shuts us down; a Ctrl-C in its terminal must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    try:
        from gateway.worker.serving import run  # the heavy imports start here

        return run(sock, args)
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
