"""WS-Management names for CIM: XML namespaces, actions, resource URIs and EPRs.

A WMI class is addressed by ``http://schemas.microsoft.com/wbem/wsman/1/wmi/<namespace
with / for \\>/<Class>`` and an instance by that URI plus a selector set of its keys; the
``…/<namespace>/*`` URI takes a WQL filter. An endpoint reference (EPR) is the anonymous
address plus reference parameters: the ResourceURI and the SelectorSet. A selector whose
key is itself a reference holds a nested EPR.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, SubElement

from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.errors import CimInvalidParameter

S = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
WSMV = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
WSEN = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CIM = "http://schemas.dmtf.org/wbem/wscim/1/common"
WSMANFAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
WMIERROR = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"
CIMBINDING = "http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"
XML = "http://www.w3.org/XML/1998/namespace"

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
WQL_DIALECT = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
FAULT_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"

GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
RELEASE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Release"
ADDRESSING_FAULT = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
WSMAN_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ENUMERATION_FAULT = f"{WSEN}/fault"

WMI_PREFIX = "http://schemas.microsoft.com/wbem/wsman/1/wmi/"
DMTF_PREFIX = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
#: Class metadata in CIM-XML (DSP0227 §15): Get with ``__cimnamespace`` and ``ClassName``.
CLASS_METADATA = "http://schemas.dmtf.org/wbem/cim-xml/2/cim-schema/2/*"
NAMESPACE_SELECTOR = "__cimnamespace"
#: The WinRM service's configuration (MS-WSMV §2.2.4.10): resource URI and XML namespace.
CONFIG = "http://schemas.microsoft.com/wbem/wsman/1/config"

_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def q(namespace: str, local: str) -> str:
    """An ElementTree qualified name."""
    return f"{{{namespace}}}{local}"


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def namespace_of(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


# --- resource URIs ------------------------------------------------------------------------


def class_uri(namespace: str, class_name: str) -> str:
    """``…/wmi/root/virtualization/v2/Msvm_ComputerSystem``."""
    return f"{namespace_uri(namespace)}/{class_name}"


def all_classes_uri(namespace: str) -> str:
    """``…/wmi/root/virtualization/v2/*``: the URI a WQL filter is sent to."""
    return f"{namespace_uri(namespace)}/*"


def namespace_uri(namespace: str) -> str:
    return WMI_PREFIX + namespace.replace("\\", "/").strip("/")


def method_action(namespace: str, class_name: str, method: str) -> str:
    return f"{class_uri(namespace, class_name)}/{method}"


def parse_resource_uri(uri: str) -> tuple[str, str | None]:
    """(namespace with backslashes, class name or None for ``*``) of a WMI resource URI;
    CimInvalidParameter for a URI outside the ``…/wmi/`` prefix."""
    text = uri.strip()
    if not text.lower().startswith(WMI_PREFIX):
        raise CimInvalidParameter(f"not a WMI resource URI: {uri!r}")
    namespace, _, last = text[len(WMI_PREFIX):].rpartition("/")
    if not namespace:
        raise CimInvalidParameter(f"resource URI names no namespace: {uri!r}")
    if last != "*" and not _CLASS.match(last):
        raise CimInvalidParameter(f"resource URI names no class: {uri!r}")
    return namespace.replace("/", "\\"), None if last == "*" else last


# --- endpoint references ------------------------------------------------------------------


def add_epr(parent: Element, path: ObjectPath) -> None:
    """Append ``wsa:Address`` and ``wsa:ReferenceParameters`` for ``path`` to ``parent``."""
    SubElement(parent, q(WSA, "Address")).text = ANONYMOUS
    params = SubElement(parent, q(WSA, "ReferenceParameters"))
    SubElement(params, q(WSMAN, "ResourceURI")).text = class_uri(path.namespace, path.class_name)
    add_selectors(params, path)


def add_selectors(parent: Element, path: ObjectPath) -> Element:
    """Append the ``wsman:SelectorSet`` of ``path``'s keys; a key holding a full WMI path
    (``\\\\host\\ns:Class.k=…``) becomes a nested EPR, as references are sent."""
    selectors = SubElement(parent, q(WSMAN, "SelectorSet"))
    for name, value in path.keys:
        selector = SubElement(selectors, q(WSMAN, "Selector"), Name=name)
        reference = reference_key(value)
        if reference is None:
            selector.text = value
        else:
            add_epr(SubElement(selector, q(WSA, "EndpointReference")), reference)
    return selectors


def reference_key(value: str) -> ObjectPath | None:
    """The path in a key value that is a full WMI path with keys; None for plain text."""
    if not value.startswith("\\\\"):
        return None
    try:
        path = ObjectPath.parse(value)
    except CimInvalidParameter:
        return None
    return path if path.keys else None


def path_from_epr(element: Element) -> ObjectPath:
    """The object path an EPR (an element holding ``wsa:ReferenceParameters``) names."""
    params = element.find(q(WSA, "ReferenceParameters"))
    if params is None:
        raise CimInvalidParameter("endpoint reference has no ReferenceParameters")
    uri = params.findtext(q(WSMAN, "ResourceURI")) or ""
    namespace, class_name = parse_resource_uri(uri)
    if class_name is None:
        raise CimInvalidParameter(f"endpoint reference names no class: {uri!r}")
    keys = read_selectors(params.find(q(WSMAN, "SelectorSet")))
    return ObjectPath(class_name, keys, namespace)


def read_selectors(selector_set: Element | None) -> tuple[tuple[str, str], ...]:
    """(name, value) of each selector, a nested EPR read as its path text; a
    ``__cimnamespace`` selector is left out (it repeats the URI's namespace)."""
    if selector_set is None:
        return ()
    keys = []
    for selector in selector_set.findall(q(WSMAN, "Selector")):
        name = selector.get("Name") or ""
        if not name or name.lower() == NAMESPACE_SELECTOR:
            continue
        nested = selector.find(q(WSA, "EndpointReference"))
        value = str(path_from_epr(nested)) if nested is not None else (selector.text or "")
        keys.append((name, value))
    return tuple(keys)


def is_epr(element: Element) -> bool:
    return element.find(q(WSA, "ReferenceParameters")) is not None
