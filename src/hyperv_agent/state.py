"""The agent's own small persistent state (not the host's): registered storage pools, the
VMs being built, the agent's name for the files it writes aside, and the address the
management server registered the host under.

The registry is the one place the agent keeps pool roots, and a request path is served
only below one of them (``handlers.datapaths``): the local pool, which the configuration
names (``local_storage_path``) and which is registered at every start, and the pools the
management server registered (ModifyStoragePoolCommand, CreateStoragePoolCommand).
Those are kept as a JSON file in the state directory, replaced atomically on every change, so the
registry survives a restart and is never half-written. A pool is remembered there by its
root (a local folder or a UNC path), its type, and its server and path without the
``?user=..&password=..`` query: ``pools.json`` never holds a credential.

The credentials an SMB pool came with are kept in a file of their own,
``pool-credentials.json`` (``CREDENTIALS_FILE``), when the file access uses them (a share
reached through smbprotocol, off Windows; a Windows host reaches its shares as the
service's account and keeps none). The management server sends them only when the host
connects (ModifyStoragePoolCommand): an agent restarted between two of its pings (a
service restart, an upgrade) gets no new ones, and without them could stamp no HA
heartbeat in the pool (its neighbours would soon call this live host down) nor serve
any command on it. They are kept as the TLS private key already is in the same folder:
readable by the agent's account only (created 0600 on POSIX; on Windows given the key's
protected access list, ``winacl.restrict``, before a byte is written), written aside and
renamed as every file here, handed to the file access at start, replaced when a
ModifyStoragePoolCommand brings new ones (a new password for a user is given to every
pool of the server kept with that user too, as is one a logon took: ``follow_logon``)
and removed with their pool; with no pool left
to keep them for, there is no file. A copy of that file set aside because it could not be
read (below) holds passwords too: every pool removal, and the last credentials leaving,
remove such copies, so that a pool's password does not outlive the pool on the disk. A KVM
host keeps its CIFS pools mounted, with their credentials, across a restart of its agent:
this is the same.

The local pool's uuid (the host's guid, which the startup reply reports) is kept there too,
as ``{"<uuid>": {"local": true}}`` without a root (the configuration names the root), so that
no command can register another root under it, also after a restart. A stored pool whose
root registration would refuse (not an absolute drive or UNC path, a ``.`` or ``..``
segment, a name Windows misreads) is left out when the file is read, with a warning, and is
gone from the file at its next change: such a root was never the folder its path names. A
root already stored that is a file is kept (reading does no I/O); nothing can be made below
a file, and registering it again is refused.

Every file here is written aside (``.<name>-<random>``), flushed to the disk, and renamed
into place (on POSIX the folder is flushed too, so the rename itself survives a power
loss); a write that fails (a full disk) leaves the old file as it was and nothing aside.
``sweep_temporaries`` removes what a killed process left aside. A state file that cannot
be parsed (cut short, hand-edited, not the shape this version writes) is never silently
taken for an empty one: a warning names it and what the agent does instead, and a file
with content is first moved aside to ``<name>.unreadable-<time>`` for the operator, since
the next change would write over it (a blank one is removed: it holds nothing). Moving it,
not copying it, makes the warning one warning: a later start finds no file, instead of
warning and copying the same bytes again at every restart before the next change (a
service restarting in a loop while the management server is away); and a rename needs no
free space, where a copy on a full disk would fail. Of one file's copies the newest
``KEPT_ASIDE`` are kept, the warning naming those it removed, so a file damaged again and
again does not fill the folder; ``set_aside_copies`` lists them for ``doctor``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from hyperv_agent.dirlock import DirectoryLock
from hyperv_agent.errors import AgentError
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.locations import Credentials, ShareLocation

SHARED_TYPES = frozenset({"SMB", "NetworkFilesystem"})
LOCK_FILE = "agent.lock"  # in the state directory: held by the process that writes it
CREDENTIALS_FILE = "pool-credentials.json"  # in the state directory, beside pools.json
_TEMPORARY_PREFIXES = (".pools-", ".building-", ".agent-id-", ".private-ip-",
                       ".pool-credentials-")
_LOCAL_MARK = "local"  # pools.json: {"<the local pool's uuid>": {"local": true}}
#: How many set-aside copies of one state file are kept (``<name>.<why>-<time>``), the
#: newest: enough to compare the last damage with the one before, bounded so that a file
#: damaged at every start (a disk failing) cannot fill the state directory.
KEPT_ASIDE = 3
UNREADABLE = "unreadable"  # a state file that could not be parsed: <name>.unreadable-<time>
UNUSABLE = "unusable"  # a generated TLS pair that does not load (``tls``)
#: Windows ignores a file's POSIX mode: there a file of secrets is kept private by its
#: access list.
_WINDOWS = sys.platform == "win32"

log = logging.getLogger("hyperv_agent.state")
_Shape = TypeVar("_Shape", dict[str, Any], list[Any])  # what a state file holds


@dataclass(frozen=True)
class RegisteredPool:
    """A pool this host was told to use (ModifyStoragePoolCommand with ``add``)."""

    root: str  # the folder request paths are confined to: C:\\pool or \\\\server\\share\\dir
    pool_type: str = ""  # SMB, NetworkFilesystem or Filesystem ("" when not recorded)
    host: str = ""  # the pool's server, as the management server names it
    path: str = ""  # the pool's path on that server, without its query

    @property
    def shared(self) -> bool:
        return self.pool_type in SHARED_TYPES or self.root.startswith("\\\\")

    @classmethod
    def from_root(cls, root: str) -> RegisteredPool:
        """A pool known only by its root: ``\\\\server\\share\\dir`` is an SMB pool on
        ``server`` with path ``/share/dir``; any other root a local Filesystem pool."""
        if not root.startswith("\\\\"):
            return cls(root=root, pool_type="Filesystem")
        server, _, rest = root[2:].partition("\\")
        return cls(root=root, pool_type="SMB", host=server, path="/" + rest.replace("\\", "/"))


def without_query(path: str | None) -> str:
    """A pool path without its ``?user=..&password=..`` query (never a credential)."""
    return (path or "").split("?", 1)[0]


class PoolRegistry:
    """Pool uuid -> the pool, for every pool this host was told to use, and the local pool
    ``local_root`` (not stored: the configuration names it): the one place the agent keeps
    pool roots."""

    def __init__(self, path: Path, local_root: str | None = None,
                 credentials_path: Path | None = None) -> None:
        self._path = path
        self._credentials_path = credentials_path  # None: credentials are not kept
        self._lock = threading.Lock()
        self._local = RegisteredPool(root=local_root, pool_type="Filesystem") \
            if local_root else None
        self._local_uuid: str | None = None
        self._pools: dict[str, RegisteredPool] = self._read()
        self._credentials: dict[str, Credentials] = self._read_credentials()

    def _read(self) -> dict[str, RegisteredPool]:
        """The stored pools; the local pool's uuid noted; a root that registration would
        refuse left out, with a warning."""
        data = _read_json(self._path, dict, "no storage pool is registered until the "
                          "management server registers its pools again")
        if data is None:
            return {}
        pools: dict[str, RegisteredPool] = {}
        for key, value in data.items():
            if isinstance(value, dict) and value.get(_LOCAL_MARK) is True:
                self._local_uuid = str(key).lower()
            elif (pool := _pool_of(value)) is None:
                log.warning("storage pool %s in %s left out: %s is not a pool as this "
                            "agent stores one; it is not served until the management "
                            "server registers it again", key, self._path,
                            _shown(value))
            else:
                problem = root_problem(pool.root)
                if problem is None:
                    pools[str(key)] = pool
                else:
                    log.warning("storage pool %s in %s left out: %s; it is not served until "
                                "the management server registers it again", key, self._path,
                                problem)
        stale = pools.pop(self._local_uuid, None) if self._local_uuid else None
        if stale is not None:
            self._warn_local_taken(self._local_uuid or "", stale)
        return pools

    def _read_credentials(self) -> dict[str, Credentials]:
        """The kept credentials of registered shared pools; an entry of no pool (left out
        of ``pools.json``, or not a share) or of no known shape is dropped, with a
        warning that never shows it, and is gone from the file at its next change."""
        path = self._credentials_path
        if path is None:
            return {}
        data = _read_json(path, dict, "the SMB pools whose credentials it kept are reached "
                          "with the accounts of [agent.smb_credentials] only, until the "
                          "management server registers them again")
        kept: dict[str, Credentials] = {}
        for key, value in (data or {}).items():
            pool = self._pools.get(str(key).lower())
            account = _credentials_of(value)
            if account is None:
                log.warning("the credentials kept for storage pool %s in %s are left out: "
                            "they are not credentials as this agent keeps them", key, path)
            elif pool is None or not pool.root.startswith("\\\\"):
                log.warning("the credentials kept for storage pool %s in %s are left out: "
                            "no SMB pool is registered under that uuid", key, path)
            else:
                kept[str(key).lower()] = account
        return kept

    def kept_shares(self) -> tuple[ShareLocation, ...]:
        """Each registered pool whose credentials are kept, as the share they reach it
        with (for ``HostFiles.use_credentials`` at start)."""
        with self._lock:
            kept = [(self._pools[key].root, account)
                    for key, account in self._credentials.items() if key in self._pools]
        return tuple(share for root, account in kept
                     if (share := _share_of(root, account)) is not None)

    def is_local(self, pool_uuid: str) -> bool:
        """Whether ``pool_uuid`` is the local pool's uuid, as the startup reply reported it."""
        return self._local_uuid is not None and pool_uuid.lower() == self._local_uuid

    def local_refusal(self, pool_uuid: str, root: str) -> str | None:
        """Why ``root`` cannot be registered under ``pool_uuid``: the uuid is the local
        pool's, which names the configured folder only; None when it may be."""
        if not self.is_local(pool_uuid):
            return None
        if self._local is not None and locations.same_folder(self._local.root, root):
            return None
        where = self._local.root if self._local is not None else "not configured"
        return (f"it is this host's local pool, whose folder is local_storage_path in the "
                f"agent's configuration ({where}); it is not moved to {root}")

    def name_local(self, pool_uuid: str) -> None:
        """Keep ``pool_uuid`` as the local pool's uuid (the startup reply reports it): a
        pool registered under it before is forgotten, with a warning, and none can be
        registered under it later at another root (``put``)."""
        key = pool_uuid.lower()
        with self._lock:
            stale = self._pools.pop(key, None)
            if stale is not None:
                self._warn_local_taken(key, stale)
            elif key == self._local_uuid:
                return
            self._local_uuid = key
            self._write()

    def _warn_local_taken(self, pool_uuid: str, stale: RegisteredPool) -> None:
        local = self._local.root if self._local is not None else "local_storage_path"
        log.warning("storage pool %s is this host's local pool (%s): the root %s registered "
                    "under its uuid is forgotten", pool_uuid, local, stale.root)

    def get(self, pool_uuid: str) -> RegisteredPool | None:
        return self._pools.get(pool_uuid.lower())

    def by_uuid(self, pool_uuid: str) -> RegisteredPool | None:
        """The pool registered under ``pool_uuid``, or the local pool when it is the local
        pool's uuid (as the startup reply reported it); None when neither."""
        if self.is_local(pool_uuid) and self._local is not None:
            return self._local
        return self.get(pool_uuid)

    def find(self, path: str, host: str | None = None) -> RegisteredPool | None:
        """The registered pool with this path (its query ignored, case-insensitive), on
        ``host`` when given; None when there is none or several match."""
        wanted = without_query(path).rstrip("/\\").casefold()
        found = [pool for pool in self._pools.values()
                 if pool.path.rstrip("/\\").casefold() == wanted
                 and (host is None or pool.host.casefold() == host.casefold())]
        return found[0] if len(found) == 1 else None

    def by_root(self, root: str) -> RegisteredPool | None:
        """The registered pool (the local one included) whose root is the folder ``root``
        (compared case-insensitively, after separators and ``.``/``..``); None when none is."""
        pools = [self._local] if self._local is not None else []
        pools += list(self._pools.values())
        return next((pool for pool in pools if locations.same_folder(pool.root, root)), None)

    def roots(self) -> tuple[str, ...]:
        """The roots of the shared pools (where heartbeats are written and read)."""
        return tuple(pool.root for pool in self._pools.values() if pool.shared)

    def all_roots(self) -> tuple[str, ...]:
        """The root of every registered pool, the local pool first."""
        local = (self._local.root,) if self._local is not None else ()
        return local + tuple(pool.root for pool in self._pools.values())

    def put(self, pool_uuid: str, pool: RegisteredPool,
            credentials: Credentials | None = None) -> None:
        """Register ``pool`` under ``pool_uuid``, with the ``credentials`` the file access
        reaches its share with, kept in their own file (those kept before are replaced;
        with none given they stay while the pool keeps its root). Under the local pool's
        uuid only the local pool's own root is accepted (and not stored: the configuration
        names it); another root is a ValueError (``StorageHandlers`` refuses it first, with
        its reason)."""
        with self._lock:
            if self.is_local(pool_uuid):
                if self.local_refusal(pool_uuid, pool.root) is not None:
                    raise ValueError(f"{pool_uuid} is the local pool's uuid; {pool.root} "
                                     "cannot be registered under it")
                return
            key = pool_uuid.lower()
            before = self._pools.get(key)
            self._pools[key] = pool
            self._write()
            if credentials is not None and pool.root.startswith("\\\\"):
                changed = self._credentials.get(key) != credentials
                self._credentials[key] = credentials
                changed |= bool(self._rotate(_server_of(pool.root), credentials))
            else:  # kept only for the share they were given for
                moved = before is None or not locations.same_folder(before.root, pool.root)
                changed = moved and self._credentials.pop(key, None) is not None
            if changed:
                self._write_credentials()

    def follow_logon(self, server: str, credentials: Credentials
                     ) -> tuple[ShareLocation, ...]:
        """A logon to ``server`` took ``credentials`` (``HostFiles.on_password_accepted``):
        they are kept for every pool of that server kept with the same user. A password
        the file server takes is the account's, whichever pool it was kept for (one
        registered after the password changed, a file kept by an earlier version that
        never carried it over): a pool kept with an older one would be refused at logon
        after the next restart, its heartbeat stopped while the management server never
        re-sends it, and lose the newest when the pool it came with is removed. The shares
        of the pools whose credentials changed, with the new ones (for
        ``HostFiles.use_kept_credentials``: a pool whose old password was refused, or not
        yet tried, is reached with its user's current one from then on)."""
        with self._lock:
            changed = self._rotate(server.lower(), credentials)
            if changed:
                self._write_credentials()
            roots = [self._pools[key].root for key in changed]
        return tuple(share for root in roots
                     if (share := _share_of(root, credentials)) is not None)

    def _rotate(self, server: str, credentials: Credentials) -> list[str]:
        """Give ``credentials``' password to every other pool of ``server`` (lower-case)
        kept with the same user: the newest password the management server gave for an
        account on a server is that account's (changed on the file server since the other
        pools were registered), and the old one would be refused after a restart. The
        pools (uuids) whose credentials changed."""
        changed = [key for key, account in self._credentials.items()
                   if (other := self._pools.get(key)) is not None
                   and _server_of(other.root) == server
                   and locations.same_user(account, credentials) and account != credentials]
        for key in changed:
            self._credentials[key] = credentials
        return changed

    def remove(self, pool_uuid: str) -> bool:
        """Forget the pool, and its credentials; False when it was not registered."""
        with self._lock:
            key = pool_uuid.lower()
            if self._pools.pop(key, None) is None:
                return False
            self._write()
            if self._credentials.pop(key, None) is not None:
                self._write_credentials()
            self._remove_credential_copies()
            return True

    def _write(self) -> None:
        stored: dict[str, object] = {key: asdict(pool) for key, pool in self._pools.items()}
        if self._local_uuid is not None:
            stored[self._local_uuid] = {_LOCAL_MARK: True}
        try:
            _replace(self._path, ".pools-", stored)
        except OSError as error:  # a full disk, a read-only folder: served from memory
            log.warning("cannot record the storage pools in %s (%s): the change is served "
                        "now but not kept across a restart; the next change writes them "
                        "all again", self._path, error.strerror or error)

    def _write_credentials(self) -> None:
        """The kept credentials, written as a secret (``_replace`` with ``private``); with
        none left, no file."""
        path = self._credentials_path
        if path is None:
            return
        stored = {key: {"user": account.user, "domain": account.domain,
                        "password": account.password}
                  for key, account in self._credentials.items()}
        try:
            if stored:
                _replace(path, ".pool-credentials-", stored, private=True)
            else:
                path.unlink(missing_ok=True)
                self._remove_credential_copies()
        except (OSError, AgentError) as error:  # a full disk; an access list refused
            log.warning("cannot keep the SMB pools' credentials in %s (%s): the change is "
                        "served now; after a restart a pool whose credentials were not "
                        "kept waits for the management server to register it again",
                        path, getattr(error, "strerror", None) or error)


    def _remove_credential_copies(self) -> None:
        """Remove the set-aside copies of the credentials file (``<name>.unreadable-<time>``):
        they hold passwords, of this pool too, that nothing reads; a pool removed (or no
        credentials left to keep) must not leave its password on the disk in them. One that
        cannot be removed is named in a warning."""
        path = self._credentials_path
        if path is None:
            return
        for copy in _copies_of(path):
            try:
                copy.unlink()
            except OSError as error:
                log.warning("cannot remove %s (%s): it may hold SMB pools' passwords; "
                            "delete it", copy, error.strerror or error)
            else:
                log.info("removed %s: a copy of the SMB pools' credentials set aside "
                         "unread, which the removed pool's password may be in", copy)


class BuildJournal:
    """The VMs a StartCommand is building now (``building.json``): written before the VM is
    defined, with the GUID Hyper-V gave the definition once it is made (``defined``),
    cleared once it runs or was removed again, so a VM that a killed process left
    half-built is known at the next start, by GUID: Hyper-V keeps no name unique, and
    another VM of the name may be beside it. With nothing pending there is no file, so a
    start that builds alone creates it and removes it and never renames over a file
    (which on ext4 waits for the disk's write-back of other data); the GUID is written
    into the file ``begin`` made, in place (``_grow_in_place``), not renamed over it.

    The file is a JSON list: a VM not defined yet is its name, a defined one
    ``{"name": ..., "guid": ...}`` (a name alone is also what earlier versions wrote)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._names: dict[str, tuple[str, str | None]] = {
            name.casefold(): (name, guid) for name, guid in self._read()}

    def _read(self) -> list[tuple[str, str | None]]:
        data = _read_json(self._path, list, "a VM a killed start left half-built is not "
                          "removed at this start; its next StartCommand builds it again")
        entries: list[tuple[str, str | None]] = []
        for item in data or ():
            if isinstance(item, dict):
                guid = item.get("guid")
                entries.append((str(item.get("name", "")), str(guid) if guid else None))
            else:
                entries.append((str(item), None))
        return [(name, guid) for name, guid in entries if name]

    def pending(self) -> tuple[str, ...]:
        """The VMs whose building began and did not end, as named then."""
        with self._lock:
            return tuple(name for name, _ in self._names.values())

    def guid(self, vm_name: str) -> str | None:
        """The GUID of the definition the building of ``vm_name`` made (``defined``); None
        before it was made, or when ``vm_name`` is not pending."""
        with self._lock:
            return self._names.get(vm_name.casefold(), ("", None))[1]

    def begin(self, vm_name: str) -> None:
        """The VM's building begins: no definition of it is made yet."""
        self._change(vm_name, (vm_name, None))

    def defined(self, vm_name: str, guid: str) -> None:
        """The building of ``vm_name`` made the definition ``guid``."""
        self._change(vm_name, (vm_name, guid))

    def end(self, vm_name: str) -> None:
        """The VM runs, or was removed again; a name not pending is fine."""
        self._change(vm_name, None)

    def _change(self, vm_name: str, entry: tuple[str, str | None] | None) -> None:
        with self._lock:
            key = vm_name.casefold()
            before = self._names.get(key)
            if before == entry:
                return
            if entry is not None:
                self._names[key] = entry
            else:  # pending, as ``before`` differs from no entry
                del self._names[key]
            try:
                entries = sorted(
                    (name if guid is None else {"name": name, "guid": guid}
                     for name, guid in self._names.values()),
                    key=lambda item: item if isinstance(item, str) else item["name"])
                if entry is not None and before is not None and before[1] is None \
                        and _grow_in_place(self._path, entries):
                    return  # a GUID added to what ``begin`` wrote
                if self._names:
                    # not flushed to the disk: written three times by every StartCommand,
                    # and after a power loss a VM it no longer names is rebuilt by its next
                    # StartCommand
                    _replace(self._path, ".building-", entries, flush=False)
                else:  # nothing pending: no file (and the next write renames over none)
                    self._path.unlink(missing_ok=True)
            except OSError as error:  # a full disk: the VM is built all the same
                log.warning("cannot record the VMs being built in %s (%s): a VM a killed "
                            "start leaves half-built is rebuilt by its next StartCommand",
                            self._path, error.strerror or error)


def hold(state_dir: Path, hint: str) -> DirectoryLock:
    """Hold ``state_dir`` for this process (its files are written from what the holder
    keeps in memory, so a second writer's changes would be lost); DirectoryInUse naming
    the holder and ``hint`` (what to do) when another process holds it."""
    return DirectoryLock.take(state_dir, LOCK_FILE, "the agent's state directory", hint)


def agent_id(state_dir: Path) -> str:
    """This agent's short name (8 hex digits), made once and kept in ``agent-id``: the
    files it writes aside on shared pools carry it, so it knows its own."""
    path = state_dir / "agent-id"
    try:
        text = path.read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        text = None
    if text is not None and len(text) == 8 and all(ch in "0123456789abcdef" for ch in text):
        return text
    made = secrets.token_hex(4)
    if text is not None:
        aside = _aside_note(path, set_aside(path, UNREADABLE)) if text else ""
        log.warning("%s holds no agent id (%s)%s: this agent is now %s, and files an "
                    "interrupted copy left aside on shared pools under the old id are no "
                    "longer known as its own", path, _shown(text) if text else "it is empty",
                    aside, made)
    try:
        _replace(path, ".agent-id-", made)
    except OSError as error:  # a full disk: this run has its name all the same
        log.warning("cannot keep this agent's id in %s (%s): it is %s until it stops, and "
                    "files an interrupted copy of this run leaves aside on shared pools are "
                    "not known as its own at the next start", path, error.strerror or error,
                    made)
    return made


def kept_private_ip(state_dir: Path) -> str | None:
    """The address the management server last registered this host under, as
    ``keep_private_ip`` kept it in ``private-ip``; None when none was kept or the file
    holds no IP address."""
    path = state_dir / "private-ip"
    try:
        text = path.read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("cannot read %s (%s): heartbeats wait for the next StartupCommand",
                    path, error.strerror or error)
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        log.warning("%s holds no IP address (%s): heartbeats wait for the next "
                    "StartupCommand", path, _shown(text) if text else "it is empty")
        return None


def keep_private_ip(state_dir: Path, ip: str) -> None:
    """Keep ``ip`` (an IP address) in ``private-ip`` for ``kept_private_ip``."""
    _replace(state_dir / "private-ip", ".private-ip-", str(ipaddress.ip_address(ip)))


def sweep_temporaries(state_dir: Path) -> int:
    """Remove the files this module wrote aside in ``state_dir`` and never renamed (their
    process was killed); how many. Call it before anything writes there."""
    removed = 0
    for entry in state_dir.glob(".*"):
        if entry.name.startswith(_TEMPORARY_PREFIXES) and entry.is_file():
            entry.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", entry)
            removed += 1
    return removed


def _grow_in_place(path: Path, data: object) -> bool:
    """Write ``data`` as JSON over the file ``path`` from its start, when that is no
    shorter than the file (what is there is only added to: a build journal's GUID); False,
    nothing written, when it would be shorter or there is no file. Not flushed, and not
    renamed over the file: on ext4 a rename over a file, or a file cut to nothing, has the
    kernel write the new data back first (its ``auto_da_alloc``), which waits behind the
    disk's write-back of other data (a copy's). One write() of a few hundred bytes: a
    process killed leaves the old content or the new; a power loss may leave neither,
    which the reader sets aside with a warning (``_read_json``), as for an unflushed
    rename."""
    text = json.dumps(data, indent=1, sort_keys=True).encode()
    try:
        with path.open("r+b", buffering=0) as out:
            if len(text) < os.fstat(out.fileno()).st_size:
                return False
            out.write(text)
    except FileNotFoundError:
        return False
    return True


def _replace(path: Path, prefix: str, data: object, flush: bool = True,
             private: bool = False) -> None:
    """Write ``data`` as JSON (a bare string as text) aside, flushed to the disk (unless
    ``flush`` is False), then rename it to ``path``: after a power loss, ``path`` holds the
    old content or the new, never an empty file. The file aside is made readable by this
    account only (``mkstemp``: 0600); a ``private`` one (a secret) gets on Windows, where
    the mode is ignored, the TLS key's protected access list before a byte is written
    (ConfigError, nothing left aside, when Windows refuses it). A rename keeps both."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        if private and _WINDOWS:
            from hyperv_agent import winacl  # pywin32: imported on Windows only

            try:
                winacl.restrict(Path(temporary))
            except BaseException:
                os.close(handle)  # so that the file aside can be removed
                raise
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            if isinstance(data, str):
                out.write(data)
            else:
                json.dump(data, out, indent=1, sort_keys=True)
            if flush:
                out.flush()
                os.fsync(out.fileno())
        Path(temporary).replace(path)
    except BaseException:  # a full disk: the old file stays, and nothing is left aside
        Path(temporary).unlink(missing_ok=True)
        raise
    if flush:
        _flush_folder(path.parent)


def _flush_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (the rename just made) to the disk. On Windows a folder
    cannot be opened for this, and NTFS journals the rename (MoveFileEx) itself."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # a file system that cannot flush a folder: the rename is made anyway
        pass
    finally:
        os.close(descriptor)


def _read_json(path: Path, shape: type[_Shape], instead: str) -> _Shape | None:
    """``path``'s JSON when it has the ``shape`` this version writes; None when there is no
    such file, or, with a warning naming the file and ``instead`` (what the agent does
    without it), when its content is no such JSON (the content kept aside first). A file
    that cannot be read (access denied) is an OSError: starting without it would write
    over it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    data = _json_of(raw, shape)
    if not isinstance(data, str):
        return data
    problem = data
    if raw.strip():
        aside = _aside_note(path, set_aside(path, UNREADABLE))
    else:  # blank: nothing to keep, and no warning again at the next start
        aside = ""
        with contextlib.suppress(OSError):
            path.unlink()
    log.warning("%s cannot be read: %s%s; %s", path, problem, aside, instead)
    return None


def _json_of(raw: bytes, shape: type[_Shape]) -> _Shape | str:
    """The JSON of a state file's bytes when it has the ``shape`` this version writes,
    else what is wrong with it (a text for "... cannot be read: <text>")."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return "it is empty" if not raw.strip() else f"it is not JSON ({error})"
    if isinstance(data, shape):
        return data
    return f"it holds a JSON {type(data).__name__}, not a {shape.__name__}"


def _read_json_as_is(path: Path) -> dict[str, Any]:
    """The JSON object of the state file ``path``, read only (a diagnostic's view:
    nothing kept aside, nothing rewritten, as ``_read_json`` does at a start); empty when
    there is no file. AgentError naming the file (never its content) when it cannot be
    read or is not the JSON object this version writes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise AgentError(f"{path} cannot be read: {error.strerror or error}") from None
    data = _json_of(raw, dict)
    if isinstance(data, str):
        raise AgentError(f"{path} cannot be read: {data}")
    return data


def stored_pools(path: Path) -> dict[str, RegisteredPool]:
    """The pools the registry file ``path`` holds, read only (a diagnostic's view: nothing
    kept aside, nothing rewritten), without the local pool's mark and the roots
    registration would refuse; empty when there is no file. AgentError naming the file
    when it cannot be read or is not the JSON object this version writes."""
    data = _read_json_as_is(path)
    return {str(key): pool for key, value in data.items()
            if (pool := _pool_of(value)) is not None and root_problem(pool.root) is None}


def stored_shares(state_dir: Path) -> tuple[ShareLocation, ...]:
    """The shared pools of ``state_dir``'s registry whose credentials are kept, as their
    shares with those credentials, read only (a diagnostic's view, as ``stored_pools``);
    empty when none are kept. AgentError naming the file (never its content) when it
    cannot be read or is not the JSON object this version writes."""
    pools = stored_pools(state_dir / "pools.json")
    data = _read_json_as_is(state_dir / CREDENTIALS_FILE)
    return tuple(share for key, value in data.items()
                 if (pool := pools.get(str(key).lower())) is not None
                 and (account := _credentials_of(value)) is not None
                 and (share := _share_of(pool.root, account)) is not None)


def _server_of(root: str) -> str:
    """The server of a UNC root, lower-case ("" for a local folder)."""
    return root[2:].split("\\", 1)[0].lower() if root.startswith("\\\\") else ""


def _share_of(root: str, account: Credentials) -> ShareLocation | None:
    """The share of a pool's UNC ``root``, reached with ``account``; None for a drive
    path."""
    location = locations.root_to_register("", root, "Filesystem")
    if not isinstance(location, ShareLocation):
        return None
    return replace(location, credentials=account)


@dataclass(frozen=True)
class SetAside:
    """What ``set_aside`` did: the copy made (None when the file could not be moved), and
    the older copies of the same file it removed to keep ``KEPT_ASIDE``."""

    copy: Path | None
    removed: tuple[Path, ...] = ()


def set_aside(path: Path, why: str) -> SetAside:
    """Move ``path`` to ``<name>.<why>-<time>`` beside it, for the operator, then remove
    that file's older copies of any reason beyond the newest ``KEPT_ASIDE``. A file that
    cannot be moved (access denied) stays where it is: the agent starts all the same."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    count = 1
    while aside.exists():  # set aside twice in one second
        count += 1
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{count}")
    try:
        path.rename(aside)
    except OSError:
        return SetAside(None)
    removed = []
    for older in _copies_of(path)[KEPT_ASIDE:]:
        try:
            older.unlink()
        except OSError:
            continue
        removed.append(older)
    return SetAside(aside, tuple(removed))


def _copies_of(path: Path) -> list[Path]:
    """The set-aside copies of ``path``, newest first (their names end in the time, local
    and to the second, and a count when two fell in one second)."""
    copies = [entry for entry in path.parent.glob(f"{path.name}.*-*")
              if _why_of(entry.name[len(path.name) + 1:]) is not None and entry.is_file()]
    return sorted(copies, key=lambda entry: _stamp_of(entry.name), reverse=True)


def _why_of(suffix: str) -> str | None:
    """The reason of a copy's name suffix (``unreadable-20250101-120000``), or None when it
    is no set-aside copy's."""
    why, _, stamp = suffix.partition("-")
    date, _, rest = stamp.partition("-")
    clock, _, count = rest.partition("-")
    if (why in (UNREADABLE, UNUSABLE) and len(date) == 8 and len(clock) == 6
            and (date + clock + count).isdigit()):
        return why
    return None


def _stamp_of(name: str) -> tuple[str, int]:
    """A copy's time and count, to order copies by (whatever the reason in the name)."""
    parts = name.rsplit(".", 1)[-1].split("-")
    return parts[1] + parts[2], int(parts[3]) if len(parts) > 3 else 1


def set_aside_copies(state_dir: Path) -> list[Path]:
    """The copies ``set_aside`` keeps in ``state_dir`` and its ``tls`` folder, by name."""
    found = []
    for folder in (state_dir, state_dir / "tls"):
        if folder.is_dir():
            found += [entry for entry in folder.iterdir() if entry.is_file()
                      and "." in entry.name
                      and _why_of(entry.name.rsplit(".", 1)[-1]) is not None]
    return sorted(found)


def _aside_note(path: Path, done: SetAside) -> str:
    """"; kept as <copy>[, N older copies removed]" for a warning; "" when none was made."""
    if done.copy is None:
        return f"; it could not be moved aside, and stays as {path.name}"
    removed = (f" ({len(done.removed)} older copies removed: "
               f"{', '.join(older.name for older in done.removed)}; the newest {KEPT_ASIDE} "
               "are kept)") if done.removed else ""
    return f"; kept as {done.copy.name}{removed}"


def _shown(value: object) -> str:
    """``value`` for a log line, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def root_problem(root: str) -> str | None:
    """Why registration would refuse the stored ``root``, or None when it would take it."""
    try:
        locations.root_to_register("", root, "Filesystem")
    except AgentError as error:
        return str(error)
    return None


def _credentials_of(value: object) -> Credentials | None:
    """Credentials as ``pool-credentials.json`` keeps them: an object with a non-empty
    ``user``, a ``domain`` and a ``password``, all strings."""
    if not isinstance(value, dict):
        return None
    user, domain, password = (value.get(name) for name in ("user", "domain", "password"))
    if not (isinstance(user, str) and user and isinstance(domain, str)
            and isinstance(password, str)):
        return None
    return Credentials(user=user, domain=domain, password=password)


def _pool_of(value: object) -> RegisteredPool | None:
    """A pool as stored: an object with its fields, or the bare root an older version
    wrote."""
    if isinstance(value, str):
        return RegisteredPool(root=value)
    if isinstance(value, dict) and isinstance(value.get("root"), str):
        return RegisteredPool(**{key: str(value.get(key) or "") for key in
                                 ("root", "pool_type", "host", "path")})
    return None
