"""Test PKI (the `openssl` CLI) and mosquitto started from the shipped secure configuration.

`configs/mosquitto-secure.conf` and `configs/mosquitto.acl` are used as shipped, the drop-in on
top of Debian's stock mosquitto.conf (tests/brokers.py, write_plant_config): only paths and ports
are moved to the test's directory, and the ACL gets one test-only user, `spy`, that may read
everything (the superuser that counts every publish on the broker).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.brokers import REPO, free_port, wait_for_port, write_plant_config

SHIPPED_SECURE_CONF = REPO / "configs" / "mosquitto-secure.conf"
SHIPPED_ACL = REPO / "configs" / "mosquitto.acl"


@dataclass(frozen=True, slots=True)
class Ca:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return Ca(cert, key)


def make_server_cert(ca: Ca, directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 / localhost, signed by `ca`."""
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


class SecureMosquitto:
    """mosquitto with the shipped TLS listener, password file and ACL. `users` are written to a
    fresh password file with mosquitto_passwd; or `passwd` names one made beforehand."""

    def __init__(
        self,
        workdir: Path,
        ca: Ca,
        users: dict[str, str] | None = None,
        *,
        passwd: Path | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tls_port, self.plain_port = free_port(), free_port()
        self.log = workdir / "mosquitto.log"
        cert, key = make_server_cert(ca, workdir)
        if passwd is None:
            passwd = workdir / "passwd"
            for i, (user, password) in enumerate((users or {}).items()):
                flags = ["-c"] if i == 0 else []
                subprocess.run(
                    ["mosquitto_passwd", *flags, "-b", str(passwd), user, password], check=True
                )
        acl = workdir / "acl"
        acl.write_text(SHIPPED_ACL.read_text() + "\n# test only\nuser spy\ntopic read #\n")
        text = SHIPPED_SECURE_CONF.read_text()
        for key_name, value in (
            ("password_file", str(passwd)),
            ("acl_file", str(acl)),
            ("cafile", str(ca.cert)),
            ("certfile", str(cert)),
            ("keyfile", str(key)),
        ):
            text, n = re.subn(rf"(?m)^{key_name} .*$", f"{key_name} {value}", text)
            assert n == 1, key_name
        text, n = re.subn(r"(?m)^listener 8883 .*$", f"listener {self.tls_port} 127.0.0.1", text)
        assert n == 1
        text, n = re.subn(r"(?m)^listener 1883 .*$", f"listener {self.plain_port} 127.0.0.1", text)
        assert n == 1
        self.conf = write_plant_config(workdir, text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], cwd=self.workdir)
        wait_for_port(self.tls_port)
        wait_for_port(self.plain_port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
