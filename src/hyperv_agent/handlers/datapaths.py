"""Where a request's files live on the host (protocol §11), and the rule that
keeps them inside the pools.

A path from a request is served only below a registered root:

* a primary pool: the pool the registry (``state.PoolRegistry``) holds under the TO's
  uuid, else the registered pool (the local pool included) whose root the TO's
  host/path/poolType give by the rule of registration. A TO whose root is not
  registered is ``PathNotAllowed`` naming that root;
* the cifs image store a command names, for reading templates, ISOs and volumes, and
  for the volume and template copies CopyCommand writes to it (never an administrative
  share such as ``C$``);
* ``local_secondary_storage_path``, for reading nfs:// templates;
* the config drive cache (``[agent] config_drive_cache_path``), for the config drive ISOs
  the management server puts in the host's cache (HandleConfigDriveIsoCommand with
  ``preferHostCache``, and a VM whose ``configDriveLocation`` is HOST).

Below its root a path is confined lexically (``hostfs.locations``: no ``..`` out, no
absolute path elsewhere, no other drive or share, no stream or device names), then on
the host: a symbolic link, junction or reparse point on the way that leads out of the
root is ``PathNotAllowed`` (``HostFiles.link_out``). A file's extension comes from the
allow-list of disk and ISO formats (``hostfs.images``), never from a request's
``format`` text, and every file a request names ends in one of them.
"""

from __future__ import annotations

import ntpath
from collections.abc import Sequence
from dataclasses import dataclass

from hyperv_agent.cloudstack.enums import ConfigDriveLocation
from hyperv_agent.cloudstack.objects import (
    DiskTO,
    NfsTO,
    PrimaryDataStoreTO,
    StorageFilerTO,
    TemplateObjectTO,
    VolumeObjectTO,
)
from hyperv_agent.cloudstack.storage_objects import WrappedTO
from hyperv_agent.errors import AgentError, InvalidRequest, PathNotAllowed
from hyperv_agent.handlers.locks import at_most
from hyperv_agent.hostfs import images, locations
from hyperv_agent.hostfs.api import HostFiles
from hyperv_agent.state import PoolRegistry

#: The fix for a pool the management server registered but this agent no longer knows
#: (its state directory was lost or replaced while the host stayed connected): the MS
#: registers a host's pools when the host connects, never on a ping.
#: The folder CloudStack names every config drive ISO in, relative to its root
#: (ConfigDrive.CONFIGDRIVEDIR: ``configdrive/<VM name>.iso``).
CONFIG_DRIVE_DIR = "configdrive"

REREGISTER_HINT = ("if the agent's state directory was lost or replaced (a reinstall), "
                   "reconnect the host in CloudStack (reconnectHost): the management server "
                   "registers its pools again when the host connects")


def confined(root: str, path: str) -> str:
    """``path`` inside ``root``: relative paths are joined, absolute ones must lie inside.
    Lexical only: ``DataPaths.file_in`` also checks suffix and links."""
    text = path.replace("/", "\\")
    if text.startswith("\\") or text[1:2] == ":":
        return locations.confine_absolute(root, path)
    return locations.confine(root, path)


def is_config_drive(path: str) -> bool:
    """Whether a relative ISO path is a config drive's (``configdrive/<VM name>.iso``), as
    KVM's agent tells it (the path starts with ConfigDrive.CONFIGDRIVEDIR)."""
    return path.replace("\\", "/").startswith(CONFIG_DRIVE_DIR)


def config_drive_on_host(location: str | None) -> bool:
    """Whether a VirtualMachineTO's ``configDriveLocation`` puts its config drive in the
    host's cache."""
    return str(location or "").upper() == ConfigDriveLocation.HOST


def check_suffix(path: str, suffixes: tuple[str, ...], what: str) -> None:
    """PathNotAllowed unless the file name ``path`` ends in one of ``suffixes``."""
    if not path.lower().endswith(suffixes):
        raise PathNotAllowed(f"{what}: {locations.quoted(ntpath.basename(path))} is not a "
                             f"{', '.join(suffixes)} file")


@dataclass(frozen=True)
class _PoolFields:
    """What a TO says about its primary pool."""

    uuid: str
    host: str
    path: str
    pool_type: str


def _pool_fields(store: WrappedTO | StorageFilerTO | None, what: str) -> _PoolFields:
    if isinstance(store, PrimaryDataStoreTO):
        return _PoolFields(store.uuid or "", store.host or "", store.path or "",
                           str(store.pool_type or ""))
    if isinstance(store, StorageFilerTO):
        return _PoolFields(store.uuid or "", store.host or "", store.path or "",
                           str(store.type or ""))
    raise InvalidRequest(f"{what}: not on a primary data store")


#: Folders ``DataPaths`` lists at a time for one command.
LISTED_AT_ONCE = 8
#: Why ``volume_locators`` leaves out a locator that names no disk file.
_NO_FILE = "no such disk file in the pool"


class DataPaths:
    """Request paths to host paths, below registered roots only (see the module notes).

    ``pools`` holds the pool roots; ``secondary_path`` is ``local_secondary_storage_path``
    (empty: not configured); ``config_drive_cache`` the host folder of config drive ISOs
    in the host's cache (empty: none). Credentials a pool's or image store's URL carries
    are handed to ``files`` (in memory) when its root is used.
    """

    def __init__(self, files: HostFiles, pools: PoolRegistry, secondary_path: str = "",
                 config_drive_cache: str = "") -> None:
        self.files = files
        self.pools = pools
        self.secondary_path = secondary_path
        self.config_drive_cache = config_drive_cache

    # --- roots --------------------------------------------------------------------------

    def pool_root(self, store: WrappedTO | StorageFilerTO | None, what: str) -> str:
        """The registered root of the primary pool ``store`` names (see the module notes);
        PathNotAllowed naming the root when it is not registered."""
        fields = _pool_fields(store, what)
        by_uuid = self.pools.get(fields.uuid) if fields.uuid else None
        try:
            location = locations.from_primary_store(fields.host, fields.path, fields.pool_type)
        except AgentError:
            if by_uuid is None:
                raise
            return by_uuid.root
        registered = by_uuid or self.pools.by_root(location.root)
        if registered is None:
            raise PathNotAllowed(f"{what}: the pool root {location.root} is not registered on "
                                 "this host (the local pool and pools the management server "
                                 f"registered with ModifyStoragePoolCommand are); "
                                 f"{REREGISTER_HINT}")
        if locations.same_folder(registered.root, location.root):
            self._hand_credentials(location)
        return registered.root

    def pool_root_by_uuid(self, pool_uuid: str | None, what: str) -> str:
        """The root of the pool registered under ``pool_uuid``, the local pool's included
        (for commands that name a pool by its uuid alone); PathNotAllowed naming the uuid
        when no pool is registered under it."""
        registered = self.pools.by_uuid(pool_uuid) if pool_uuid else None
        if registered is None:
            raise PathNotAllowed(f"{what}: no storage pool {pool_uuid or '(none named)'} is "
                                 "registered on this host (the local pool and pools the "
                                 "management server registered with ModifyStoragePoolCommand "
                                 f"are); {REREGISTER_HINT}")
        return registered.root

    def folder_root(self, folder: str, what: str) -> str:
        """The registered root that the local folder ``folder`` of a request is (a
        ``localPath`` or ``mountPoint``); PathNotAllowed naming it when it is not one."""
        root = locations.from_primary_store("", folder, "Filesystem").root
        registered = self.pools.by_root(root)
        if registered is None:
            raise PathNotAllowed(f"{what}: {root} is not the root of a pool registered on "
                                 "this host")
        return registered.root

    def image_store(self, url: str | None, what: str) -> locations.ShareLocation:
        """The cifs image store ``url`` a command names (reading, or CopyCommand's volume
        and template copies to it); its credentials handed over. A malformed URL or an
        administrative share: refused."""
        if not url:
            raise InvalidRequest(f"{what}: the image store's URL is missing")
        store = locations.parse_cifs_url(url)
        if locations.is_admin_share(store.share):
            raise PathNotAllowed(f"{what}: \\\\{store.server}\\{store.share} is an "
                                 "administrative share, not an image store")
        self._hand_credentials(store)
        return store

    def secondary_root(self) -> str:
        """``local_secondary_storage_path``; InvalidRequest when it is not configured."""
        if not self.secondary_path.strip():
            raise InvalidRequest("nfs:// templates are read from local_secondary_storage_path,"
                                 " which is not configured; set it to the folder where the "
                                 "NFS image store is mounted on this host")
        return locations.from_primary_store("", self.secondary_path, "Filesystem").root

    def config_drive_folders(self) -> list[str]:
        """The folders config drive ISOs are written in: ``configdrive`` below the root of
        each registered pool and below the config drive cache (``CONFIG_DRIVE_DIR``, the
        folder CloudStack names every config drive in). An ISO is written aside there
        before it is renamed into place, so a killed agent leaves its aside file there, not
        in the root."""
        roots = list(self.pools.all_roots())
        if self.config_drive_cache.strip():
            roots.append(self.host_cache_root("config drive"))
        folders: dict[str, str] = {}
        for root in roots:
            folder = locations.confine(root, CONFIG_DRIVE_DIR)
            folders.setdefault(folder.casefold(), folder)
        return list(folders.values())

    def host_cache_root(self, what: str) -> str:
        """The config drive cache's folder; InvalidRequest when there is none."""
        if not self.config_drive_cache.strip():
            raise InvalidRequest(f"{what}: this agent has no config drive cache "
                                 "([agent] config_drive_cache_path)")
        return locations.from_primary_store("", self.config_drive_cache, "Filesystem").root

    async def existing(self, root: str, what: str) -> str:
        """``root``, or InvalidRequest when that folder is missing or unreachable."""
        if not await self.files.exists(root):
            raise InvalidRequest(f"{what}: the folder {root} does not exist or cannot be "
                                 "reached from this host")
        return root

    async def absent_for_sure(self, root: str, path: str, what: str,
                              holder: str = "pool") -> None:
        """Nothing, when ``path`` below ``root`` was found missing and ``root`` is there;
        InvalidRequest naming ``root`` (the root of a ``holder``: a pool, an image store)
        when it is not, so a file found missing is never taken for gone, nor said not to
        exist, while what holds it cannot be seen. Windows reports a share whose
        server is down, or that was taken away, as a path not found (ERROR_BAD_NETPATH
        and ERROR_BAD_NET_NAME read as ENOENT), as it does a local pool's folder on a
        disk that went offline: every file below it reads as absent. 1 call."""
        if not await self.files.exists(root):
            raise InvalidRequest(f"{what}: {path} was not found, but neither was its "
                                 f"{holder}'s root {root}, which does not exist or cannot be "
                                 "reached from this host; whether the file is there cannot be "
                                 "told, nothing was changed")

    async def present(self, root: str, path: str, what: str, holder: str = "pool", *,
                      missing: str = "") -> str:
        """``path`` (below ``root``, the root of a ``holder``), when that file (or folder)
        is there; InvalidRequest naming ``path`` when it does not exist (``missing``, when
        given, is that answer's text), or, when ``root`` cannot be seen either, naming
        ``root`` as what cannot be reached (``absent_for_sure``), so a file on a share
        that went away is not said not to exist. 1 call (+ 1 when the file is not
        found)."""
        return await self.first_present(root, (path,), what, holder, missing=missing)

    async def first_present(self, root: str, candidates: Sequence[str], what: str,
                            holder: str = "pool", *, missing: str = "",
                            suffixes: tuple[str, ...] | None = None) -> str:
        """The first of ``candidates`` (each below ``root``, the root of a ``holder``)
        that is there, tried in order; when none is, as ``present``: InvalidRequest
        naming the first (``missing``, when given, is that answer's text), or naming
        ``root`` when it cannot be seen either. The one check of a file that a command
        needs on a pool or image store. 1 call a candidate tried (+ 1 when none is
        found).

        With ``suffixes``, the candidates are paths as a command names them, checked as
        ``file_in`` checks one: each is confined to ``root`` and must end in one of
        ``suffixes`` (before any is tried), and no link on the way to a candidate may lead
        out of ``root``, checked as it is tried, before it is looked for (so no link out
        is followed): a candidate after the one found costs nothing. +1 call a candidate
        tried."""
        found = await self.first_found(root, candidates, what, holder, suffixes=suffixes)
        if found is None:
            first = candidates[0] if suffixes is None else confined(root, candidates[0])
            raise InvalidRequest(missing or f"{what}: the file {first} does not exist")
        return found

    async def first_found(self, root: str, candidates: Sequence[str], what: str,
                          holder: str = "pool", *,
                          suffixes: tuple[str, ...] | None = None) -> str | None:
        """As ``first_present``, for a file that may be gone (a delete): None, rather than
        InvalidRequest, when none of ``candidates`` is there and ``root`` is seen
        (``absent_for_sure``: a file is never taken for gone while its ``holder`` cannot
        be seen)."""
        if suffixes is not None:
            candidates = [confined(root, candidate) for candidate in candidates]
            for candidate in candidates:
                check_suffix(candidate, suffixes, what)
        for candidate in candidates:
            if suffixes is not None:
                await self.no_link_out(root, candidate, what)
            if await self.files.exists(candidate):
                return candidate
        await self.absent_for_sure(root, candidates[0], what, holder)
        return None

    def _hand_credentials(self, location: locations.PoolLocation) -> None:
        if isinstance(location, locations.ShareLocation) and location.credentials is not None:
            self.files.use_credentials(location)

    # --- files below a root ---------------------------------------------------------------

    async def file_in(self, root: str, path: str, what: str,
                      suffixes: tuple[str, ...] = images.IMAGE_SUFFIXES) -> str:
        """The file ``path`` (relative, or absolute inside ``root``) below ``root``: its name
        ends in one of ``suffixes`` and no link on the way leads out of ``root``."""
        found = confined(root, path)
        check_suffix(found, suffixes, what)
        await self.no_link_out(root, found, what)
        return found

    async def folder_in(self, root: str, path: str, what: str) -> str:
        """The folder ``path`` below ``root``, reached without a link out of ``root``."""
        found = confined(root, path)
        await self.no_link_out(root, found, what)
        return found

    async def no_link_out(self, root: str, path: str, what: str) -> None:
        """PathNotAllowed when a link on the way from ``root`` to ``path`` leads out."""
        link = await self.files.link_out(root, path)
        if link is not None:
            raise PathNotAllowed(f"{what}: {link} is a link leading out of {root}; links are "
                                 "not followed out of a pool or store")

    async def volume_locators(self, root: str, locators: list[str], what: str
                              ) -> tuple[dict[str, str], dict[str, str]]:
        """The disk file each volume locator (a volume's ``path`` as the MS keeps it: its
        uuid, with or without its extension) names below ``root``, and why each of the
        others names none. A name without a disk extension is ``<name>.vhdx``, else
        ``<name>.vhd``, as Windows compares names (without case). One listing per folder
        the locators name, whatever their number; a locator leading out of ``root``:
        PathNotAllowed, nothing measured. A file reached through a link out of ``root`` is
        not served. When a locator names no file, ``root`` must be seen (``absent_for_sure``):
        a pool on a share that went away lists as empty, and its volumes are not said to
        have no file then, but the answer names the root as what cannot be reached
        (InvalidRequest). The listing of ``root`` (where the MS's locators put every
        volume) has seen it already; only a root not listed, or not found when listed, is
        looked for (1 call)."""
        wanted: dict[str, tuple[str, ...]] = {}
        for locator in dict.fromkeys(locators):
            try:
                found = confined(root, locator)
            except AgentError as error:
                raise PathNotAllowed(f"{what}: {error}; nothing was measured") from error
            stem = found if found.lower().endswith(images.DISK_SUFFIXES) else None
            wanted[locator] = (stem,) if stem else (found + images.VHDX, found + images.VHD)
            for candidate in wanted[locator]:
                check_suffix(candidate, images.DISK_SUFFIXES, what)
        listed = await self._listings({ntpath.dirname(c) for c in
                                       (c for names in wanted.values() for c in names)})
        files: dict[str, str] = {}
        missing: dict[str, str] = {}
        for locator, candidates in wanted.items():
            path = next((ntpath.join(folder, name) for c in candidates
                         if (name := (listed[folder := ntpath.dirname(c)] or {}).get(
                             ntpath.basename(c).lower())) is not None), None)
            if path is None:
                missing[locator] = _NO_FILE
            elif await self.files.link_out(root, path) is not None:
                missing[locator] = "a link leading out of the pool"
            else:
                files[locator] = path
        absent = [wanted[locator][0] for locator, why in missing.items() if why == _NO_FILE]
        seen = any(names is not None and locations.same_folder(folder, root)
                   for folder, names in listed.items())
        if absent and not seen:
            await self.absent_for_sure(root, absent[0], what)
        return files, missing

    async def _listings(self, folders: set[str]) -> dict[str, dict[str, str] | None]:
        """The names in each folder, by their lower case; None for a folder not there.
        At most ``LISTED_AT_ONCE`` folders are listed at a time (the locators of one
        command may name many folders)."""
        async def names(folder: str) -> dict[str, str] | None:
            if not await self.files.exists(folder):
                return None
            return {name.lower(): name for name in await self.files.list_dir(folder)}
        ordered = sorted(folders)
        return dict(zip(ordered, await at_most(LISTED_AT_ONCE, names, ordered), strict=True))

    # --- the files TOs name -----------------------------------------------------------------

    async def volume_file(self, volume: VolumeObjectTO, what: str, *,
                          check_links: bool = True, existing: bool = False) -> str:
        """``<pool>\\<path or uuid><ext of format>`` for a volume on a primary pool.
        ``check_links`` False: lexical only (for a file that is never opened); ``existing``:
        the file must be there (``present``: a pool that cannot be reached is named as
        such, not the file said not to exist)."""
        if not isinstance(volume.data_store, PrimaryDataStoreTO):
            raise InvalidRequest(f"{what}: the volume is not on a primary data store")
        root = self.pool_root(volume.data_store, what)
        name = volume.path or volume.uuid
        if not name:
            raise InvalidRequest(f"{what}: the volume has neither path nor uuid")
        suffix = images.suffix_of_format(volume.format)
        name = name if name.lower().endswith(suffix) else name + suffix
        found = (confined(root, name) if not check_links
                 else await self.file_in(root, name, what, (suffix,)))
        return await self.present(root, found, what) if existing else found

    async def iso_file(self, template: TemplateObjectTO, what: str, *,
                       check_links: bool = True, host_cache: bool = False,
                       existing: bool = False) -> str:
        """The ISO ``path`` names (used as given) on a cifs image store or a pool; with
        ``host_cache`` (the VM's ``configDriveLocation`` is HOST) a config drive's
        (``configdrive/...``) in the config drive cache, whatever store the TO names: the
        MS names the pool it first meant even when the ISO went to the cache (KVM's agent
        reads it from its cache alike). ``existing``: the file must be there (``present``:
        a store that cannot be reached is named as such)."""
        if not template.path:
            raise InvalidRequest(f"{what}: the template has no path")
        if host_cache and is_config_drive(template.path):
            root, holder = self.host_cache_root(what), "config drive cache"
        else:
            root, holder = self._store_root(template.image_data_store, what)
        if not check_links:
            found = confined(root, template.path)
            check_suffix(found, images.ISO_SUFFIXES, what)
        else:
            found = await self.file_in(root, template.path, what, images.ISO_SUFFIXES)
        return await self.present(root, found, what, holder) if existing else found

    async def disk_image(self, disk: DiskTO, kind: str, *, check_links: bool = True,
                         what: str | None = None, host_cache: bool = False,
                         existing: bool = False) -> str:
        """The host path of a DiskTO's volume (ROOT, DATADISK) or ISO; ``what`` (by
        default ``disk <kind>``) begins the message of a refusal; ``host_cache``: the VM's
        config drive is in the host's cache (``iso_file``); ``existing``: the file must
        be there (``present``: a pool or image store that cannot be reached is named as
        such, not the file said not to exist)."""
        data = disk.data
        what = what or f"disk {kind}"
        if kind == "ISO":
            if not isinstance(data, TemplateObjectTO):
                raise InvalidRequest(f"{what}: data is not a TemplateObjectTO naming the ISO")
            return await self.iso_file(data, what, check_links=check_links,
                                       host_cache=host_cache, existing=existing)
        if not isinstance(data, VolumeObjectTO):
            raise InvalidRequest(f"{what}: data is not a VolumeObjectTO")
        return await self.volume_file(data, what, check_links=check_links, existing=existing)

    async def primary_template(self, template: TemplateObjectTO, what: str) -> str:
        """The file of a template on a primary pool, the first there of (protocol §11)
        ``<pool>\\<path>`` with its format's extension, then with ``.vhdx`` and ``.vhd``
        (``first_present``: each checked for links out of the pool only as it is tried, so
        a template found under its format's name costs one check and one look, as
        CloudStack names every template it puts in a pool); InvalidRequest naming the
        first when none is, or the pool's root when that cannot be seen either."""
        if not isinstance(template.image_data_store, PrimaryDataStoreTO):
            raise InvalidRequest(f"{what}: the template is not on a primary data store")
        if not template.path:
            raise InvalidRequest(f"{what}: the template has no path")
        root = self.pool_root(template.image_data_store, what)
        suffix = images.suffix_of_format(template.format)
        name = template.path if template.path.lower().endswith(suffix) \
            else template.path + suffix
        stem = ntpath.splitext(name)[0]
        names = list(dict.fromkeys((name, stem + ".vhdx", stem + ".vhd")))
        return await self.first_present(
            root, names, what, missing=f"Local template file missing from "
            f"{confined(root, name)}", suffixes=(*images.DISK_SUFFIXES, suffix))

    async def locate_volume(self, volume: VolumeObjectTO, what: str, *,
                            existing: bool = False) -> str:
        """The file of a volume on a primary pool (``volume_file``) or, to be read, on a
        cifs image store: ``<UNC>\\<path>``, or ``<UNC>\\<path>\\<uuid>`` when the first is
        not a file; a name without a disk extension takes its format's, or, without a
        format, that of the single ``<uuid>.vhd*`` file found in its folder (protocol §11).
        ``existing``: the file must be there (``present``: a pool or image store that
        cannot be reached is named as such, not the file said not to exist); when it is
        neither, InvalidRequest naming the volume, the image store and both files looked
        for (the second alone, for a ``path`` naming a file, is no file anyone made)."""
        if isinstance(volume.data_store, PrimaryDataStoreTO):
            return await self.volume_file(volume, what, existing=existing)
        root, holder = self._store_root(volume.data_store, what)
        if not volume.path:
            raise InvalidRequest(f"{what}: the volume on the image store has no path")
        first = candidate = confined(root, volume.path)
        found = await self.files.stat(candidate)
        if (found is None or found.is_dir) and volume.uuid:
            candidate = confined(root, f"{volume.path}\\{volume.uuid}")
        if not candidate.lower().endswith(images.DISK_SUFFIXES):
            if volume.format:
                candidate += images.disk_suffix_of_format(volume.format)
            else:
                candidate = await self._probe(root, candidate, volume.uuid, what, holder)
        path = await self.file_in(root, candidate, what, images.DISK_SUFFIXES)
        if not existing:
            return path
        looked = (f"{first} is a folder, and {path} is not there" if found is not None
                  else f"{first} is not there, nor is {path}" if path != first
                  else f"{path} is not there")
        return await self.present(
            root, path, what, holder,
            missing=f"{what}: the volume {volume.name or '(no name)'} ({volume.uuid or 'no uuid'}) "
                    f"is not on the {holder} {root}: {looked}")

    def _store_root(self, store: WrappedTO | None, what: str) -> tuple[str, str]:
        """A primary pool's registered root, or a cifs image store's root; and which it
        is (``pool``, ``image store``: the holder ``present`` names)."""
        if isinstance(store, PrimaryDataStoreTO):
            return self.pool_root(store, what), "pool"
        if isinstance(store, NfsTO) and store.url:
            return self.image_store(store.url, what).root, "image store"
        raise InvalidRequest(f"{what}: not on a primary pool or a cifs image store")

    async def _probe(self, root: str, candidate: str, uuid: str | None, what: str,
                     holder: str) -> str:
        folder = await self.folder_in(root, ntpath.dirname(candidate), what)
        stem = (uuid or ntpath.basename(candidate)).lower()
        names = await self.files.list_dir(folder) if await self.files.exists(folder) else []
        found = [n for n in names if n.lower().startswith(stem + ".vhd")
                 and n.lower().endswith(images.DISK_SUFFIXES)]
        if not names:  # an empty or absent folder: on a store that went away, every one
            await self.absent_for_sure(root, folder, what, holder)
        if len(found) != 1:
            raise InvalidRequest(f"{what}: the volume has no format and {len(found)} files "
                                 f"named {stem}.vhd* are in {folder}")
        return confined(folder, found[0])
