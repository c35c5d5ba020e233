"""Writing CIM instances and values as WS-Management XML text, as WinRM renders them.

The shapes are those ``reading`` reads: one element per property in the class's
resource-URI namespace (prefix ``p``), ``xsi:nil`` for nulls, repeated elements for
arrays (nothing at all for an empty one), ``cim:Datetime`` / ``cim:Interval`` children for
datetimes, EPRs for references and ``cim:Location`` last. Text is escaped for XML;
control characters XML cannot carry become ``?`` (MS-WSMV §3.1.4.1.25) and a carriage
return is written as a character reference so it survives parsing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from hyperv_agent.cim import values
from hyperv_agent.cim.api import CimInstance, CimProperty, CimScalar, ObjectPath
from hyperv_agent.cim.wsman.names import (
    ANONYMOUS,
    CIM,
    WSA,
    WSMAN,
    XSI,
    class_uri,
    reference_key,
)
from hyperv_agent.errors import CimInvalidParameter

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
#: Namespace declarations every rendered fragment may use.
COMMON_NS = (f'xmlns:a="{WSA}" xmlns:w="{WSMAN}" xmlns:cim="{CIM}" xmlns:xsi="{XSI}"')


def text(value: str) -> str:
    """``value`` escaped as XML character data."""
    if _CONTROL.search(value) is not None:
        value = _CONTROL.sub("?", value)
    return value.translate(_ESCAPES)


def attr(value: str) -> str:
    return quoteattr(_CONTROL.sub("?", value))


def epr(path: ObjectPath) -> str:
    """``a:Address`` and ``a:ReferenceParameters`` of ``path`` (no wrapper element)."""
    return (f"<a:Address>{ANONYMOUS}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{text(class_uri(path.namespace, path.class_name))}</w:ResourceURI>"
            f"{selector_set(path)}</a:ReferenceParameters>")


def selector_set(path: ObjectPath) -> str:
    items = []
    for name, value in path.keys:
        nested = reference_key(value)
        inner = (f"<a:EndpointReference>{epr(nested)}</a:EndpointReference>"
                 if nested is not None else text(value))
        items.append(f"<w:Selector Name={attr(name)}>{inner}</w:Selector>")
    return f"<w:SelectorSet>{''.join(items)}</w:SelectorSet>"


def instance(item: CimInstance, path: ObjectPath | None) -> str:
    """A full instance: ``<p:Class xmlns:p=… xsi:type="p:Class_Type">…</p:Class>``."""
    uri = class_uri(item.namespace, item.class_name)
    body = "".join(prop("p", p) for p in item)
    location = f"<cim:Location>{epr(path)}</cim:Location>" if path is not None else ""
    return (f'<p:{item.class_name} xmlns:p={attr(uri)} xsi:type="p:{item.class_name}_Type">'
            f"{body}{location}</p:{item.class_name}>")


def fragment(item: CimInstance) -> str:
    """A projected result: unqualified properties in alphabetical order (MS-WSMV <58>,
    <59>) inside ``w:XmlFragment``."""
    ordered = sorted(item, key=lambda p: p.name.lower())
    return f"<w:XmlFragment>{''.join(prop('', p) for p in ordered)}</w:XmlFragment>"


def nested(tag: str, item: CimInstance) -> str:
    """An embedded object as a parameter ``tag`` (``p:SummaryInformation``): its class
    in ``xsi:type``, its non-null properties in the class's namespace (prefix ``c``).
    Null properties are left out: DSP0230 allows leaving out or ``xsi:nil`` for them and
    Microsoft documents neither for embedded objects; left out, a thousand VM summaries
    fit WinRM's default 500 KiB envelope. Readers take an absent property as null."""
    uri = class_uri(item.namespace, item.class_name)
    body = "".join(prop("c", p) for p in item if p.value is not None)
    return (f'<{tag} xmlns:c={attr(uri)} xsi:type="c:{item.class_name}_Type">{body}</{tag}>')


def prop(prefix: str, item: CimProperty) -> str:
    """The element(s) of one property; ``prefix`` '' for unqualified names."""
    tag = f"{prefix}:{item.name}" if prefix else item.name
    return elements(tag, item.cim_type, item.value)


def elements(tag: str, cim_type: str, value: object) -> str:
    """Elements named ``tag`` for a value: nil, repeated for an array, or one."""
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    if isinstance(value, tuple | list):
        return "".join(scalar(tag, cim_type, item) for item in value)
    return scalar(tag, cim_type, value)


def scalar(tag: str, cim_type: str, value: object) -> str:
    if isinstance(value, ObjectPath):
        return f"<{tag}>{epr(value)}</{tag}>"
    if isinstance(value, CimInstance):
        return nested(tag, value)
    if not isinstance(value, str | int | bool):
        raise CimInvalidParameter(f"{tag} cannot carry {value!r}")
    return f"<{tag}>{_content(cim_type, value)}</{tag}>"


def _content(cim_type: str, value: CimScalar) -> str:
    if type(value) is int:
        return str(value)
    if cim_type == "datetime" and isinstance(value, str):
        if values.is_interval(value):
            return f"<cim:Interval>{values.dmtf_interval_to_duration(value)}</cim:Interval>"
        return f"<cim:Datetime>{values.dmtf_to_iso(value)}</cim:Datetime>"
    if cim_type == "reference" and isinstance(value, str):
        target = reference_key(value)
        if target is not None:
            return epr(target)
    return text(values.format_scalar(cim_type, value))


def join(parts: Iterable[str]) -> str:
    return "".join(parts)
