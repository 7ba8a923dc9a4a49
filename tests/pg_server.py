"""A throwaway PostgreSQL server on loopback for the tests, from the Debian package's binaries.

The server runs from a temporary directory on a free port with trust authentication, as the
``postgres`` user when the tests run as root (PostgreSQL refuses to run as root), and is
stopped and removed afterwards. ``server_binaries()`` is None when the server is not installed
(``apt-get install postgresql``); then the tests that need it are skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's /usr/lib/postgresql/N/bin
    (newest N) or the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return Path(pg_ctl).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(root: Path) -> list[str]:
    """The command prefix that runs the server's tools as a user other than root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        for path in [root, *root.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


@contextmanager
def postgres_server(bindir: Path) -> Iterator[str]:
    """Start a server and yield the URL of an empty database ``lampe`` on it."""
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="lampe-pg-"))
    root.chmod(0o755)
    data, port = root / "data", _free_port()
    prefix = _as_server_user(root)
    started = False
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
            + ["-E", "UTF8", "--locale=C", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options]
            + ["-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
        )
        started = True
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute("CREATE DATABASE lampe")
        yield f"postgresql://postgres@127.0.0.1:{port}/lampe"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
