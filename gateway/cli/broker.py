"""`edge-gateway broker add-terminal ID` and `broker add-user NAME`: credentials on the plant's
mosquitto when it runs the secure drop-in (configs/mosquitto-secure.conf, configs/mosquitto.acl).

The ACL gives a terminal its topics by its user name (`pattern write edge/+/terminal/%u/question`,
`pattern read edge/+/terminal/%u/answer/#`), so a terminal's user name IS its terminal id. The
service accounts `gateway`, `scada` and `plc` have `user` blocks of their own in the ACL and are
never terminal ids.

The password is generated (or read from stdin with --password-stdin) and handed to
`mosquitto_passwd` on its standard input, never on its command line, where every local user
could read it in `ps`. mosquitto_passwd hashes it into the password file (adding the user or
replacing its password); the broker reads the file on start and on `systemctl reload mosquitto`.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.cli.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from models.base import IDENTIFIER_PATTERN

DEFAULT_PASSWORD_FILE = Path("/etc/mosquitto/edge-gateway.passwd")
"""`password_file` of configs/mosquitto-secure.conf."""
SERVICE_USERS = ("gateway", "scada", "plc")
"""The `user` blocks of configs/mosquitto.acl (tests/test_broker_credentials.py checks it)."""
BROKER_USER = "mosquitto"
"""Debian's mosquitto drops to this user and reads the password file as it on a reload."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = sub.add_parser(
        "broker", help="credentials on the plant's mosquitto (configs/mosquitto-secure.conf)"
    )
    broker_sub = broker.add_subparsers(dest="broker_command", required=True)
    terminal = broker_sub.add_parser(
        "add-terminal",
        help="add a terminal (or give it a new password); its user name is its terminal id",
    )
    terminal.add_argument("name", metavar="TERMINAL_ID")
    user = broker_sub.add_parser(
        "add-user", help="add a service account of the ACL: gateway, scada or plc"
    )
    user.add_argument("name", choices=SERVICE_USERS)
    for command in (terminal, user):
        command.add_argument(
            "--password-file",
            type=Path,
            default=DEFAULT_PASSWORD_FILE,
            help=f"mosquitto's password file, created if missing (default: "
            f"{DEFAULT_PASSWORD_FILE})",
        )
        command.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password (one line) from stdin instead of generating one",
        )
        command.add_argument(
            "--secret-file",
            type=Path,
            help="also write the clear password to this file (mode 0600), e.g. the gateway's "
            "/etc/edge-gateway/mqtt-password; otherwise it is printed once",
        )


def dispatch(args: argparse.Namespace) -> int:
    terminal = args.broker_command == "add-terminal"
    name: str = args.name
    if terminal:
        problem = terminal_id_problem(name)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("error: no password on stdin", file=sys.stderr)
            return EXIT_CONFIG
    else:
        password = secrets.token_urlsafe(18)
    try:
        add_user(args.password_file, name, password)
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.secret_file is not None:
        write_secret(args.secret_file, password)
    print(f"{name}: password set in {args.password_file}")
    if args.secret_file is not None:
        print(f"  password written to {args.secret_file} (mode 0600)")
    elif not args.password_stdin:
        print(f"  password: {password}")
        print("  (shown once, stored only hashed: enter it in the client's MQTT settings now)")
    if terminal:
        print(
            f"  may publish edge/<site>/terminal/{name}/question and read "
            f"edge/<site>/terminal/{name}/answer/# (the ACL's patterns)"
        )
    print("  the broker reads the file on start and reload: sudo systemctl reload mosquitto")
    return EXIT_OK


def terminal_id_problem(name: str) -> str | None:
    """Why `name` cannot be a terminal's user name, or None."""
    if re.fullmatch(IDENTIFIER_PATTERN, name) is None:
        return f"{name!r} is not a terminal id (docs/contract.md: {IDENTIFIER_PATTERN})"
    if ":" in name:
        return f"{name!r}: mosquitto user names cannot contain ':'"
    if name in SERVICE_USERS:
        return (
            f"{name!r} is a service account of the ACL, not a terminal: "
            f"edge-gateway broker add-user {name}"
        )
    return None


def add_user(password_file: Path, name: str, password: str) -> None:
    """Add `name` to mosquitto's password file, or replace its password, with mosquitto_passwd.

    A new file is created empty first, mode 0600, owned by the broker's user when run as root:
    the broker reads it as that user on a reload, and mosquitto 2.0.18 (Ubuntu 24.04) warns
    that future versions will refuse a password file others can read or the broker's user does
    not own. An existing file keeps its owner and mode (mosquitto_passwd rewrites it in place).
    """
    if "\n" in password or "\r" in password:
        raise RuntimeError("a password is one line")
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise RuntimeError("mosquitto_passwd not found: sudo apt-get install mosquitto")
    if not password_file.exists():
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        _give_to_broker(password_file)
    result = subprocess.run(
        [tool, str(password_file), name],
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise RuntimeError(f"mosquitto_passwd failed: {said[-1] if said else result.returncode}")


def _give_to_broker(path: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        uid = pwd.getpwnam(BROKER_USER).pw_uid
        gid = grp.getgrnam(BROKER_USER).gr_gid
    except KeyError:  # mosquitto not installed here (yet): root keeps it
        return
    os.chown(path, uid, gid)


def write_secret(path: Path, password: str) -> None:
    """The clear password for a client's own configuration (mode 0600, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    os.replace(tmp, path)
