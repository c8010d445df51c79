"""`make install` as plant IT runs it: an early, clear refusal of a too-old Python, and
`edge-gateway` on PATH afterwards (the link $(BINDIR)/edge-gateway, removed by uninstall).

The Python check runs against a fake `python3` first on PATH that reports 3.10 (Ubuntu 22.04's):
it answers `-c` programs with the real interpreter after setting sys.version_info to 3.10, logs
every call, and refuses anything else (venv, pip), so a target that went past the check would
fail loudly instead of building. The link is checked in a DESTDIR-staged tree, which skips the
venv; the full install (venv included) runs once into a temporary prefix, reusing the cached
llama-cpp-python wheel (skipped where there is none: it would compile for minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import REPO

pytestmark = pytest.mark.timeout(120)
OLD_PYTHON = """#!/bin/sh
# python3 of Ubuntu 22.04, as far as a version check can tell.
echo "$*" >> "{log}"
if [ "$1" = "-c" ]; then
    code="$2"; shift 2
    exec "{real}" -c "import sys; sys.version_info = (3, 10, 12, 'final', 0)
$code" "$@"
fi
if [ "$1" = "--version" ]; then echo "Python 3.10.12"; exit 0; fi
echo "fake python3 (3.10): refusing to run $*" >&2
exit 99
"""


def clean_env() -> dict[str, str]:
    """This process's environment without what an outer `make test` passes down."""
    outer = ("PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV")
    return {k: v for k, v in os.environ.items() if k not in outer}


def make(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(REPO), *args],
        capture_output=True, text=True, check=False, env=env or clean_env(), timeout=timeout_s,
    )  # fmt: skip


@pytest.fixture
def old_python(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `python3` is the fake 3.10, and the file logging its calls."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "python3-calls.log"
    fake = bin_dir / "python3"
    fake.write_text(OLD_PYTHON.format(log=log, real=sys.executable))
    fake.chmod(0o755)
    env = clean_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env, log


def test_the_fake_is_what_make_sees_as_python3(old_python: tuple[dict[str, str], Path]) -> None:
    env, _log = old_python
    said = subprocess.run(
        ["python3", "-c", "import sys; print(sys.version_info[:2])"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert said.strip() == "(3, 10)"


@pytest.mark.parametrize("target", ["python-check", "install", "venv", "venv-release", "demo"])
def test_a_python_older_than_3_11_is_refused_before_anything_is_built(
    old_python: tuple[dict[str, str], Path], tmp_path: Path, target: str
) -> None:
    env, log = old_python
    stage = tmp_path / "stage"
    stage.mkdir()
    venv = tmp_path / "venv"
    result = make(
        target,
        f"DESTDIR={stage}",
        "INSTALL_VENV=1",
        f"VENV={venv}",
        f"DEMO_DIR={tmp_path / 'demo'}",
        env=env,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: edge-gateway needs Python 3.11 or newer; 'python3' here is 3.10.12.\n"
        "  Supported: Debian 12 and Raspberry Pi OS bookworm (Python 3.11), Ubuntu 24.04 (3.12).\n"
        f"  Install on one of those, or name a 3.11+ interpreter: make {target} "
        "PYTHON=/path/to/python3.11\n"
        "  Nothing was installed or built.\n"
    ), result.stderr
    # Nothing made, and the fake was only asked for its version.
    assert list(stage.iterdir()) == []
    assert not venv.exists()
    assert not (tmp_path / "demo").exists()
    calls = log.read_text().splitlines()
    assert calls
    assert all(call.startswith("-c import sys; ") for call in calls), calls


def test_the_check_passes_silently_on_this_python() -> None:
    result = make("python-check", f"PYTHON={sys.executable}")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_install_links_edge_gateway_onto_path_and_uninstall_removes_it(tmp_path: Path) -> None:
    link = tmp_path / "usr/local/bin/edge-gateway"
    make("install", f"DESTDIR={tmp_path}")
    assert link.is_symlink()
    assert os.readlink(link) == "/opt/edge-gateway/venv/bin/edge-gateway"
    make("uninstall", f"DESTDIR={tmp_path}")
    assert not link.is_symlink()
    assert link.parent.is_dir()  # /usr/local/bin itself stays


def test_prefix_and_bindir_are_overridable(tmp_path: Path) -> None:
    dirs = (f"DESTDIR={tmp_path}", "PREFIX=/srv/gw", "BINDIR=/srv/bin")
    result = make("install", *dirs)
    assert result.returncode == 0, result.stderr
    assert os.readlink(tmp_path / "srv/bin/edge-gateway") == "/srv/gw/venv/bin/edge-gateway"
    assert not (tmp_path / "usr/local/bin/edge-gateway").exists()
    make("uninstall", *dirs)
    assert not (tmp_path / "srv/bin/edge-gateway").is_symlink()


def test_a_foreign_edge_gateway_on_path_is_neither_replaced_nor_removed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    foreign = bin_dir / "edge-gateway"
    foreign.write_text("#!/bin/sh\necho mine\n")
    refused = make("install", f"DESTDIR={tmp_path}")
    assert refused.returncode != 0
    assert f"{foreign} exists and is not a link" in refused.stderr
    assert not (tmp_path / "opt").exists()  # refused before anything was installed
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"
    # A link to another installation is left alone by our uninstall.
    foreign.unlink()
    foreign.symlink_to("/srv/other/venv/bin/edge-gateway")
    left = make("uninstall", f"DESTDIR={tmp_path}")
    assert left.returncode == 0, left.stderr
    assert f"left {foreign}: not a link to /opt/edge-gateway" in left.stdout
    assert os.readlink(foreign) == "/srv/other/venv/bin/edge-gateway"


WHEEL_CACHE = Path.home() / ".cache" / "edge-gateway" / "llama-portable"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_full_install_into_a_temporary_prefix_puts_edge_gateway_on_path(tmp_path: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    llama = re.search(r"(?m)^LLAMA_VERSION := (\S+)$", makefile)
    assert llama is not None
    assert list(WHEEL_CACHE.glob(f"llama_cpp_python-{llama.group(1)}-*.whl")), (
        f"no cached llama-cpp-python wheel in {WHEEL_CACHE}: `make venv` builds it"
    )
    root = tmp_path / "root"
    dirs = (
        f"PREFIX={root}/opt/edge-gateway",
        f"SYSCONFDIR={root}/etc/edge-gateway",
        f"STATEDIR={root}/var/lib/edge-gateway",
        f"CACHEDIR={root}/var/cache/edge-gateway",
        f"UNITDIR={root}/etc/systemd/system",
        f"SYSUSERSDIR={root}/usr/lib/sysusers.d",
        f"BINDIR={root}/bin",
        f"WHEEL_CACHE={WHEEL_CACHE}",
        "SYSTEMD_RUNNING=",  # never systemctl from a test, even on a box running systemd
    )
    installed = make("install", *dirs, timeout_s=800)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # `edge-gateway` is found on PATH, bare, as the README's commands call it.
    env = clean_env() | {"PATH": f"{root}/bin:/usr/bin:/bin"}
    version = subprocess.run(
        ["edge-gateway", "--version"], env=env, capture_output=True, text=True, check=True
    ).stdout
    pyproject = re.search(r'(?m)^version = "(.+)"$', (REPO / "pyproject.toml").read_text())
    assert pyproject is not None
    assert version == f"edge-gateway {pyproject.group(1)}\n"
    link = root / "bin" / "edge-gateway"
    assert link.resolve() == (root / "opt/edge-gateway/venv/bin/edge-gateway").resolve()
    checked = subprocess.run(
        ["edge-gateway", "--config", f"{root}/etc/edge-gateway/gateway.toml", "config", "check"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    removed = make("uninstall", *dirs)
    assert removed.returncode == 0, removed.stderr
    assert not link.is_symlink()
    assert not (root / "opt/edge-gateway").exists()
    assert (root / "etc/edge-gateway/gateway.toml").exists()  # kept unless PURGE=1
