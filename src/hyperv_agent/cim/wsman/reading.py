"""Reading CIM instances and values out of WS-Management XML (DSP0230, MS-WSMV §3.1.4.1.26).

A property is a child element named after it. ``xsi:nil="true"`` is a null (for an array,
a null array); an array is the element repeated; a datetime holds a ``cim:Datetime`` (or
``cim:Interval``) child; a reference holds an EPR (``wsa:ReferenceParameters``); an
embedded object holds the object's own properties, its class named by ``xsi:type``
(``p:Msvm_SummaryInformation_Type``) or by the namespace of its children. A full instance
is an element in its class's resource-URI namespace, ending with ``cim:Location``; a
projected query result (``SELECT a, b``) is a ``wsman:XmlFragment`` whose children carry
no namespace (MS-WSMV <58>). Values stay untyped here (``RawInstance``); the class
declaration types them.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree.ElementTree import Element

from hyperv_agent.cim import values
from hyperv_agent.cim.api import V2_NAMESPACE, ObjectPath
from hyperv_agent.cim.classdecl import RawInstance, RawScalar, RawValue
from hyperv_agent.cim.wsman.names import (
    CIM,
    WMI_PREFIX,
    WSMAN,
    XSI,
    is_epr,
    local_name,
    namespace_of,
    parse_resource_uri,
    path_from_epr,
    q,
)
from hyperv_agent.errors import CimError, CimInvalidParameter

_NIL = q(XSI, "nil")
_TYPE = q(XSI, "type")
_LOCATION = q(CIM, "Location")
_DATETIME = q(CIM, "Datetime")
_INTERVAL = q(CIM, "Interval")
FRAGMENT = q(WSMAN, "XmlFragment")


def read_instance(element: Element) -> RawInstance:
    """An instance element (full or an XmlFragment) as an untyped instance."""
    class_name, namespace = _class_of(element)
    location = element.find(_LOCATION)
    path = path_from_epr(location) if location is not None else None
    props = read_values(child for child in element if child.tag != _LOCATION)
    return RawInstance(class_name, namespace, props, path)


def read_values(children: Iterable[Element]) -> dict[str, RawValue]:
    """Property (or parameter) elements by name; repeated names become arrays."""
    found: dict[str, list[RawScalar | None]] = {}
    for child in children:
        found.setdefault(local_name(child.tag), []).append(read_value(child))
    return {name: _collapse(items) for name, items in found.items()}


def _collapse(items: list[RawScalar | None]) -> RawValue:
    present = [item for item in items if item is not None]
    if not present:
        return None
    return present[0] if len(items) == 1 else tuple(present)


def read_value(element: Element) -> RawScalar | None:
    """One property element's value: None, text, a path, a datetime, an instance."""
    if element.get(_NIL, "").lower() == "true":
        return None
    children = list(element)
    if not children:
        return element.text or ""
    first = children[0]
    if first.tag == _DATETIME:
        return values.iso_to_dmtf(first.text or "")
    if first.tag == _INTERVAL:
        return values.duration_to_dmtf_interval(first.text or "")
    if is_epr(element):
        return path_from_epr(element)
    return _nested_instance(element)


def _nested_instance(element: Element) -> RawInstance:
    type_name = element.get(_TYPE)
    class_name = type_name.partition(":")[2].removesuffix("_Type") if type_name else None
    namespace = V2_NAMESPACE
    child_uri = namespace_of(element[0].tag)
    if child_uri.lower().startswith(WMI_PREFIX):
        namespace, from_uri = parse_resource_uri(child_uri)
        class_name = class_name or from_uri
    if not class_name:
        raise CimError(f"embedded object {local_name(element.tag)} names no class")
    return RawInstance(class_name, namespace, read_values(element))


def _class_of(element: Element) -> tuple[str | None, str]:
    if element.tag == FRAGMENT:
        return None, V2_NAMESPACE
    uri = namespace_of(element.tag)
    try:
        namespace, class_name = parse_resource_uri(uri)
    except CimInvalidParameter:
        raise CimError(f"unexpected item {element.tag!r} in a WS-Management answer") from None
    return class_name or local_name(element.tag), namespace


def read_path(element: Element) -> ObjectPath:
    """The path an EPR element names (re-exported for callers reading out-parameters)."""
    return path_from_epr(element)
