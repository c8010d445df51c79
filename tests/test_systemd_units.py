"""The shipped unit: `systemd-analyze verify` clean and `security --offline` exposure <= 2.0.

`verify` needs the ExecStart binary to exist, so the unit is checked inside a temporary root
(`--root`): the installed tree from `make install DESTDIR=...` plus a stub edge-gateway and a
copy of /bin/kill. The host's unit directory is linked in for the targets the unit names.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = "edge-gateway.service"

# systemd-analyze comes with Debian's `systemd` package, which `make deps` installs.
assert shutil.which("systemd-analyze"), "systemd-analyze missing: run `make deps`"


def make_install(destdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), *extra, f"DESTDIR={destdir}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def analyzable_root(root: Path) -> Path:
    """Make `root` (an installed tree) verifiable offline."""
    binary = root / "opt/edge-gateway/venv/bin/edge-gateway"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin/kill")
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    system = root / "usr/lib/systemd/system"
    if not system.exists():
        system.symlink_to("/lib/systemd/system")
    return root


def analyze(root: Path, *args: str, unit: str = UNIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}", unit],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    destdir = tmp_path_factory.mktemp("root")
    make_install(destdir, "install")
    return analyzable_root(destdir)


def test_installed_unit_verifies_clean(root: Path) -> None:
    result = analyze(root, "verify")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_installed_unit_exposure_is_at_most_2(root: Path) -> None:
    result = analyze(root, "security", "--offline=yes", "--threshold=20")
    assert result.returncode == 0, result.stdout[-2000:]
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert level is not None
    assert float(level.group(1)) <= 2.0
    print(f"exposure {level.group(1)}")


def test_the_threshold_check_fails_an_unhardened_unit(root: Path) -> None:
    plain = root / "etc/systemd/system/plain.service"
    plain.write_text("[Service]\nExecStart=/opt/edge-gateway/venv/bin/edge-gateway run\n")
    result = analyze(root, "security", "--offline=yes", "--threshold=20", unit="plain.service")
    assert result.returncode != 0


def test_unit_keys_that_unattended_operation_depends_on() -> None:
    text = (REPO / "systemd" / UNIT).read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "StartLimitIntervalSec=0",  # never give up for good
        "KillMode=mixed",  # the worker may finish the answer in progress
        "OOMPolicy=continue",  # a worker OOM kill is the supervisor's to handle
        "Delegate=memory cpu pids",
        "ProtectControlGroups=no",  # the worker's group is created in the delegated subtree
        "MemoryDenyWriteExecute=yes",
        "StateDirectory=edge-gateway",
        "CacheDirectory=edge-gateway",
        "ConfigurationDirectory=edge-gateway",
        "User=edge-gateway",
    ):
        assert re.search(rf"(?m)^{re.escape(line)}$", text), line


def test_install_tree_and_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    out = make_install(tmp_path, "install").stdout
    assert "skipped systemd-sysusers and systemctl" in out
    for path in (
        "etc/edge-gateway/gateway.toml",
        "etc/systemd/system/edge-gateway.service",
        "usr/lib/sysusers.d/edge-gateway.conf",
        "opt/edge-gateway/share/grafana-dashboard.json",
        "opt/edge-gateway/share/mosquitto-secure.conf",
        "opt/edge-gateway/share/mosquitto.acl",
        "var/lib/edge-gateway",
        "var/cache/edge-gateway",
    ):
        assert (tmp_path / path).exists(), path
    assert (tmp_path / "var/lib/edge-gateway").stat().st_mode & 0o777 == 0o750
    sysusers = (tmp_path / "usr/lib/sysusers.d/edge-gateway.conf").read_text()
    assert re.search(r"(?m)^u edge-gateway ", sysusers)
    # A second install keeps the operator's configuration.
    config = tmp_path / "etc/edge-gateway/gateway.toml"
    config.write_text(config.read_text() + "# mine\n")
    make_install(tmp_path, "install")
    assert config.read_text().endswith("# mine\n")
    assert (tmp_path / "etc/edge-gateway/gateway.toml.new").exists()
    (tmp_path / "var/lib/edge-gateway/kb.sqlite3").write_bytes(b"data")
    make_install(tmp_path, "uninstall")
    assert not (tmp_path / "etc/systemd/system/edge-gateway.service").exists()
    assert not (tmp_path / "opt/edge-gateway").exists()
    assert (tmp_path / "var/lib/edge-gateway/kb.sqlite3").read_bytes() == b"data"
    assert config.exists()
    make_install(tmp_path, "uninstall", "PURGE=1")
    assert not (tmp_path / "var/lib/edge-gateway").exists()
    assert not (tmp_path / "etc/edge-gateway").exists()


def test_prefix_is_substituted_into_the_unit(tmp_path: Path) -> None:
    make_install(tmp_path, "install", "PREFIX=/srv/gw", "SYSCONFDIR=/srv/gw-etc")
    unit = (tmp_path / "etc/systemd/system/edge-gateway.service").read_text()
    assert "ExecStart=/srv/gw/venv/bin/edge-gateway --config /srv/gw-etc/gateway.toml run" in unit
