"""Where a DataTO's file lives on the host (protocol §11 "FullFileName"), confined to the
pool or share its data store names.

Every storage and VM command resolves volume, template and ISO files here, so one set of
rules decides what a request may touch: a path that leaves its store is
``PathNotAllowed``; a TO that names no usable store is ``InvalidRequest``.
"""

from __future__ import annotations

import ntpath

from hyperv_agent.cloudstack.objects import (
    NfsTO,
    PrimaryDataStoreTO,
    TemplateObjectTO,
    VolumeObjectTO,
)
from hyperv_agent.cloudstack.storage_objects import WrappedTO
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.hostfs import locations
from hyperv_agent.hostfs.api import HostFiles

DEFAULT_VOLUME_FORMAT = "vhdx"


def store_root(store: WrappedTO | None, what: str) -> str:
    """The host folder (local or UNC) of a primary pool or a cifs image store."""
    if isinstance(store, PrimaryDataStoreTO):
        return locations.from_primary_store(store.host or "", store.path or "",
                                            str(store.pool_type or "")).root
    if isinstance(store, NfsTO) and store.url:
        return locations.parse_cifs_url(store.url).root
    raise InvalidRequest(f"{what}: not on a primary pool or a cifs image store")


def extension(fmt: object, default: str = DEFAULT_VOLUME_FORMAT) -> str:
    """``.vhd`` / ``.vhdx`` / ``.iso`` for a DataTO ``format``."""
    return "." + str(fmt or default).lower()


def volume_file(volume: VolumeObjectTO, what: str) -> str:
    """``<pool>\\<path or uuid>.<format>`` for a volume on a primary pool."""
    store = volume.data_store
    if not isinstance(store, PrimaryDataStoreTO):
        raise InvalidRequest(f"{what}: the volume is not on a primary data store")
    root = store_root(store, what)
    name = volume.path or volume.uuid
    if not name:
        raise InvalidRequest(f"{what}: the volume has neither path nor uuid")
    suffix = extension(volume.format)
    if not name.lower().endswith(suffix):
        name += suffix
    return confined(root, name)


def template_file(template: TemplateObjectTO, what: str) -> str:
    """An ISO or template file on a cifs image store or a primary pool, as named by
    ``path`` (used as given: image-store paths carry their own extension)."""
    if not template.path:
        raise InvalidRequest(f"{what}: the template has no path")
    return confined(store_root(template.image_data_store, what), template.path)


def confined(root: str, path: str) -> str:
    """``path`` inside ``root``: relative paths are joined, absolute ones must lie inside."""
    text = path.replace("/", "\\")
    if text.startswith("\\") or text[1:2] == ":":
        return locations.confine_absolute(root, path)
    return locations.confine(root, path)


# --- stores with credentials, templates on primary, volumes on image stores -------------

IMAGE_SUFFIXES = (".vhd", ".vhdx", ".iso")


def store_location(store: WrappedTO | None, what: str) -> locations.PoolLocation:
    """The typed location of a primary pool or a cifs image store (credentials kept)."""
    if isinstance(store, PrimaryDataStoreTO):
        return locations.from_primary_store(store.host or "", store.path or "",
                                            str(store.pool_type or ""))
    if isinstance(store, NfsTO) and store.url:
        return locations.parse_cifs_url(store.url)
    raise InvalidRequest(f"{what}: not on a primary pool or a cifs image store")


def reach(files: HostFiles, store: WrappedTO | None, what: str) -> str:
    """``store_root``, after handing the credentials its URL carries to ``files``."""
    location = store_location(store, what)
    if isinstance(location, locations.ShareLocation) and location.credentials is not None:
        files.use_credentials(location)
    return location.root


async def existing_root(files: HostFiles, store: WrappedTO | None, what: str) -> str:
    """``reach``, and InvalidRequest when that folder is missing or unreachable."""
    root = reach(files, store, what)
    if not await files.exists(root):
        raise InvalidRequest(f"{what}: the pool folder {root} does not exist or cannot "
                             "be reached from this host")
    return root


def primary_template_file(template: TemplateObjectTO, what: str) -> str:
    """``<pool>\\<path>.<format>`` for a template on a primary pool (§11)."""
    if not isinstance(template.image_data_store, PrimaryDataStoreTO):
        raise InvalidRequest(f"{what}: the template is not on a primary data store")
    if not template.path:
        raise InvalidRequest(f"{what}: the template has no path")
    name = template.path
    suffix = extension(template.format)
    if not name.lower().endswith(suffix):
        name += suffix
    return confined(store_root(template.image_data_store, what), name)


async def locate_volume(files: HostFiles, volume: VolumeObjectTO, what: str) -> str:
    """The file of a volume on a primary pool (``volume_file``) or a cifs image store.

    On an image store (§11): ``<UNC>\\<path>``, or ``<UNC>\\<path>\\<uuid>`` when the
    first does not exist; a name without an extension takes ``.<format>``, or, without a
    format, the extension of the single ``<uuid>.vhd*`` file found in its folder.
    """
    if isinstance(volume.data_store, PrimaryDataStoreTO):
        return volume_file(volume, what)
    root = reach(files, volume.data_store, what)
    if not volume.path:
        raise InvalidRequest(f"{what}: the volume on the image store has no path")
    candidate = confined(root, volume.path)
    found = await files.stat(candidate)
    if (found is None or found.is_dir) and volume.uuid:
        candidate = confined(root, f"{volume.path}\\{volume.uuid}")
    if ntpath.splitext(candidate)[1].lower() in IMAGE_SUFFIXES:
        return candidate
    if volume.format:
        return candidate + extension(volume.format)
    return await _probe(files, candidate, volume.uuid or ntpath.basename(candidate), what)


async def _probe(files: HostFiles, candidate: str, stem: str, what: str) -> str:
    folder = ntpath.dirname(candidate)
    names = await files.list_dir(folder) if await files.exists(folder) else []
    found = [n for n in names if n.lower().startswith(stem.lower() + ".vhd")
             and ntpath.splitext(n)[1].lower() in (".vhd", ".vhdx")]
    if len(found) != 1:
        raise InvalidRequest(f"{what}: the volume has no format and {len(found)} files "
                             f"named {stem}.vhd* are in {folder}")
    return confined(folder, found[0])
