"""A throw-away Samba server on 127.0.0.1 for tests that need a real SMB peer.

``start_samba`` writes an ``smb.conf`` that keeps every file smbd uses (private, lock,
state, cache, pid, log) under one temporary folder, serves two read-write shares backed by
folders there (``share`` and ``other_share``), adds one user with a password to a private
passdb (and, given ``more_users``, those too: existing Unix accounts, as smbd works as the
Unix account of each SMB user, so the folders' owners and modes decide what each may do),
starts ``smbd --foreground`` on a free high port and waits until the port accepts
connections. ``running_samba`` is that for a fixture: stopped afterwards, and the test
skipped when smbd cannot run (failed in CI, where its absence is a failure).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

SMBD_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT_S = 20.0


class SambaUnavailable(RuntimeError):
    """smbd cannot run on this machine; the message says why."""


@dataclass
class Samba:
    """A running smbd: where it listens, its share and account, and the process."""

    port: int
    share: str
    share_dir: Path
    user: str
    password: str = field(repr=False)
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    server: str = "127.0.0.1"
    other_share: str = "cstest2"

    @property
    def other_share_dir(self) -> Path:
        return self.root / self.other_share

    @property
    def unc(self) -> str:
        return f"\\\\{self.server}\\{self.share}"

    def log_text(self) -> str:
        return (self.root / "smbd.out").read_text(errors="replace")

    def set_user_enabled(self, enabled: bool) -> None:
        """Enable or disable the account (a logon with it is then refused as
        STATUS_ACCOUNT_DISABLED, as a Windows account disabled or locked out for a while)."""
        smbpasswd = shutil.which("smbpasswd")
        assert smbpasswd is not None  # start_samba needed it
        subprocess.run([smbpasswd, "-c", str(self.root / "smb.conf"),
                        "-e" if enabled else "-d", self.user],
                       capture_output=True, timeout=30, check=True)

    def set_password(self, password: str) -> None:
        """Give the account a new password (an operator changing it on the file server):
        logons with the old one are refused from now on."""
        smbpasswd = shutil.which("smbpasswd")
        assert smbpasswd is not None  # start_samba needed it
        subprocess.run([smbpasswd, "-c", str(self.root / "smb.conf"), "-s", self.user],
                       input=f"{password}\n{password}\n".encode(), capture_output=True,
                       timeout=30, check=True)
        self.password = password

    def crash(self) -> None:
        """Kill smbd and every process it forked, as a file server that crashes or
        restarts: the kernel closes their connections, and what they held (sessions, tree
        connects, open files) is gone."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def start_again(self) -> None:
        """Start smbd again, on the same port with the same shares and account, after
        ``crash``."""
        out = (self.root / "smbd.out").open("ab")
        self.process = subprocess.Popen(self.process.args, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        out.close()
        _wait_listening(self)

    @contextmanager
    def hung(self) -> Iterator[None]:
        """smbd and every process it forked stopped (SIGSTOP) for the block: the kernel
        still accepts new connections and acknowledges what is sent, nothing answers."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def find_smbd() -> str | None:
    found = shutil.which("smbd")
    if found:
        return found
    candidates = (Path(d) / "smbd" for d in SMBD_DIRS)
    return next((str(c) for c in candidates if os.access(c, os.X_OK)), None)


def start_samba(root: Path, user: str = "root", password: str = "Sm8@test!pw",
                share: str = "cstest", more_users: Mapping[str, str] | None = None) -> Samba:
    """Start smbd under ``root``; SambaUnavailable when smbd or smbpasswd cannot be used.
    ``more_users`` (Unix account name -> SMB password) may log on to the shares too."""
    smbd, smbpasswd = find_smbd(), shutil.which("smbpasswd")
    if smbd is None or smbpasswd is None:
        raise SambaUnavailable("smbd and smbpasswd are not installed (Debian: samba)")
    if os.geteuid() != 0:
        raise SambaUnavailable("smbd needs root to serve a password-protected share")
    port = free_port()
    share_dir = root / "share"
    accounts = {user: password, **(more_users or {})}
    conf = _write_conf(root, port, {share: share_dir, Samba.other_share: root / Samba.other_share},
                       list(accounts))
    for name, secret in accounts.items():
        _add_user(smbpasswd, conf, name, secret)
    out = (root / "smbd.out").open("wb")
    command = [smbd, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)]
    # smbd signals its whole process group when it stops, so it gets a group of its own;
    # in the foreground it also stops when a piped stdin closes, so stdin is /dev/null.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    samba = Samba(port, share, share_dir, user, password, root, process)
    _wait_listening(samba)
    return samba


@contextmanager
def running_samba(root: Path, **options: Any) -> Iterator[Samba]:
    """``start_samba(root, **options)`` until the block ends; pytest.skip when smbd cannot
    run on this machine, except in CI, where it is pytest.fail."""
    try:
        server = start_samba(root, **options)
    except SambaUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def samba_with_accounts(accounts: Mapping[str, str]) -> Iterator[Samba]:
    """``running_samba`` serving ``accounts`` (existing Unix accounts -> SMB passwords)
    besides its own user, in a temporary folder any account may pass through (smbd works
    as each account, which must reach the shares; pytest's folders are its owner's only).
    """
    with tempfile.TemporaryDirectory(prefix="smb-accounts-") as above:
        Path(above).chmod(0o711)
        with running_samba(Path(above), more_users=accounts) as server:
            yield server


def _write_conf(root: Path, port: int, shares: dict[str, Path], users: list[str]) -> Path:
    dirs = {name: root / name for name in ("private", "lock", "state", "cache", "pid", "ncalrpc")}
    for folder in (*dirs.values(), *shares.values()):
        folder.mkdir(parents=True, exist_ok=True)
    sections = "".join(_share_section(name, folder, users) for name, folder in shares.items())
    conf = root / "smb.conf"
    conf.write_text(f"""[global]
    server role = standalone server
    workgroup = CSTEST
    netbios name = CSTESTSMB
    security = user
    map to guest = never
    smb ports = {port}
    interfaces = 127.0.0.1
    bind interfaces only = yes
    disable netbios = yes
    server min protocol = SMB2_10
    private dir = {dirs['private']}
    lock directory = {dirs['lock']}
    state directory = {dirs['state']}
    cache directory = {dirs['cache']}
    pid directory = {dirs['pid']}
    ncalrpc dir = {dirs['ncalrpc']}
    passdb backend = tdbsam:{dirs['private'] / 'passdb.tdb'}
    log file = {root / 'smbd.log'}
    log level = 1
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
{sections}""")
    return conf


def _share_section(name: str, folder: Path, users: list[str]) -> str:
    return f"""
[{name}]
    path = {folder}
    read only = no
    browseable = yes
    valid users = {" ".join(users)}
    create mask = 0644
    directory mask = 0755
"""


def _add_user(smbpasswd: str, conf: Path, user: str, password: str) -> None:
    result = subprocess.run(
        [smbpasswd, "-c", str(conf), "-a", "-s", user],
        input=f"{password}\n{password}\n".encode(), capture_output=True, timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise SambaUnavailable(f"smbpasswd could not add {user}: "
                               f"{result.stderr.decode(errors='replace').strip()}")


def _wait_listening(samba: Samba) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if samba.process.poll() is not None:
            raise SambaUnavailable(f"smbd exited with {samba.process.returncode}: "
                                   f"{samba.log_text()[-2000:]}")
        try:
            with socket.create_connection((samba.server, samba.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    samba.stop()
    raise SambaUnavailable(f"smbd did not listen on port {samba.port} "
                           f"within {START_TIMEOUT_S:.0f} s")


def session_ports(samba: Samba) -> set[int] | None:
    """The client ports of the sessions ``samba`` holds, as ``smbstatus -b`` lists them
    ("127.0.0.1 (ipv4:127.0.0.1:PORT)"); None when smbstatus is not installed."""
    smbstatus = shutil.which("smbstatus")
    if smbstatus is None:
        return None
    listed = subprocess.run([smbstatus, "-s", str(samba.root / "smb.conf"), "-b"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    return {int(found) for found in re.findall(r"\(ipv4:[0-9.]+:([0-9]+)\)", listed)}


def serving_pid(samba: Samba, client_port: int) -> int:
    """The smbd process serving the TCP connection from ``client_port`` on 127.0.0.1 (smbd
    forks one per connection): the holder of the server side's socket, by its inode in
    /proc/net/tcp."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if (local, remote) == (samba.port, client_port):
            inode = fields[9]
    if inode is None:
        raise LookupError(f"no connection from port {client_port} to smbd port {samba.port}")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue  # gone, or not ours to read
        if f"socket:[{inode}]" in links:
            return int(fd_dir.parent.name)
    raise LookupError(f"no process holds the socket of the connection from port {client_port}")
