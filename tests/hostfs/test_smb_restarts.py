"""SmbFiles while its file server restarts, stays down for a while, or hangs: calls fail
within a bound while it is away and work again, on fresh connections, once it is back,
with no connection or thread left behind. Each test has a Samba server of its own, since
it kills or stops it."""

from __future__ import annotations

import errno
import os
import os.path
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperv_agent.errors import HostFileError
from hyperv_agent.hostfs.locations import Credentials, ShareLocation
from hyperv_agent.hostfs.smb import SmbFiles
from tests.samba import Samba

PROBE_S, ANSWER_S, CONNECT_S = 0.5, 1.0, 1.0


@pytest.fixture
def server(own_samba: Samba) -> Samba:
    return own_samba


@pytest.fixture
def files(server: Samba) -> Iterator[SmbFiles]:
    smb = SmbFiles(port=server.port, connect_timeout_s=CONNECT_S, probe_after_s=PROBE_S,
                   echo_answer_s=ANSWER_S)
    smb.use_credentials(ShareLocation(server.server, server.share, credentials=Credentials(
        user=server.user, domain=server.server, password=server.password)))
    yield smb
    smb.close()


def _workers(server: Samba) -> list[threading.Thread]:
    """smbprotocol's receive threads of connections to ``server``: one per connection."""
    name = f"msg_worker-{server.server}:{server.port}"
    return [thread for thread in threading.enumerate() if thread.name == name]


def _sockets_to(server: Samba) -> int:
    """This process's TCP sockets connected to ``server``'s port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == server.port:
            inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{os.getpid()}/fd")
    return sum(1 for fd in fds.iterdir() if os.path.exists(fd) and os.readlink(fd) in inodes)


def _eventually(count: Callable[[], int], expected: int, within_s: float = 3.0) -> int:
    """``count()`` once it is down to ``expected``, or its value after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        found = count()
        if found <= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def test_calls_while_the_server_hangs_leave_no_connection_behind(
    server: Samba, files: SmbFiles
) -> None:
    """A hung file server still has its connections accepted by the kernel, but never
    answers the negotiation: each call that opens a connection then fails on its timeout.
    A connection left open after that would keep its socket and receive thread for good
    (and, once the server answers again, a server process each), one more per heartbeat
    or statistics call for as long as the server hangs."""
    beat = f"{server.unc}\\hb"
    await files.write_text(beat, "before")
    with server.hung():
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(HostFileError, match=f"SMB server {server.server} port "
                                                    f"{server.port}"):
                await files.read_text(beat)
            assert time.monotonic() - started < PROBE_S + ANSWER_S + CONNECT_S + 3
        assert _eventually(lambda: len(_workers(server)), 0) == 0
        assert _eventually(lambda: _sockets_to(server), 0) == 0
    assert await files.read_text(beat) == "before"  # back: a fresh connection
    assert len(_workers(server)) == 1 and files.open_connections == 1
    files.close()
    assert _eventually(lambda: len(_workers(server)), 0) == 0
    assert _eventually(lambda: _sockets_to(server), 0) == 0


async def test_a_call_racing_the_close_of_its_connection_names_the_server(
    server: Samba, files: SmbFiles
) -> None:
    """When its server closes a connection (crashed, restarted), smbprotocol's receive
    thread closes the socket: a request sent at that moment fails with EBADF, "bad file
    descriptor", which says nothing of the server. The receive thread's own failure is
    given to the next call, as here."""
    await files.write_text(f"{server.unc}\\hb", "before")
    connection = files._pooled(server.server)
    assert connection is not None
    connection._t_exc = OSError(errno.EBADF, os.strerror(errno.EBADF))
    with pytest.raises(HostFileError) as failure:
        await files.read_text(f"{server.unc}\\hb")
    assert str(failure.value).endswith(f"SMB server {server.server} port {server.port} "
                                       "cannot be reached: the connection closed")
    assert await files.read_text(f"{server.unc}\\hb") == "before"
