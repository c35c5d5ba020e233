"""Files on SMB shares reached through smbprotocol (``\\\\server\\share\\...`` paths).

Used where the host cannot reach a share natively: the agent off Windows, and the
emulator when a share lives on a real SMB server. Credentials registered by
``use_credentials`` (from a share's URL or a registered pool's path) belong to the folder
they were given for: a path below it is reached with them, the deepest such folder
winning, so two pools in two folders of one share, each with its own account, each keep
theirs (smbprotocol holds one session per server and user on one connection, and each
call names its user). A path below no such folder (an image store whose URL the MS
stripped) is reached with an account chosen by rule, never by which logon came last: the
one configured for the server (``[agent.smb_credentials]``, the operator's choice), else
the one account the folders of its share are reached with, else, when no folder of that
share has one, the one account the folders of the server are reached with; where there
are several, none is guessed and the call fails naming them and the setting that
decides (``credentials_for``). Every logon is on the configured port. The account of a
folder whose pool is removed is forgotten (``drop_credentials``).
Credentials the server refuses at logon are dropped again: the folder goes back to the
account it had, so a mistyped re-registration never takes a pool's files from the account
that reaches them; an account kept as a share's own (``keep_credentials``: the WinRM
account for the host's administrative shares) is never dropped, only tried again.
Connections are pooled per instance and reopened when they drop (one that fails to
negotiate, as with a hung server, is closed at once); ``close`` logs them off, and cuts
those whose server does not answer within a few seconds.

Every blocking smbprotocol call runs in a worker thread (``asyncio.to_thread``), except
``open_binary``, which is itself called from a worker thread. smbprotocol waits for each
response without a bound, so a server that goes silent without closing TCP would hold
calls for many minutes: a call that has waited ``probe_after_s`` has its server asked for
an SMB2 ECHO, and a server that does not answer it within ``echo_answer_s`` loses its
connection (``hostfs/smbwatch.py``); the calls waiting on it fail saying so, and the next
call reconnects. Every failure becomes a
``HostFileError`` with a one-line message naming the path and, for connection and logon
failures, the server; a password never appears in one. Paths that leave their share
(``..``) or are not UNC paths raise ``PathNotAllowed`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import stat as stat_mode
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn, TypeVar

import smbclient  # type: ignore[import-untyped]
import smbclient.shutil  # type: ignore[import-untyped]
from smbclient._io import SMBFileTransaction, SMBRawIO, set_info  # type: ignore[import-untyped]
from smbprotocol.connection import Connection  # type: ignore[import-untyped]
from smbprotocol.exceptions import (  # type: ignore[import-untyped]
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)
from smbprotocol.file_info import (  # type: ignore[import-untyped]
    FileDispositionInformation,
    FileRenameInformation,
)
from smbprotocol.open import (  # type: ignore[import-untyped]
    CreateOptions,
    FilePipePrinterAccessMask,
)
from smbprotocol.session import Session  # type: ignore[import-untyped]

from hyperv_agent.errors import HostFileError, LogonRefused, PathNotAllowed
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import FileStat, HostFiles, OpenMode, Usage
from hyperv_agent.hostfs.locations import Credentials, ShareLocation, same_user
from hyperv_agent.hostfs.smbwatch import Watchdog, keep_alive, shut_down

DEFAULT_PORT = 445
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# A call that waits this long on a server has the server asked for an SMB2 ECHO, which it
# must answer within ECHO_ANSWER_S or lose its connection (hostfs/smbwatch.py).
PROBE_AFTER_S = 10.0
ECHO_ANSWER_S = 10.0
# How long close() waits for servers to answer the logoff before it shuts their sockets
# down, and how long it then waits for the logoffs to end (they fail at once).
CLOSE_GRACE_S = 3.0
_SHUT_DOWN_WAKE_S = 1.0

_T = TypeVar("_T")
# (server, share, folder below the share, "" for the share itself), lower-case
_Scope = tuple[str, str, str]

# NTSTATUS values (MS-ERREF 2.3) that decide how a failure is reported.
_MISSING = frozenset({0xC0000034, 0xC000003A})  # OBJECT_NAME / OBJECT_PATH_NOT_FOUND
_NO_SHARE = frozenset({0xC00000CC, 0xC0000225})  # BAD_NETWORK_NAME, NOT_FOUND (no DFS root)
_LOGON = frozenset({
    0xC000006A, 0xC000006D, 0xC000006E, 0xC0000064,  # WRONG_PASSWORD, LOGON_FAILURE, ...
    0xC0000071, 0xC0000072, 0xC0000193, 0xC0000234,  # expired, disabled, locked out
    0xC000015B,  # LOGON_TYPE_NOT_GRANTED
})
_ACCESS_DENIED = 0xC0000022
_SHARING_VIOLATION = 0xC0000043
_CANNOT_DELETE = 0xC0000121  # a file with FILE_ATTRIBUTE_READONLY, asked to be deleted
# A file deleted while another client holds it open (sharing delete): it cannot be opened
# any more and goes when that client closes it, but its name stays taken until then.
_DELETE_PENDING = 0xC0000056
FILE_ATTRIBUTE_REPARSE_POINT = 0x400  # MS-FSCC 2.6
REPARSE_TAG_NAME_SURROGATE = 0x20000000  # MS-FSCC 2.1.2.1: the tag's "N" bit
# How a connection whose peer went away fails (the receive thread's error, re-raised).
# A connection whose server closed it fails with EBADF when a request is sent, or a
# receive waits, just as smbprotocol's receive thread closes its socket.
_GONE = frozenset({errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                   errno.EHOSTUNREACH, errno.ENETUNREACH})
_READS = frozenset({"read", "list", "measure"})  # a silent server changed nothing for these
_LIBRARY_LOGGERS = ("smbprotocol", "smbclient")  # a dozen INFO lines per connection

log = logging.getLogger(__name__)


class MissingFile(HostFileError):
    """Nothing exists at the path (the share and server were reached), or only the name
    of a file being deleted, which nothing can open any more (STATUS_DELETE_PENDING)."""


@dataclass(frozen=True)
class _Target:
    """A clean UNC path, split for messages and for choosing the session."""

    path: str
    server: str
    share: str

    @property
    def share_root(self) -> str:
        return f"\\\\{self.server}\\{self.share}"

    def scopes(self) -> list[_Scope]:
        """The folders whose account may reach this path, deepest first: the path itself,
        each folder above it, then the whole share (folder "")."""
        inner = self.path[len(self.share_root):].strip("\\").lower()
        parts = inner.split("\\") if inner else []
        share = _share_key(self.server, self.share)
        return [(*share, "\\".join(parts[:depth])) for depth in range(len(parts), -1, -1)]


def unc_server(path: str) -> str | None:
    """The server of a UNC path (``\\\\server\\...`` or ``//server/...``), else None."""
    text = path.replace("/", "\\")
    if not text.startswith("\\\\"):
        return None
    return text[2:].split("\\", 1)[0] or None


def _target(path: str) -> _Target:
    """``path`` checked and normalised inside its share; PathNotAllowed otherwise."""
    text = path.replace("/", "\\")
    pieces = text[2:].split("\\", 2) if text.startswith("\\\\") else []
    if len(pieces) < 2 or not pieces[0] or not pieces[1]:
        raise PathNotAllowed(f"{path!r} is not a UNC path of the form \\\\server\\share\\...")
    root = f"\\\\{pieces[0]}\\{pieces[1]}"
    inner = pieces[2] if len(pieces) == 3 else ""
    if inner.strip("\\"):
        clean = locations.confine(root, inner)  # resolves '..' without leaving the share
    else:
        locations.confine(root, "x")  # checks the server and share names only
        clean = root
    return _Target(clean, pieces[0], pieces[1])


class SmbFiles(HostFiles):
    """HostFiles for UNC paths, over SMB 2/3 with smbprotocol."""

    def smb_for(self, server: str) -> SmbFiles | None:
        return self

    def __init__(self, port: int = DEFAULT_PORT,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 configured: Mapping[str, Credentials] | None = None,
                 probe_after_s: float = PROBE_AFTER_S,
                 echo_answer_s: float = ECHO_ANSWER_S) -> None:
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self._configured = {server.lower(): account
                            for server, account in (configured or {}).items()}
        # keyed by (server, share, folder below the share; "" for the whole share)
        self._offered: dict[_Scope, Credentials] = {}  # not yet logged on with
        self._accepted: dict[_Scope, Credentials] = {}
        self._kept: dict[_Scope, Credentials] = {}  # offered again when refused
        self._listeners: list[Callable[[str, Credentials], None]] = []
        self._connections: dict[str, Any] = {}  # smbclient's pool, private to this instance
        self._lock = threading.Lock()
        self._connect_locks: dict[str, threading.Lock] = {}
        self._watchdog = Watchdog(probe_after_s, echo_answer_s, self._pooled, self._unpool)
        for name in _LIBRARY_LOGGERS:  # quiet unless the logging setup chose a level
            library = logging.getLogger(name)
            if library.level == logging.NOTSET:
                library.setLevel(logging.WARNING)

    def use_credentials(self, share: ShareLocation) -> None:
        """Reach ``share`` (its folder and everything below it, unless a deeper folder has
        credentials of its own) with its credentials from now on, once its server accepts
        them (the next logon tries them; refused, they are dropped and the folder's
        earlier account stays). Sessions already open stay. A location without
        credentials changes nothing."""
        if share.credentials is not None:
            key = _scope(share)
            with self._lock:
                if self._accepted.get(key) == share.credentials:
                    self._offered.pop(key, None)
                else:
                    self._offered[key] = share.credentials

    def drop_credentials(self, share: ShareLocation) -> None:
        """Forget the account offered or accepted for ``share``'s folder (its pool was
        removed), so that it neither reaches paths below the folder nor counts among the
        accounts of paths below no folder of their own; a pool registered there again
        brings its own. An account kept as the share's own (``keep_credentials``) stays.
        Sessions already open stay, for the folders whose account they are."""
        key = _scope(share)
        with self._lock:
            self._offered.pop(key, None)
            self._accepted.pop(key, None)

    def keep_credentials(self, share: ShareLocation) -> None:
        """``use_credentials`` for an account that stays ``share``'s own whatever a logon
        with it meets: refused (an account locked out or disabled for a while, a domain
        controller that did not answer), it is kept and tried again at the next call, and
        the refusal names it. Credentials offered later for the share are tried before it
        and, refused, leave the share to it again."""
        if share.credentials is not None:
            key = _scope(share)
            with self._lock:
                self._kept[key] = share.credentials
            self.use_credentials(share)

    def on_password_accepted(self, listener: Callable[[str, Credentials], None]) -> None:
        """Call ``listener`` (from the thread of the logon, no lock held) with the server,
        as the path names it, and the account, each time a logon takes offered
        credentials: that account's password on that server from then on."""
        with self._lock:
            self._listeners.append(listener)

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Log off and disconnect every pooled connection; later calls reconnect.

        smbprotocol waits for the answers to the logoff without a bound, so a server that
        has gone silent would hold the agent's shutdown: the connections are closed side
        by side, and those whose server has not answered within ``grace_s`` have their
        socket shut down (as the watchdog drops a silent server), which ends their logoff
        at once. Returns within about ``grace_s`` whatever the servers do."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        closing = []
        for connection in connections:
            closer = threading.Thread(target=_disconnect, args=(connection,),
                                      name="smb-close", daemon=True)
            closer.start()
            closing.append((connection, closer))
        deadline = time.monotonic() + grace_s
        for _connection, closer in closing:
            closer.join(max(0.0, deadline - time.monotonic()))
        silent = [(connection, closer) for connection, closer in closing if closer.is_alive()]
        for connection, _closer in silent:
            log.warning("SMB server %s did not answer the logoff within %g s; closing its "
                        "connection without it", getattr(connection, "server_name", "?"),
                        grace_s)
            shut_down(connection)
        deadline = time.monotonic() + _SHUT_DOWN_WAKE_S
        for _connection, closer in silent:  # daemon threads: not waited for beyond this
            closer.join(max(0.0, deadline - time.monotonic()))

    async def log_on(self, server: str) -> None:
        """Open a session on ``server`` with the account its shares would be reached with
        (``credentials_for``), no share connected: whether the server can be reached and
        takes the account. HostFileError naming the server and the reason otherwise."""
        checked = _target(f"\\\\{server}\\IPC$")  # the server's name checked, not sent
        target = _Target(f"\\\\{checked.server}", checked.server, "")

        def work() -> None:
            with self._translated("log on to", target):
                self._session(target)

        await asyncio.to_thread(work)

    # --- HostFiles ---------------------------------------------------------------------

    async def usage(self, path: str) -> Usage:
        volume = await self._run("measure", path, smbclient.stat_volume)
        return Usage(int(volume.total_size), int(volume.caller_available_size))

    async def make_dirs(self, path: str) -> None:
        await self._run("create folder", path, _make_dirs)

    async def exists(self, path: str) -> bool:
        return await self.stat(path) is not None

    async def read_text(self, path: str, max_bytes: int = 4096) -> str | None:
        try:
            data: bytes = await self._run("read", path, _read_start, max_bytes)
        except MissingFile:
            return None
        return data.decode("utf-8", errors="replace")

    async def write_text(self, path: str, text: str) -> None:
        target = _target(path)
        folder, _, name = target.path.rpartition("\\")
        aside = f"{folder}\\.{name}.tmp"
        await self._run("write", aside, _write_aside, text.encode("utf-8"))
        await self.rename(aside, target.path)

    async def stat(self, path: str) -> FileStat | None:
        try:
            result = await self._run("read", path, smbclient.stat)
        except MissingFile:
            return None
        modified = getattr(result, "st_mtime_ns", None)
        return FileStat(size=int(result.st_size), is_dir=stat_mode.S_ISDIR(result.st_mode),
                        modified_ns=int(modified) if modified is not None else None)

    async def list_dir(self, path: str) -> list[str]:
        names: list[str] = await self._run("list", path, smbclient.listdir)
        return sorted(names)

    async def remove(self, path: str) -> bool:
        try:
            await self._run("delete", path, _delete)
        except MissingFile:
            return False
        return True

    async def rename(self, source: str, target: str) -> None:
        src, dst = _target(source), _target(target)
        if src.share_root.lower() != dst.share_root.lower():
            raise HostFileError(f"cannot rename {source} to {target}: not on the same share")
        await self._run("rename", source, _replace, dst.path)

    async def link_out(self, root: str, path: str) -> str | None:
        """smbprotocol follows a server's symbolic links by itself, so each step below
        ``root`` is looked at without following it (FILE_OPEN_REPARSE_POINT): a symbolic
        link, junction or mount point (a name-surrogate reparse point, MS-FSCC 2.1.2.1) is
        where the way leaves, whatever its target. Other reparse points (deduplicated or
        tiered files) hold their own data and pass. A step that does not exist ends the
        walk. One round trip per step."""
        for step in locations.steps_below(root, path):
            try:
                found = await self._run("read", step, smbclient.lstat)
            except MissingFile:
                return None
            if redirects(int(found.st_file_attributes), int(found.st_reparse_tag)):
                return step
        return None

    def open_binary(self, path: str, mode: OpenMode) -> BinaryIO:
        target = _target(path)
        with self._translated("open", target):
            raw = smbclient.open_file(target.path, mode, share_access="r",
                                      **self._session(target))
        return _TranslatingFile(raw, lambda: self._translated("access", target)).as_binary()

    async def copy_file(self, source: str, target: str) -> int:
        """Within one share the server copies the data itself (FSCTL_SRV_COPYCHUNK, with a
        streamed fallback when the server cannot); across shares, or between two folders
        of one share reached with different accounts (two pools, each its folder's own),
        the data is streamed, each end opened with its own account: smbclient opens both
        ends of a server-side copy in the source's session."""
        src, dst = _target(source), _target(target)
        if src.share_root.lower() != dst.share_root.lower() or \
                self._account(src)[2] != self._account(dst)[2]:
            return await super().copy_file(source, target)
        await self._run("copy", source, _copy_in_share, dst.path)
        result = await self._run("read", target, smbclient.stat)
        return int(result.st_size)

    # --- plumbing ----------------------------------------------------------------------

    def _session(self, target: _Target) -> dict[str, Any]:
        """smbclient's arguments for ``target``'s share, with its session open: opened once
        even when several threads ask at the same time, and reopened when the connection
        dropped. Offered credentials become the share's once the logon takes them; the
        server refusing them drops them (``_Refused``)."""
        server = target.server
        kwargs: dict[str, Any] = {"port": self.port, "connection_timeout": self.connect_timeout_s,
                                  "connection_cache": self._connections}
        key, offered, credentials = self._account(target)
        if credentials is not None:
            kwargs.update(username=credentials.qualified_user, password=credentials.password)
        elif len(choices := self.fallback_accounts(server, target.share)) > 1:
            users = ", ".join(sorted({account.qualified_user for account in choices}))
            raise HostFileError(
                f"cannot reach {target.path}: it is below no folder with an account of its "
                f"own, and the folders of SMB server {server} are reached with several "
                f"accounts ({users}), so none is taken for it: give the account in the "
                f'storage URL, or add "{server}" to [agent.smb_credentials]')
        try:
            with self._server_lock(server):
                self._connect(server)
                if offered is not None:
                    self._check_password(server, offered)
                smbclient.register_session(server, **kwargs)
        except (SMBException, OSError, ValueError) as error:
            if offered is not None and _logon_refused(error):
                self._settle(key, offered, accepted=False)
                raise _Refused(error, offered) from error
            raise
        if offered is not None:
            self._settle(key, offered, accepted=True)
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener(server, offered)
        if connection := self._pooled(server):
            keep_alive(connection)
        return kwargs

    def _connect(self, server: str) -> None:
        """Pool a connection to ``server`` unless one is pooled and open. smbclient's
        ``register_session`` would make it too, but a connection whose negotiation fails
        (a hung server: the kernel still accepts the TCP connection, nothing answers) is
        then neither pooled nor closed: its socket and receive thread would stay for good,
        one more per call for as long as the server hangs. Here it is shut down."""
        pooled = self._pooled(server)
        if pooled is not None and pooled.transport.connected:
            return
        connection = Connection(smbclient.ClientConfig().client_guid, server, self.port,
                                require_signing=True)
        try:
            connection.connect(timeout=self.connect_timeout_s)
        except BaseException:
            _abandon(connection)
            raise
        with self._lock:
            self._connections[f"{server.lower()}:{self.port}"] = connection

    def _check_password(self, server: str, offered: Credentials) -> None:
        """Log on with ``offered`` when a session of its user is open and the password is
        not the one last accepted for that user on ``server``, then log that logon off:
        smbclient picks an open session by user name alone, so a mistyped password for a
        user already logged on would otherwise be taken and kept, to fail only at the next
        reconnect. A session's own password proves nothing: one opened before the password
        was changed on the file server stays open, and the old password, re-sent with a
        pool whose details were not updated, would pass for good. Refused, the logon's
        error is raised. The open session stays in use (the server authorises by account,
        not password)."""
        connection = self._pooled(server)
        if connection is None:
            return
        user = offered.qualified_user
        if not any(session.username == user for session in connection.session_table.values()):
            return
        with self._lock:
            if any(scope[0] == server.lower() and account == offered
                   for scope, account in self._accepted.items()):
                return
        # as smbclient.register_session logs on: no encryption forced, Negotiate
        trial = Session(connection, username=user, password=offered.password,
                        require_encryption=False, auth_protocol="negotiate")
        trial.connect()
        with contextlib.suppress(SMBException, OSError, ValueError):
            trial.disconnect()

    def _settle(self, key: _Scope, offered: Credentials, accepted: bool) -> None:
        """The logon with ``offered`` for the folder ``key`` succeeded or was refused.
        Accepted, its password is also that of every other folder of the server reached
        with the same user: a password changed on the file server is changed for the
        account, and the other folders' old one would be refused at their next logon."""
        with self._lock:
            if self._offered.get(key) == offered:  # not replaced by a newer offer meanwhile
                del self._offered[key]
                kept = self._kept.get(key)
                if not accepted and kept is not None and key not in self._accepted:
                    self._offered[key] = kept  # the share's own account, tried again
            if accepted:
                self._accepted[key] = offered
                for scope, account in self._accepted.items():
                    if scope[0] == key[0] and same_user(account, offered):
                        self._accepted[scope] = offered

    def credentials_for(self, server: str, share: str | None = None) -> Credentials | None:
        """The account a path of ``share`` on ``server`` (of the server, without one) below
        no folder with an account of its own is reached with; None when there is none,
        or several (``fallback_accounts``)."""
        accounts = self.fallback_accounts(server, share)
        return accounts[0] if len(accounts) == 1 else None

    def fallback_accounts(self, server: str, share: str | None = None
                          ) -> tuple[Credentials, ...]:
        """The accounts a path below no folder with an account of its own could be reached
        with, by rule rather than by which logon came last (an image store whose URL the
        MS stripped sits beside the pools, on their share or another of their server):
        the account configured for ``server`` (the operator's choice wins); else the
        distinct accounts the folders of ``share`` are reached with; else, when no folder
        of it has one, those the folders of the server's other shares are reached with.
        One is the account to use; several leave the choice to the operator. Credentials
        offered and not yet logged on with are not counted; those kept as a share's own
        (``keep_credentials``) are. Accounts are told apart as the server tells them
        (``same_user``), not by spelling or password: one user under two domain cases,
        or with an older password kept beside the one a logon took, is one account, with
        the password the server last accepted."""
        configured = self._configured.get(server.lower())
        if configured is not None:
            return (configured,)
        with self._lock:
            accepted = list(self._accepted.items())
            kept = [(scope, account) for scope, account in self._kept.items()
                    if scope not in self._accepted]
        known = accepted + kept  # an accepted password before a kept one
        wanted = _share_key(server, share) if share else None
        on_share = [account for scope, account in known if scope[:2] == wanted]
        on_server = [account for scope, account in known if scope[0] == server.lower()]
        distinct: list[Credentials] = []
        for account in on_share or on_server:
            if not any(same_user(account, other) for other in distinct):
                distinct.append(account)
        return tuple(distinct)

    def _account(self, target: _Target) -> tuple[_Scope, Credentials | None,
                                                 Credentials | None]:
        """The folder whose account reaches ``target`` (the deepest with credentials
        offered, accepted or kept, else the whole share), the credentials offered for it
        and not yet logged on with (None when none are), and the account to log on
        with (``credentials_for`` for a path below no such folder)."""
        scopes = target.scopes()
        with self._lock:
            for scope in scopes:
                offered = self._offered.get(scope)
                own = offered or self._accepted.get(scope) or self._kept.get(scope)
                if own is not None:
                    return scope, offered, own
        return scopes[-1], None, self.credentials_for(target.server, target.share)

    def account_for(self, path: str) -> Credentials | None:
        """The account ``path`` is reached with: its deepest folder's own (offered,
        accepted or kept), else the one chosen by rule for a path below no such folder
        (``credentials_for``); None when there is none, or several. PathNotAllowed for a
        path that is not UNC."""
        return self._account(_target(path))[2]

    def configured_account(self, server: str) -> Credentials | None:
        """The account ``[agent.smb_credentials]`` gives for ``server``; None without one."""
        return self._configured.get(server.lower())

    def _server_lock(self, server: str) -> threading.Lock:
        with self._lock:
            return self._connect_locks.setdefault(server.lower(), threading.Lock())

    def _pooled(self, server: str) -> Any | None:
        """The pooled connection to ``server``, if any (smbclient keys it server:port)."""
        with self._lock:
            return self._connections.get(f"{server.lower()}:{self.port}")

    def _unpool(self, server: str, connection: Any) -> None:
        """Forget ``connection`` to ``server`` (unless replaced): the next call reconnects."""
        with self._lock:
            key = f"{server.lower()}:{self.port}"
            if self._connections.get(key) is connection:
                del self._connections[key]

    @property
    def silence_bound_s(self) -> tuple[float, float]:
        """How long a call waits before its server is asked for an echo, and how long the
        server then has to answer it before its connection is dropped."""
        return self._watchdog.probe_after_s, self._watchdog.answer_within_s

    @property
    def open_connections(self) -> int:
        """How many server connections are pooled (one per server and port)."""
        return len(self._connections)

    async def _run(self, action: str, path: str, call: Callable[..., _T], *args: Any,
                   **kwargs: Any) -> _T:
        target = _target(path)

        def work() -> _T:
            with self._translated(action, target):
                return call(target.path, *args, **kwargs, **self._session(target))

        return await asyncio.to_thread(work)

    @contextmanager
    def _translated(self, action: str, target: _Target) -> Iterator[None]:
        with self._watchdog.watching(target.server) as call:
            try:
                yield
            except HostFileError:
                raise
            except (_Refused, _AtTarget, SMBException, OSError, ValueError) as failure:
                if call.dropped:
                    raise HostFileError(_silent(action, target, self)) from None
                self._raise_translated(failure, action, target)

    def _raise_translated(self, failure: BaseException, action: str, target: _Target
                          ) -> NoReturn:
        at = None
        if isinstance(failure, _AtTarget):  # named: the source is not what failed
            at = failure.path
            failure = failure.error
        error, credentials = (failure.error, failure.credentials) \
            if isinstance(failure, _Refused) else \
            (failure, self._account(target)[2])
        message = _describe(error, action, target, self, credentials, at)
        if credentials is not None and len(credentials.password) >= 4:  # never echoed
            message = message.replace(credentials.password, "*****")
        kind: type[HostFileError] = HostFileError
        if _status(error) in (*_MISSING, _DELETE_PENDING):
            kind = MissingFile
        elif _logon_refused(error):
            kind = LogonRefused
        raise kind(message) from None


class _AtTarget(Exception):
    """A copy within a share failed at its target (its folder missing or not writable,
    the file open elsewhere), not at its source."""

    def __init__(self, error: BaseException, path: str) -> None:
        super().__init__("the target failed")
        self.error = error
        self.path = path


class _Refused(Exception):
    """The server refused the logon with credentials offered for a share (now dropped)."""

    def __init__(self, error: BaseException, credentials: Credentials) -> None:
        super().__init__("logon refused")
        self.error = error
        self.credentials = credentials


def _abandon(connection: Any) -> None:
    """Close a connection that never finished connecting, without waiting on its server:
    its socket is shut down first (no lock needed), which ends its receive thread at
    once, then closed."""
    if getattr(connection, "transport", None) is None \
            or not connection.transport.connected:
        return  # the TCP connection itself failed: nothing was opened
    shut_down(connection)
    with contextlib.suppress(SMBException, OSError, ValueError):
        connection.disconnect(False)


def _disconnect(connection: Any) -> None:
    # a connection that fails while closing is closed enough
    with contextlib.suppress(SMBException, OSError, ValueError):
        connection.disconnect(True)


def _share_key(server: str, share: str) -> tuple[str, str]:
    return server.lower(), share.lower()


def _scope(share: ShareLocation) -> _Scope:
    """The key of ``share``'s folder (compared case-insensitively, as Windows does)."""
    folder = "\\".join(part for part in share.folder.replace("/", "\\").split("\\") if part)
    return (*_share_key(share.server, share.share), folder.lower())


def _logon_refused(error: BaseException) -> bool:
    return isinstance(error, SMBAuthenticationError) or _status(error) in _LOGON


def redirects(attributes: int, reparse_tag: int) -> bool:
    """Whether a file with these FILE_ATTRIBUTE_* flags and reparse tag sends whoever
    opens it to another name: a reparse point whose tag is a name surrogate (symbolic
    links, junctions, mount points), or one whose tag the server did not give."""
    if not attributes & FILE_ATTRIBUTE_REPARSE_POINT:
        return False
    return reparse_tag == 0 or bool(reparse_tag & REPARSE_TAG_NAME_SURROGATE)


def _status(error: BaseException) -> int | None:
    if isinstance(error, SMBOSError):
        return int(error.ntstatus) if error.ntstatus is not None else None
    if isinstance(error, SMBResponseException):
        return int(error.status)
    return None


def _describe(error: BaseException, action: str, target: _Target, files: SmbFiles,
              credentials: Credentials | None, at: str | None = None) -> str:
    """The one-line message of ``error``, met while ``action`` was done to ``target``
    (``at``: to the file it was done to, where that file failed)."""
    head = f"cannot {action} {target.path}" + (f" to {at}: {at}" if at else "")
    where = f"SMB server {target.server} port {files.port}"
    status = _status(error)
    if status in _MISSING:
        return f"{head}: no such file or folder"
    if status in _NO_SHARE:
        return f"{head}: {where} has no share named {target.share!r}"
    if status in _LOGON or isinstance(error, SMBAuthenticationError):
        return f"{head}: {where} refused the logon: {_who(credentials, target.server)}"
    if status == _ACCESS_DENIED:
        return f"{head}: access denied"
    if status == _SHARING_VIOLATION:
        return (f"{head}: it is open elsewhere (a running VM, another host or another "
                "program) without sharing that access (sharing violation)")
    if status == _DELETE_PENDING:
        return (f"{head}: the file is being deleted but is still open elsewhere (another "
                "host or program); its name stays taken until it is closed there")
    if unreachable := _unreachable(error, files.connect_timeout_s):
        return f"{head}: {where} cannot be reached: {unreachable}"
    return f"{head}: {_reason(error)}"


def _silent(action: str, target: _Target, files: SmbFiles) -> str:
    probe_after_s, answer_s = files.silence_bound_s
    note = "" if action in _READS else "; what it was changing may be left partial"
    return (f"cannot {action} {target.path}: SMB server {target.server} port {files.port} "
            f"stopped answering (a request waited {probe_after_s:g} s, then an echo "
            f"{answer_s:g} s more); its connection was closed and the next call "
            f"reconnects{note}")


def _who(credentials: Credentials | None, server: str) -> str:
    if credentials is None:
        return (f"no credentials are known for {server}: register a pool on that server "
                "(its details or its path carry user and password), give them in the "
                "URL, or add "
                f'"{server}" to [agent.smb_credentials]')
    return f"wrong user name or password for {credentials.qualified_user}"


def _unreachable(error: BaseException, timeout_s: float) -> str | None:
    cause = error.__cause__
    if isinstance(error, ValueError) and isinstance(cause, OSError):
        return (cause.strerror or str(cause)).lower()
    if isinstance(error, OSError) and not isinstance(error, SMBOSError) \
            and error.errno in _GONE:  # the kernel gave up on the peer
        return (error.strerror or str(error)).lower()
    if isinstance(error, OSError) and not isinstance(error, SMBOSError) \
            and error.errno == errno.EBADF:  # its socket closed under it (see _GONE)
        return "the connection closed"
    if isinstance(error, (TimeoutError, SMBConnectionClosed)):
        return "the connection closed or timed out"
    if isinstance(error, SMBException) and "timeout" in str(error).lower():
        return f"no answer within {timeout_s:g} s"
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno and error.errno in errno.errorcode:
        status = _status(error)
        code = f" (NTSTATUS 0x{status:08X})" if status is not None else ""
        return f"{(error.strerror or str(error)).lower()}{code}"
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _read_start(path: str, max_bytes: int, **session: Any) -> bytes:
    with smbclient.open_file(path, "rb", share_access="r", **session) as handle:
        data: bytes = handle.read(max_bytes)
        return data


def _copy_in_share(path: str, target: str, **session: Any) -> None:
    """``smbclient.shutil.copyfile`` of ``path`` to ``target`` on its share (the server
    copies the data). A failure at the target raises ``_AtTarget``, so that the message
    names the target: the source had been named, as if it were missing or refused,
    where it was the target's folder that was missing or not writable."""
    try:
        smbclient.shutil.copyfile(path, target, **session)
    except SMBOSError as error:
        if error.filename == target:
            raise _AtTarget(error, target) from error
        raise


def _replace(path: str, target: str, **session: Any) -> None:
    """Rename the file at ``path`` to ``target`` (on the same share), replacing a file
    there, as Windows' own client does: the source opened for DELETE alone, then SET_INFO
    FileRenameInformation with ReplaceIfExists and the target's full path in the share
    (MS-SMB2 3.3.5.21.1). Of the file replaced the server asks only that it could be
    deleted (on Windows: DELETE on it or FILE_DELETE_CHILD on its folder) and that nothing
    holds it open (MS-FSCC FileRenameInformation).
    ``smbclient.replace`` first opens the target for FILE_EXECUTE, only to learn its name
    in a DFS namespace: a server refuses that open where the account may replace the file
    but not run it (one it wrote itself on Samba with ``create mask = 0644``, or under an
    NTFS ACL without execute), and the rename failed with access denied. It is used only
    where the source was opened under another name than its path in the share (a DFS
    namespace, whose names it resolves). A rename refused with access denied has the
    target looked at (``_fail_if_held``): one being deleted, or open elsewhere, fails as
    that, which says why it is not replaced. One open nowhere by then that the account
    may delete (a neighbour's read of a heartbeat stamp lasts a round trip: it held the
    file when the rename came and closed it since) is renamed over once more: the
    refusal said nothing lasting, and "access denied" sent the operator looking for a
    permission that is there."""
    with _opened(path, FilePipePrinterAccessMask.DELETE, **session) as source:
        if str(source.fd.file_name).lower() == _inside(_target(path)).lower():
            try:
                _rename_open(source, target)
            except (SMBOSError, SMBResponseException) as refused:
                if _status(refused) != _ACCESS_DENIED or not _fail_if_held(path, target,
                                                                             **session):
                    raise
                _rename_open(source, target)
            return
    smbclient.replace(path, target, **session)


def _rename_open(source: Any, target: str) -> None:
    """SET_INFO FileRenameInformation on the open file ``source``: renamed to ``target``
    (on its share), replacing a file there."""
    with SMBFileTransaction(source) as transaction:
        renamed = FileRenameInformation()
        renamed["replace_if_exists"] = True
        renamed["file_name"] = _inside(_target(target))
        set_info(transaction, renamed)


def _delete(path: str, **session: Any) -> None:
    """Delete the file at ``path`` (not a folder; a link itself, not where it leads) as
    Windows' own client does: the file opened for DELETE (DeleteFile asks besides only
    to read its attributes), then SET_INFO FileDispositionInformation. Of the file the
    server asks only that it could be deleted (on Windows: DELETE on it or
    FILE_DELETE_CHILD on its folder; on Samba: write on its folder), so an account
    deletes in its own folder a file another account left there.
    ``smbclient.remove`` also opens it for FILE_WRITE_ATTRIBUTES, to clear its attributes
    first, which a server refuses where the account may not write the file (another
    account's, created ``0644`` on Samba or under an NTFS ACL that does not grant it), and
    the delete failed with access denied. A read-only file (refused as
    STATUS_CANNOT_DELETE) is deleted as ``smbclient.remove`` does, its read-only
    attribute cleared first: an account that may write the file may do that. Shared for
    reading, writing and deleting, as Windows does: a file open elsewhere with delete
    sharing is deleted when the last holder closes it."""
    try:
        with _opened(path, FilePipePrinterAccessMask.DELETE,
                     CreateOptions.FILE_NON_DIRECTORY_FILE, **session) as doomed, \
                SMBFileTransaction(doomed) as transaction:
            disposition = FileDispositionInformation()
            disposition["delete_pending"] = True
            set_info(transaction, disposition)
    except (SMBOSError, SMBResponseException) as refused:
        if _status(refused) != _CANNOT_DELETE:
            raise
        smbclient.remove(path, **session)


def _make_dirs(path: str, **session: Any) -> None:
    """Create the folder ``path`` and its parents; a folder already there is fine.
    ``smbclient.makedirs`` takes any name already taken as the folder being there, so a
    file with the folder's name passed, and the first write into the "folder" failed
    instead; one on the way reported the path not found. A name taken by a file fails
    naming that file, as creating the folder on the host itself fails. The folders are
    made here (``_make_below``), not by ``smbclient.makedirs``: for a share the server
    does not have, its ``mkdir`` of the share's root fails "not found" too, and it went on
    asking for it for ever, the call never answered."""
    target = _target(path)
    steps = [step for step in _inside(target).split("\\") if step]
    if not steps:  # the share itself: there, or the failure says why not
        smbclient.stat(target.share_root, **session)
        return
    try:
        _make_below(target.share_root, steps, **session)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOENT):
            raise
        for depth in range(len(steps), 0, -1):  # the path itself first, then its parents
            step = "\\".join((target.share_root, *steps[:depth]))
            try:
                found = smbclient.stat(step, **session)
            except OSError:
                continue  # not there (or not to be looked at): the folder above decides
            if stat_mode.S_ISDIR(found.st_mode):
                if depth == len(steps):
                    return  # the folder was there already
                raise
            raise HostFileError(f"cannot create folder {target.path}: {step} is a file, "
                                "not a folder") from None
        raise


def _make_below(root: str, steps: list[str], **session: Any) -> None:
    """Make the folder ``steps`` below the share ``root`` and those missing above it:
    the deepest is tried first, a folder whose parent is missing has the parent made
    first, up to the first folder below the share, then those below it are made in
    turn (one made meanwhile by another caller is fine). The folder itself there
    already fails as EEXIST, and one that cannot be made for want of its parent right
    below the share (no such share) as ENOENT, as ``mkdir`` fails."""
    def folder(depth: int) -> str:
        return "\\".join((root, *steps[:depth]))

    depth = len(steps)
    while True:
        try:
            smbclient.mkdir(folder(depth), **session)
            break
        except OSError as error:
            if error.errno == errno.EEXIST and depth < len(steps):
                break  # the parent is there (or a file there: the folder below fails)
            if error.errno != errno.ENOENT or depth == 1:
                raise
            depth -= 1
    for below in range(depth + 1, len(steps) + 1):
        try:
            smbclient.mkdir(folder(below), **session)
        except OSError as error:
            if error.errno != errno.EEXIST or below == len(steps):
                raise


def _fail_if_held(source: str, target: str, **session: Any) -> bool:
    """Fail saying why, when a look at the file ``target``, which ``source`` was refused
    to replace with access denied, tells: Windows and Samba refuse to replace a file that
    is open elsewhere, or being deleted while open elsewhere, with the same status as one
    the account may not delete (MS-FSCC FileRenameInformation). Opened to read its
    attributes, a file being deleted fails with STATUS_DELETE_PENDING; opened for DELETE
    (what replacing it asks) sharing nothing, one open elsewhere (a neighbour reading a
    heartbeat stamp, another program) meets that open as a sharing violation. Each look
    closes the file again at once, unchanged. Otherwise whether the last look opened the
    file: True, nothing holds it now and the account may delete it; False, it met
    something else, and the refusal stands as it came."""
    looks = (
        (FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES, 0, "rwd", _DELETE_PENDING,
         "is being deleted but is still open elsewhere (another host or program); its "
         "name stays taken until it is closed there"),
        (FilePipePrinterAccessMask.DELETE, CreateOptions.FILE_NON_DIRECTORY_FILE, "",
         _SHARING_VIOLATION, "is open elsewhere (another host or program is reading or "
         "using it), and a file that is open is not replaced; it is left as it was"))
    opened = False
    for access, options, sharing, telling, why in looks:
        try:
            with _opened(target, access, options, sharing=sharing, **session):
                opened = True
                continue
        except (SMBOSError, SMBResponseException) as looked:
            opened = False
            if _status(looked) != telling:
                continue
        raise HostFileError(f"cannot rename {source} to {target}: {target} {why}")
    return opened


def _opened(path: str, access: int, options: int = 0, sharing: str = "rwd",
            **session: Any) -> Any:
    """``path`` opened (the file itself, not where a link leads) for ``access`` alone,
    sharing ``sharing`` (everything unless told), as a context manager; ``options``:
    more CreateOptions."""
    return SMBRawIO(path, mode="r", share_access=sharing, desired_access=access,
                    create_options=CreateOptions.FILE_OPEN_REPARSE_POINT | options,
                    **session)


def _inside(target: _Target) -> str:
    """``target``'s path in its share (no leading separator)."""
    return target.path[len(target.share_root):].lstrip("\\")


def _write_aside(path: str, data: bytes, **session: Any) -> None:
    """Write ``data`` as the whole of the file at ``path`` (``write_text``'s file aside).
    Overwriting a file asks to write it: a file there that another account left (a write
    of it cut short before that account was replaced by this one), which this account
    may delete but not write (created ``0644`` on Samba, or under an NTFS ACL that does
    not grant it), refused that for good, and the file beside it (a heartbeat stamp) was
    never written again. Refused with access denied, the file is deleted (``_delete``)
    and written anew; the refusal stands when it cannot be deleted either (a folder the
    account may not write)."""
    try:
        handle = smbclient.open_file(path, "wb", **session)
    except (SMBOSError, SMBResponseException) as refused:
        if _status(refused) != _ACCESS_DENIED:
            raise
        try:
            _delete(path, **session)
        except (SMBOSError, SMBResponseException):
            raise refused from None
        handle = smbclient.open_file(path, "xb", **session)
    with handle:
        handle.write(data)


class _TranslatingFile(io.BufferedIOBase):
    """A file opened by smbclient whose failures surface as HostFileError."""

    def __init__(self, inner: Any, translated: Callable[[], Any]) -> None:
        super().__init__()
        self._inner = inner
        self._translated = translated

    def as_binary(self) -> BinaryIO:
        return self  # type: ignore[return-value]  # implements BinaryIO's methods

    def read(self, size: int | None = -1) -> bytes:
        with self._translated():
            data: bytes = self._inner.read(-1 if size is None else size)
            return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        with self._translated():
            count: int = self._inner.readinto(buffer)
            return count

    def write(self, data: Any) -> int:
        with self._translated():
            count: int = self._inner.write(data)
            return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._translated():
            position: int = self._inner.seek(offset, whence)
            return position

    def tell(self) -> int:
        with self._translated():
            position: int = self._inner.tell()
            return position

    def flush(self) -> None:
        if not self.closed:
            with self._translated():
                self._inner.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes first
        finally:
            with self._translated():
                self._inner.close()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: Any) -> None:
        """Close the file. A close that fails while an earlier failure of the block is on
        its way (a server gone mid-copy fails the write and then the close) is logged and
        left out, so the failure reported is the first: what was being done when the
        server went away, not the close after it."""
        if kind is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:  # the block's own failure is reported
            log.debug("closing an SMB file after %s failed too: %s", kind.__name__, error)

    def readable(self) -> bool:
        return bool(self._inner.readable())

    def writable(self) -> bool:
        return bool(self._inner.writable())

    def seekable(self) -> bool:
        return bool(self._inner.seekable())
