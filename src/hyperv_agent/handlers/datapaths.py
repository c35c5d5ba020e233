"""Where a DataTO's file lives on the host (protocol §11 "FullFileName"), confined to the
pool or share its data store names.

Every storage and VM command resolves volume, template and ISO files here, so one set of
rules decides what a request may touch: a path that leaves its store is
``PathNotAllowed``; a TO that names no usable store is ``InvalidRequest``.
"""

from __future__ import annotations

from hyperv_agent.cloudstack.objects import (
    NfsTO,
    PrimaryDataStoreTO,
    TemplateObjectTO,
    VolumeObjectTO,
)
from hyperv_agent.cloudstack.storage_objects import WrappedTO
from hyperv_agent.errors import InvalidRequest
from hyperv_agent.hostfs import locations

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
