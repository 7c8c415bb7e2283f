"""A real XRootD server on loopback (Debian's xrootd-server, installed by tests/services/install.sh)
serving a scratch directory as root://127.0.0.1:PORT//..., the way EOS serves CMS open data."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

START_TIMEOUT_S = 30


@dataclass(frozen=True)
class XRootDServer:
    """The served directory (`root`, on this machine) and the URL prefix it is served under."""

    root: pathlib.Path
    port: int

    def url(self, relative: str) -> str:
        return f"root://127.0.0.1:{self.port}//{relative.lstrip('/')}"

    def put(self, local: str | os.PathLike, relative: str) -> str:
        """Copy a local file (or a directory's tree) under the served root; its root:// URL."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(local):
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(local, target)
        for path in [target, *target.rglob("*")] if target.is_dir() else [target]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        for parent in target.relative_to(self.root).parents:
            (self.root / parent).chmod(0o755)
        return self.url(relative)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"xrootd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"xrootd did not listen on {port} within {START_TIMEOUT_S} s")


def start_xrootd() -> Iterator[XRootDServer]:
    """Run xrootd on a free loopback port. It refuses to run as root, so as root it runs as `nobody`
    (runuser), and the served tree is made world-readable."""
    exe = shutil.which("xrootd")
    if exe is None:
        message = "xrootd is not installed (bash tests/services/install.sh installs xrootd-server)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    base = pathlib.Path(tempfile.mkdtemp(prefix="colliderflow-xrootd-"))
    data, admin = base / "data", base / "admin"
    data.mkdir()
    admin.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(admin, user="nobody")
    for path in (base, data):
        path.chmod(0o755)
    port = _free_port()
    config = base / "xrootd.cfg"
    config.write_text(
        f"xrd.port {port}\nall.export /\noss.localroot {data}\nall.adminpath {admin}\nall.pidpath {admin}\n"
    )
    config.chmod(0o644)
    log = admin / "xrootd.log"
    cmd = [exe, "-c", str(config), "-l", str(log), "-n", "colliderflow-tests"]
    if as_root:
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log)
        yield XRootDServer(data, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """One XRootD server for the whole test session."""
    yield from start_xrootd()
