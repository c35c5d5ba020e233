"""The Windows-only lines of the ``wmi`` backend: PyMI's ``mi`` module as a ``MiSession``.

These lines run only on a Windows host with PyMI (``pip install "hyperv-agent[windows]"``):
they are type-checked on every run and exercised only by the Windows workflow
(``tests/contract`` against local WMI, ``tests/windows``). Everything else the backend
does is in ``cim/local.py``, tested on any OS. The session talks DCOM to the local WMI
service, as os-win does through PyMI, and every operation is bounded by ``timeout_s``.
Instances are cloned as they arrive: PyMI frees them with their operation.
"""

from __future__ import annotations

import datetime
from typing import Any

import mi

from hyperv_agent.cim.local import MiClass, MiInstance


class PyMiSession:
    error: type[Exception] = mi.error

    def __init__(self, timeout_s: float) -> None:
        self._app: Any = mi.Application()
        options = self._app.create_destination_options()
        options.set_timeout(datetime.timedelta(seconds=timeout_s))
        self._session: Any = self._app.create_session(
            protocol=mi.PROTOCOL_WMIDCOM, destination_options=options)

    def query(self, namespace: str, wql: str) -> list[MiInstance]:
        with self._session.exec_query(ns=namespace, query=wql) as operation:
            found: list[MiInstance] = []
            while (item := operation.get_next_instance()) is not None:
                found.append(item.clone())
            return found

    def get_instance(self, namespace: str, key: MiInstance) -> MiInstance | None:
        with self._session.get_instance(ns=namespace, key_instance=key) as operation:
            found = operation.get_next_instance()
            return None if found is None else found.clone()

    def get_class(self, namespace: str, class_name: str) -> MiClass:
        with self._session.get_class(ns=namespace, class_name=class_name) as operation:
            return operation.get_next_class().clone()  # type: ignore[no-any-return]

    def new_instance(self, mi_class: MiClass) -> MiInstance:
        return self._app.create_instance_from_class(  # type: ignore[no-any-return]
            mi_class.get_class_name(), mi_class)

    def method_params(self, mi_class: MiClass, method: str) -> MiInstance:
        return self._app.create_method_params(mi_class, method)  # type: ignore[no-any-return]

    def invoke(self, target: MiInstance | MiClass, method: str,
               params: MiInstance) -> MiInstance:
        with self._session.invoke_method(target, method, params) as operation:
            return operation.get_next_instance().clone()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._session.close()
        self._app.close()
