"""Build and run OCI images without a daemon: Debian's `buildah` (RUN steps and runs in a chroot, no
container runtime) and `mmdebstrap` (a Debian root filesystem from Debian's packages). The registries
that images/*/Dockerfile name as bases cannot be reached here, so their bases are replaced by local
stand-ins (tests/images/standins/) through the Dockerfiles' BASE_IMAGE / UV_IMAGE build arguments."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]
STANDINS = pathlib.Path(__file__).resolve().parent / "standins"
DEBIAN = "localhost/colliderflow-standin/debian:bookworm"
# What the stand-ins install from the network: Debian's packages and PyPI; this machine's CA bundle
# is baked into the Debian stand-in so that pip and uv trust what this machine trusts.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEBIAN_PACKAGES = ("python3.11", "python3.11-venv", "ca-certificates")


def buildah(*args: str, log: pathlib.Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run buildah; with `log`, its output goes there and a failure names the log's last lines."""
    if log is None:
        return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True, **kwargs)
    with open(log, "a") as out:
        proc = subprocess.run(["buildah", *args], stdout=out, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise AssertionError(f"buildah {' '.join(args[:6])} ... failed ({proc.returncode}):\n{tail}")
    return proc


def exists(image: str) -> bool:
    return (
        subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True).returncode == 0
    )


def debian_base(log: pathlib.Path) -> str:
    """The Debian bookworm stand-in (minbase, Python 3.11, this machine's CA bundle); made once."""
    if exists(DEBIAN):
        return DEBIAN
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = f"{tmp}/rootfs.tar"
        with open(log, "a") as out:
            include = f"--include={','.join(DEBIAN_PACKAGES)}"
            command = ["mmdebstrap", "--variant=minbase", include, "bookworm", rootfs]
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)
        container = buildah("from", "scratch").stdout.strip()
        try:
            buildah("add", container, rootfs, "/")
            buildah("copy", container, CA_BUNDLE, CA_BUNDLE)
            buildah(
                "config", "--env", f"SSL_CERT_FILE={CA_BUNDLE}", "--env", f"PIP_CERT={CA_BUNDLE}", container
            )
            buildah("commit", "--quiet", container, DEBIAN)
        finally:
            buildah("rm", container)
    return DEBIAN


def build(
    dockerfile: pathlib.Path,
    tag: str,
    context: pathlib.Path,
    log: pathlib.Path,
    args: dict[str, str] | None = None,
) -> str:
    """`buildah build` with chroot isolation; unchanged steps come from the layer cache. Docker's image
    format, as `docker build` makes: the OCI format has no SHELL, and the Dockerfiles' RUN steps are
    bash with -euo pipefail."""
    build_args = [f"--build-arg={k}={v}" for k, v in (args or {}).items()]
    buildah(
        "build", "--isolation", "chroot", "--format", "docker", "--layers", "--pull=never",
        "-f", str(dockerfile), "-t", tag, *build_args, str(context), log=log,
    )  # fmt: skip
    return tag


def uv_standin(tag: str, version: str, log: pathlib.Path) -> str:
    """The uv image stand-in: this machine's uv and uvx, which must be the pinned version."""
    uv = shutil.which("uv") or os.path.expanduser("~/.local/bin/uv")
    found = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
    assert found.split()[1] == version, f"{uv} is {found.strip()}, the Dockerfiles pin uv {version}"
    with tempfile.TemporaryDirectory() as context:
        for name in ("uv", "uvx"):
            shutil.copy2(pathlib.Path(uv).with_name(name), f"{context}/{name}")
        return build(STANDINS / "uv.Dockerfile", tag, pathlib.Path(context), log)


def run(
    image: str,
    command: Sequence[str],
    *,
    volumes: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """Run `command` in a fresh container of `image` (its own user, work dir and environment unless
    given); the container is removed afterwards."""
    name = f"colliderflow-smoke-{uuid.uuid4().hex[:8]}"
    buildah("from", "--pull-never", "--name", name, image)
    try:
        options = [f"--volume={host}:{inside}" for host, inside in (volumes or {}).items()]
        # buildah's /etc/hosts in the container does not name this machine's hostname, which Spark
        # resolves for its own address unless told
        options += [f"--env={k}={v}" for k, v in {"SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}.items()]
        options += [f"--user={user}"] if user else []
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", *options, name, "--", *command],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        buildah("rm", name)


def size_bytes(image: str) -> int:
    """The image's size as `buildah images` (and `docker images`) shows it: its layers, uncompressed."""
    listed = json.loads(buildah("images", "--json", image).stdout)[0]["size"]
    number, unit = re.fullmatch(r"([\d.]+)\s*([kMG]?B)", listed).groups()
    return round(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


def config(image: str) -> dict:
    """The image's OCI config (User, WorkingDir, Env, Labels)."""
    return json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
