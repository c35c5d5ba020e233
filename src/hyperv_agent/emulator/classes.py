"""The emulator's class table as seam class declarations (``Cim.get_class``)."""

from __future__ import annotations

from hyperv_agent.cim.classdecl import CimClass, MethodDecl, ParameterDecl, PropertyDecl
from hyperv_agent.emulator.schema import ClassDef, MethodDef, abstract_class, lookup
from hyperv_agent.errors import CimInvalidClass


def declaration(class_name: str, namespace: str) -> CimClass:
    """``class_name`` of ``namespace`` (concrete or abstract) as declared; CimInvalidClass
    when the namespace has no such class."""
    class_def = lookup(class_name, namespace) or abstract_class(class_name, namespace)
    if class_def is None:
        raise CimInvalidClass(f"no class {class_name} in namespace {namespace}")
    return _declared(class_def)


def _declared(class_def: ClassDef) -> CimClass:
    props = [PropertyDecl(p.name, p.cim_type, p.is_array, p.key, p.default)
             for p in class_def.properties.values()]
    methods = [_method(m) for m in class_def.methods.values()]
    return CimClass.build(class_def.name, class_def.namespace, class_def.ancestors, props,
                          methods)


def _method(method: MethodDef) -> MethodDecl:
    return MethodDecl(method.name, tuple(
        ParameterDecl(p.name, p.cim_type, p.is_array, p.direction) for p in method.params))
