"""Class metadata as CIM-XML ``CLASS`` elements (DSP0201), as a WS-Management Get on
``http://schemas.dmtf.org/wbem/cim-xml/2/cim-schema/2/*`` returns it (DSP0227 §15,
MS-WSMV §3.1.4.1.38).

A property's ``key`` and a parameter's ``In``/``Out`` are boolean qualifiers; a default is
the property's ``VALUE`` (``VALUE.ARRAY``); an instance-typed (EmbeddedObject) parameter
is ``TYPE="string"`` with ``EmbeddedObject="object"``. With the
``IncludeInheritanceHierarchy`` option the body carries the class followed by one
``CLASS`` per ancestor, nearest first (inference from the option's name; a reader that
gets only the class still learns its direct superclass).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from xml.etree.ElementTree import Element

from hyperv_agent.cim import values
from hyperv_agent.cim.api import CimValue
from hyperv_agent.cim.classdecl import (
    OBJECT,
    CimClass,
    MethodDecl,
    ParameterDecl,
    PropertyDecl,
)
from hyperv_agent.cim.wsman.writing import attr, text
from hyperv_agent.errors import CimError

_TRUE = '<QUALIFIER NAME="{}" TYPE="boolean"><VALUE>true</VALUE></QUALIFIER>'


# --- writing ------------------------------------------------------------------------------


def write_classes(decl: CimClass, hierarchy: bool) -> str:
    """The CLASS of ``decl``, and with ``hierarchy`` one bare CLASS per ancestor."""
    parts = [write_class(decl)]
    if hierarchy:
        chain = list(decl.superclasses)
        for index, name in enumerate(chain):
            parent = chain[index + 1] if index + 1 < len(chain) else None
            parts.append(_class_open(name, parent) + "</CLASS>")
    return "".join(parts)


def write_class(decl: CimClass) -> str:
    parent = decl.superclasses[0] if decl.superclasses else None
    props = "".join(_write_property(p) for p in decl.properties.values())
    methods = "".join(_write_method(m) for m in decl.methods.values())
    return f"{_class_open(decl.name, parent)}{props}{methods}</CLASS>"


def _class_open(name: str, parent: str | None) -> str:
    superclass = f" SUPERCLASS={attr(parent)}" if parent else ""
    return f"<CLASS NAME={attr(name)}{superclass}>"


def _write_property(prop: PropertyDecl) -> str:
    tag = _tag("PROPERTY", prop.cim_type, prop.is_array)
    key = _TRUE.format("key") if prop.key else ""
    return f"<{tag} {_type_attrs(prop.name, prop.cim_type)}>{key}{_default(prop)}</{tag}>"


def _default(prop: PropertyDecl) -> str:
    value = prop.default
    if value is None:
        return ""
    if isinstance(value, tuple):
        items = "".join(f"<VALUE>{text(values.format_scalar(prop.cim_type, v))}</VALUE>"
                        for v in value)
        return f"<VALUE.ARRAY>{items}</VALUE.ARRAY>"
    return f"<VALUE>{text(values.format_scalar(prop.cim_type, value))}</VALUE>"


def _write_method(method: MethodDecl) -> str:
    params = "".join(_write_parameter(p) for p in method.parameters)
    return f'<METHOD NAME={attr(method.name)} TYPE="uint32">{params}</METHOD>'


def _write_parameter(param: ParameterDecl) -> str:
    tag = _tag("PARAMETER", param.cim_type, param.is_array)
    direction = _TRUE.format("In" if param.direction == "in" else "Out")
    return f"<{tag} {_type_attrs(param.name, param.cim_type)}>{direction}</{tag}>"


def _tag(base: str, cim_type: str, is_array: bool) -> str:
    if cim_type == "reference":
        return f"{base}.REFARRAY" if is_array else f"{base}.REFERENCE"
    return f"{base}.ARRAY" if is_array else base


def _type_attrs(name: str, cim_type: str) -> str:
    if cim_type == "reference":
        return f"NAME={attr(name)}"
    if cim_type == OBJECT:
        return f'NAME={attr(name)} TYPE="string" EmbeddedObject="object"'
    return f"NAME={attr(name)} TYPE={attr(cim_type)}"


# --- reading ------------------------------------------------------------------------------


def read_classes(elements: Sequence[Element], namespace: str) -> CimClass:
    """The declaration of the first CLASS, its ancestors followed through the others."""
    classes = [e for e in elements if e.tag == "CLASS"]
    if not classes:
        raise CimError("class metadata answer holds no CLASS element")
    first = classes[0]
    by_name = {(e.get("NAME") or "").lower(): e for e in classes[1:]}
    chain = list(_ancestors(first, by_name))
    props = [_read_property(e) for e in first if e.tag.startswith("PROPERTY")]
    methods = [_read_method(e) for e in first.findall("METHOD")]
    return CimClass.build(_name(first), namespace, chain, props, methods)


def _ancestors(first: Element, by_name: dict[str, Element]) -> Iterable[str]:
    parent = first.get("SUPERCLASS")
    seen: set[str] = set()
    while parent and parent.lower() not in seen:
        seen.add(parent.lower())
        yield parent
        element = by_name.get(parent.lower())
        parent = element.get("SUPERCLASS") if element is not None else None


def _name(element: Element) -> str:
    name = element.get("NAME")
    if not name:
        raise CimError(f"CIM-XML {element.tag} element has no NAME")
    return name


def _read_property(element: Element) -> PropertyDecl:
    cim_type, is_array = _read_type(element)
    key = _flag(element, "key")
    return PropertyDecl(_name(element), cim_type, is_array, key,
                        _read_default(element, cim_type, is_array))


def _read_default(element: Element, cim_type: str, is_array: bool) -> CimValue:
    if is_array:
        array = element.find("VALUE.ARRAY")
        if array is None:
            return None
        return tuple(values.parse_scalar(cim_type, v.text or "") for v in array.findall("VALUE"))
    value = element.find("VALUE")
    return None if value is None else values.parse_scalar(cim_type, value.text or "")


def _read_method(element: Element) -> MethodDecl:
    params = []
    for child in element:
        if child.tag.startswith("PARAMETER"):
            cim_type, is_array = _read_type(child)
            direction = "out" if _flag(child, "Out") and not _flag(child, "In") else "in"
            params.append(ParameterDecl(_name(child), cim_type, is_array, direction))
    return MethodDecl(_name(element), tuple(params))


def _read_type(element: Element) -> tuple[str, bool]:
    tag = element.tag
    is_array = tag.endswith((".ARRAY", ".REFARRAY"))
    if tag.endswith((".REFERENCE", ".REFARRAY")):
        return "reference", is_array
    if (element.get("EmbeddedObject") or "").lower() == "object":
        return OBJECT, is_array
    return (element.get("TYPE") or "string").lower(), is_array


def _flag(element: Element, name: str) -> bool:
    for qualifier in element.findall("QUALIFIER"):
        if (qualifier.get("NAME") or "").lower() == name.lower():
            return (qualifier.findtext("VALUE") or "").strip().lower() == "true"
    return False
