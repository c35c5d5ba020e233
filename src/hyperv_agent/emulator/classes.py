"""The emulator's class table as seam class declarations (``Cim.get_class``)."""

from __future__ import annotations

from hyperv_agent.cim.classdecl import CimClass
from hyperv_agent.emulator.schema import ClassDef, abstract_class, lookup
from hyperv_agent.errors import CimInvalidClass


def declaration(class_name: str, namespace: str) -> CimClass:
    """``class_name`` of ``namespace`` (concrete or abstract) as declared; CimInvalidClass
    when the namespace has no such class."""
    class_def = lookup(class_name, namespace) or abstract_class(class_name, namespace)
    if class_def is None:
        raise CimInvalidClass(f"no class {class_name} in namespace {namespace}")
    return _declared(class_def)


def _declared(class_def: ClassDef) -> CimClass:
    return CimClass.build(class_def.name, class_def.namespace, class_def.ancestors,
                          tuple(class_def.properties.values()),
                          tuple(class_def.methods.values()))
