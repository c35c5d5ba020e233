"""Embedded-instance text: CIM-XML ``INSTANCE`` elements (DSP0201, DTD 2.0).

Hyper-V methods take and return instances as the text WMI's ``GetText_(1)`` writes::

    <INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">
      <PROPERTY NAME="Name" TYPE="string"><VALUE>key</VALUE></PROPERTY>
      <PROPERTY.ARRAY NAME="Ids" TYPE="uint16"><VALUE.ARRAY><VALUE>1</VALUE></VALUE.ARRAY>
      </PROPERTY.ARRAY>
      <PROPERTY.REFERENCE NAME="Parent"><VALUE.REFERENCE><INSTANCEPATH>...</INSTANCEPATH>
      </VALUE.REFERENCE></PROPERTY.REFERENCE>
    </INSTANCE>

``write_instance`` produces that minimal shape on one line, every property in the
instance's order (a null is a property element without a value). Characters XML would
normalise (CR, LF, TAB in attributes, CR and LF in text) are written as character
references so values survive exactly; characters XML 1.0 cannot carry at all (most C0
controls, lone surrogates) are refused with ``CimInvalidParameter``.

``read_instance`` is lenient: it ignores ``QUALIFIER`` elements, unknown attributes
(``CLASSORIGIN``, ``PROPAGATED``, ``EmbeddedObject``), whitespace between elements and an
XML declaration, and accepts the ``INSTANCE`` bare or inside a wrapper such as
``VALUE.NAMEDINSTANCE``. A reference value may be an ``INSTANCEPATH``, a
``LOCALINSTANCEPATH``, a bare ``INSTANCENAME`` or plain path text; it is returned as the
text of an ``ObjectPath``. Parsing goes through ``defusedxml`` so entity-expansion
documents are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from hyperv_agent.cim.api import (
    CIM_TYPES,
    INTEGER_TYPES,
    V2_NAMESPACE,
    CimInstance,
    CimProperty,
    CimScalar,
    CimValue,
    ObjectPath,
    coerce_value,
)
from hyperv_agent.errors import CimInvalidParameter

if TYPE_CHECKING:  # annotations only; parsing goes through defusedxml
    from xml.etree.ElementTree import Element

# --- writing ------------------------------------------------------------------------------

_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "&#10;"}
)
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;",
     '"': "&quot;"}
)


def write_instance(instance: CimInstance) -> str:
    """The one-line CIM-XML ``INSTANCE`` text of ``instance``."""
    body = "".join(_write_property(prop) for prop in instance)
    return f'<INSTANCE CLASSNAME="{_attr(instance.class_name)}">{body}</INSTANCE>'


def uncarried(text: str) -> int | None:
    """The offset of the first character of ``text`` that CIM-XML text cannot carry (what
    ``write_instance`` refuses), or None when it carries them all."""
    bad = _NOT_IN_XML.search(text)
    return None if bad is None else bad.start()


def _escape(text: str, table: Mapping[int, str]) -> str:
    bad = uncarried(text)
    if bad is not None:
        raise CimInvalidParameter(f"{text[bad]!r} cannot be carried in CIM-XML text")
    return text.translate(table)


def _attr(text: str) -> str:
    return _escape(text, _ATTR_ESCAPES)


def _text(text: str) -> str:
    return _escape(text, _TEXT_ESCAPES)


def _write_property(prop: CimProperty) -> str:
    if prop.cim_type not in CIM_TYPES:
        raise CimInvalidParameter(f"{prop.name} has an unknown CIM type {prop.cim_type!r}")
    value = coerce_value(prop, prop.value)
    name = _attr(prop.name)
    if prop.cim_type == "reference":
        tag = "PROPERTY.REFARRAY" if prop.is_array else "PROPERTY.REFERENCE"
        return f'<{tag} NAME="{name}">{_write_references(value)}</{tag}>'
    tag = "PROPERTY.ARRAY" if prop.is_array else "PROPERTY"
    return f'<{tag} NAME="{name}" TYPE="{prop.cim_type}">{_write_values(value)}</{tag}>'


def _write_values(value: CimValue) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "<VALUE.ARRAY>" + "".join(map(_write_value, value)) + "</VALUE.ARRAY>"
    return _write_value(value)


def _write_value(scalar: CimScalar) -> str:
    if isinstance(scalar, bool):
        return "<VALUE>TRUE</VALUE>" if scalar else "<VALUE>FALSE</VALUE>"
    return f"<VALUE>{_text(str(scalar))}</VALUE>"


def _write_references(value: CimValue) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        items = "".join(_write_reference(str(item)) for item in value)
        return f"<VALUE.REFARRAY>{items}</VALUE.REFARRAY>"
    return _write_reference(str(value))


def _write_reference(text: str) -> str:
    path = ObjectPath.parse(text)
    namespaces = "".join(
        f'<NAMESPACE NAME="{_attr(part)}"/>' for part in _namespace_parts(path.namespace)
    )
    return (
        "<VALUE.REFERENCE><INSTANCEPATH><NAMESPACEPATH>"
        f"<HOST>{_text(path.host)}</HOST><LOCALNAMESPACEPATH>{namespaces}</LOCALNAMESPACEPATH>"
        f"</NAMESPACEPATH>{_write_instance_name(path)}</INSTANCEPATH></VALUE.REFERENCE>"
    )


def _namespace_parts(namespace: str) -> list[str]:
    return [part for part in re.split(r"[\\/]", namespace) if part]


def _write_instance_name(path: ObjectPath) -> str:
    keys = "".join(
        f'<KEYBINDING NAME="{_attr(name)}"><KEYVALUE VALUETYPE="string">{_text(value)}'
        "</KEYVALUE></KEYBINDING>"
        for name, value in path.keys
    )
    return f'<INSTANCENAME CLASSNAME="{_attr(path.class_name)}">{keys}</INSTANCENAME>'


# --- reading ------------------------------------------------------------------------------

_DECLARATION = re.compile(r"\A\ufeff?\s*<\?xml[^>]*\?>")
_INTEGER = re.compile(r"[+-]?\d+|0[xX][0-9a-fA-F]+")
_IGNORED = frozenset({"QUALIFIER", "QUALIFIER.DECLARATION"})


def read_instance(text: str) -> tuple[str, list[CimProperty]]:
    """The class name and typed properties of CIM-XML ``INSTANCE`` text.

    Integer types read as ``int``, ``boolean`` as ``bool``, references as the text of an
    ``ObjectPath``, everything else (strings, datetimes, reals) as ``str``. Malformed text
    raises ``CimInvalidParameter``.
    """
    instance = _find_instance(_parse_xml(text))
    class_name = _required_attr(instance, "CLASSNAME")
    properties = [_read_property(child) for child in instance if child.tag not in _IGNORED]
    _check_unique(class_name, properties)
    return class_name, properties


def _parse_xml(text: str) -> Element:
    # The XML parser loads with the first instance read, not with every program that
    # only writes instances or never meets one (serve starts a seventieth faster).
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    if not isinstance(text, str):
        raise CimInvalidParameter(f"CIM-XML instance text must be a string, not {text!r}")
    if not text.strip():
        raise CimInvalidParameter("malformed CIM-XML instance text: the text is empty")
    try:
        return fromstring(_DECLARATION.sub("", text, count=1))
    except (ParseError, DefusedXmlException, ValueError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CimInvalidParameter(f"malformed CIM-XML instance text: {message}") from exc


def _find_instance(root: Element) -> Element:
    if root.tag == "INSTANCE":
        return root
    found = root.find(".//INSTANCE")
    if found is None:
        raise CimInvalidParameter(f"CIM-XML text has no INSTANCE element (root is {root.tag!r})")
    return found


def _required_attr(element: Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise CimInvalidParameter(f"CIM-XML {element.tag} element has no {name} attribute")
    return value


def _required_child(element: Element, tag: str) -> Element:
    child = _optional_child(element, tag)
    if child is None:
        raise CimInvalidParameter(f"CIM-XML {element.tag} element has no {tag} element")
    return child


def _optional_child(element: Element, tag: str) -> Element | None:
    children = element.findall(tag)
    if len(children) > 1:
        raise CimInvalidParameter(f"CIM-XML {element.tag} element has more than one {tag}")
    return children[0] if children else None


def _check_unique(class_name: str, properties: Iterable[CimProperty]) -> None:
    seen: set[str] = set()
    for prop in properties:
        if prop.name.lower() in seen:
            raise CimInvalidParameter(f"CIM-XML {class_name} repeats property {prop.name!r}")
        seen.add(prop.name.lower())


def _read_property(element: Element) -> CimProperty:
    reader = _PROPERTY_READERS.get(element.tag)
    if reader is None:
        raise CimInvalidParameter(f"unexpected CIM-XML element {element.tag!r} in INSTANCE")
    return reader(element, _required_attr(element, "NAME"))


def _cim_type(element: Element) -> str:
    cim_type = _required_attr(element, "TYPE").lower()
    if cim_type not in CIM_TYPES:
        raise CimInvalidParameter(f"CIM-XML property has an unknown TYPE {cim_type!r}")
    return cim_type


def _read_scalar_property(element: Element, name: str) -> CimProperty:
    cim_type = _cim_type(element)
    value = _optional_child(element, "VALUE")
    parsed = None if value is None else _parse_scalar(cim_type, value.text or "", name)
    return CimProperty(name, cim_type, False, parsed)


def _read_array_property(element: Element, name: str) -> CimProperty:
    cim_type = _cim_type(element)
    array = _optional_child(element, "VALUE.ARRAY")
    if array is None:
        return CimProperty(name, cim_type, True, None)
    items = tuple(
        _parse_scalar(cim_type, item.text or "", name) for item in _items(array, "VALUE")
    )
    return CimProperty(name, cim_type, True, items)


def _read_reference_property(element: Element, name: str) -> CimProperty:
    value = _optional_child(element, "VALUE.REFERENCE")
    if value is None:
        value = _optional_child(element, "VALUE")  # lenient: plain path text
    parsed = None if value is None else _read_reference(value)
    return CimProperty(name, "reference", False, parsed)


def _read_reference_array_property(element: Element, name: str) -> CimProperty:
    array = _optional_child(element, "VALUE.REFARRAY")
    if array is None:
        return CimProperty(name, "reference", True, None)
    items = tuple(_read_reference(item) for item in _items(array, "VALUE.REFERENCE"))
    return CimProperty(name, "reference", True, items)


_PROPERTY_READERS: Mapping[str, Callable[[Element, str], CimProperty]] = {
    "PROPERTY": _read_scalar_property,
    "PROPERTY.ARRAY": _read_array_property,
    "PROPERTY.REFERENCE": _read_reference_property,
    "PROPERTY.REFARRAY": _read_reference_array_property,
}


def _items(array: Element, tag: str) -> list[Element]:
    for child in array:
        if child.tag != tag:
            raise CimInvalidParameter(f"unsupported CIM-XML element {child.tag!r} in an array")
    return list(array)


def _parse_scalar(cim_type: str, text: str, name: str) -> CimScalar:
    if cim_type in INTEGER_TYPES:
        return _parse_integer(text, name)
    if cim_type == "boolean":
        return _parse_boolean(text, name)
    if cim_type == "reference":
        return str(ObjectPath.parse(text.strip()))
    return text


def _parse_integer(text: str, name: str) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise CimInvalidParameter(f"CIM-XML property {name} has a bad integer {text!r}")
    return int(stripped, 16) if stripped[1:2] in ("x", "X") else int(stripped)


def _parse_boolean(text: str, name: str) -> bool:
    stripped = text.strip().lower()
    if stripped not in ("true", "false"):
        raise CimInvalidParameter(f"CIM-XML property {name} has a bad boolean {text!r}")
    return stripped == "true"


# --- reading references -------------------------------------------------------------------


def _read_reference(element: Element) -> str:
    """Path text from a ``VALUE.REFERENCE`` (or a lenient ``VALUE``) element."""
    children = list(element)
    if not children:
        text = (element.text or "").strip()
        if not text:
            raise CimInvalidParameter(f"CIM-XML {element.tag} element is empty")
        return str(ObjectPath.parse(text))
    reader = _PATH_READERS.get(children[0].tag)
    if reader is None or len(children) > 1:
        raise CimInvalidParameter(
            f"unsupported CIM-XML reference content {[child.tag for child in children]}"
        )
    return str(reader(children[0]))


def _read_instance_path(element: Element) -> ObjectPath:
    namespace_path = _required_child(element, "NAMESPACEPATH")
    host = (_required_child(namespace_path, "HOST").text or "").strip() or "."
    local = _required_child(namespace_path, "LOCALNAMESPACEPATH")
    name = _required_child(element, "INSTANCENAME")
    return _read_instance_name(name, _read_namespace(local), host)


def _read_local_instance_path(element: Element) -> ObjectPath:
    local = _required_child(element, "LOCALNAMESPACEPATH")
    name = _required_child(element, "INSTANCENAME")
    return _read_instance_name(name, _read_namespace(local))


def _read_namespace(element: Element) -> str:
    parts = [_required_attr(part, "NAME") for part in element.findall("NAMESPACE")]
    if not parts:
        raise CimInvalidParameter("CIM-XML LOCALNAMESPACEPATH has no NAMESPACE element")
    return "\\".join(parts)


def _read_instance_name(
    element: Element, namespace: str = V2_NAMESPACE, host: str = "."
) -> ObjectPath:
    class_name = _required_attr(element, "CLASSNAME")
    keys = tuple(
        (_required_attr(binding, "NAME"), _read_key_value(binding))
        for binding in element.findall("KEYBINDING")
    )
    return ObjectPath(class_name, keys, namespace, host)


def _read_key_value(binding: Element) -> str:
    value = _optional_child(binding, "KEYVALUE")
    if value is not None:
        return value.text or ""
    reference = _optional_child(binding, "VALUE.REFERENCE")
    if reference is not None:
        return _read_reference(reference)
    raise CimInvalidParameter("CIM-XML KEYBINDING has neither KEYVALUE nor VALUE.REFERENCE")


_PATH_READERS: Mapping[str, Callable[[Element], ObjectPath]] = {
    "INSTANCEPATH": _read_instance_path,
    "LOCALINSTANCEPATH": _read_local_instance_path,
    "INSTANCENAME": _read_instance_name,
}
