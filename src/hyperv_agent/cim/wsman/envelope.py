"""The bodies a CIM client sends over WS-Management, and reading the bodies it gets back.

Requests (MS-WSMV §4.1): Enumerate with ``wsman:OptimizeEnumeration``, ``MaxElements``
and a WQL ``wsman:Filter``; Pull with the latest ``EnumerationContext``; Release; and
``<p:Method_INPUT>`` with one element per in-parameter (arrays repeated, references as
EPRs, instances as their CIM-XML text, datetimes in ``cim:Datetime``). Headers (Action,
ResourceURI, SelectorSet, MaxEnvelopeSize, OperationTimeout …) are the transport's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element, SubElement

from hyperv_agent.cim import values
from hyperv_agent.cim.api import CimInstance, InScalar, InValue, ObjectPath
from hyperv_agent.cim.classdecl import OBJECT, MethodDecl, RawInstance, RawValue
from hyperv_agent.cim.wsman.names import (
    CIM,
    WQL_DIALECT,
    WSEN,
    WSMAN,
    XSI,
    add_epr,
    class_uri,
    q,
)
from hyperv_agent.cim.wsman.reading import read_instance, read_values
from hyperv_agent.errors import CimError, CimInvalidParameter

# --- requests -----------------------------------------------------------------------------


def enumerate_body(wql: str, max_elements: int) -> Element:
    body = Element(q(WSEN, "Enumerate"))
    SubElement(body, q(WSMAN, "OptimizeEnumeration"))
    SubElement(body, q(WSMAN, "MaxElements")).text = str(max_elements)
    SubElement(body, q(WSMAN, "Filter"), Dialect=WQL_DIALECT).text = wql
    return body


def pull_body(context: str, max_elements: int) -> Element:
    body = Element(q(WSEN, "Pull"))
    SubElement(body, q(WSEN, "EnumerationContext")).text = context
    SubElement(body, q(WSEN, "MaxElements")).text = str(max_elements)
    return body


def release_body(context: str) -> Element:
    body = Element(q(WSEN, "Release"))
    SubElement(body, q(WSEN, "EnumerationContext")).text = context
    return body


def input_body(namespace: str, class_name: str, method: MethodDecl,
               params: Mapping[str, InValue], to_embedded: Callable[[CimInstance], str]
               ) -> Element:
    """``<p:Method_INPUT>``: nulls left out, arrays repeated, paths as EPRs, instances
    as CIM-XML text (an embedded-instance string) or as nested elements (an object
    parameter); CimInvalidParameter for a name that is not an in-parameter."""
    uri = class_uri(namespace, class_name)
    body = Element(q(uri, f"{method.name}_INPUT"))
    for name, value in params.items():
        decl = method.parameter(name)
        if decl is None or decl.direction != "in":
            raise CimInvalidParameter(f"{method.name} has no in-parameter {name!r}")
        if value is None:
            continue
        items = _items(value) if decl.is_array else [_single(name, value)]
        for item in items:
            _add_argument(SubElement(body, q(uri, decl.name)), decl.cim_type, item, to_embedded)
    return body


def _items(value: InValue) -> Sequence[InScalar]:
    if isinstance(value, str | bytes | CimInstance | ObjectPath) or not isinstance(value,
                                                                                     Sequence):
        return [value]  # type: ignore[list-item]
    return value


def _single(name: str, value: InValue) -> InScalar:
    if isinstance(value, Sequence) and not isinstance(value, str):
        raise CimInvalidParameter(f"{name} takes a single value")
    return value  # type: ignore[return-value]


def _add_argument(element: Element, cim_type: str, value: InScalar,
                  to_embedded: Callable[[CimInstance], str]) -> None:
    if isinstance(value, ObjectPath):
        add_epr(element, value)
    elif isinstance(value, CimInstance):
        if cim_type == "reference" and value.path is not None:
            add_epr(element, value.path)
        elif cim_type == OBJECT:
            _add_object(element, value, to_embedded)
        else:
            element.text = to_embedded(value)
    elif cim_type == "datetime" and isinstance(value, str):
        tag = "Interval" if values.is_interval(value) else "Datetime"
        converted = (values.dmtf_interval_to_duration(value) if tag == "Interval"
                     else values.dmtf_to_iso(value))
        SubElement(element, q(CIM, tag)).text = converted
    else:
        element.text = values.format_scalar(cim_type, value)


def _add_object(element: Element, instance: CimInstance,
                to_embedded: Callable[[CimInstance], str]) -> None:
    """An embedded object (DSP0230): its class in ``xsi:type``, its non-null properties
    as elements in the class's namespace, as WinRM writes one in an answer."""
    uri = class_uri(instance.namespace, instance.class_name)
    element.set("xmlns:c", uri)  # the prefix xsi:type names
    element.set(q(XSI, "type"), f"c:{instance.class_name}_Type")
    for prop in instance:
        value = prop.value
        items = () if value is None else value if isinstance(value, tuple) else (value,)
        for item in items:
            _add_argument(SubElement(element, q(uri, prop.name)), prop.cim_type, item,
                          to_embedded)


# --- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One Enumerate or Pull answer: its items, the context for the next Pull (None at
    the end, or when the answer names none) and whether the sequence ended (its
    EndOfSequence)."""

    items: list[RawInstance]
    context: str | None
    ended: bool


def read_batch(body: Element) -> Batch:
    """An ``EnumerateResponse`` (optimized: ``wsman:Items``) or ``PullResponse``."""
    answer = body.find(q(WSEN, "EnumerateResponse"))
    if answer is None:
        answer = body.find(q(WSEN, "PullResponse"))
    if answer is None:
        raise CimError("the enumeration answer holds neither EnumerateResponse nor "
                       "PullResponse")
    items_element = answer.find(q(WSMAN, "Items"))
    if items_element is None:
        items_element = answer.find(q(WSEN, "Items"))
    items = [read_instance(item) for item in items_element] if items_element is not None else []
    ended = (answer.find(q(WSMAN, "EndOfSequence")) is not None
             or answer.find(q(WSEN, "EndOfSequence")) is not None)
    context = (answer.findtext(q(WSEN, "EnumerationContext")) or "").strip() or None
    return Batch(items, None if ended else context, ended)


def read_output(body: Element, method: str) -> tuple[int, dict[str, RawValue]]:
    """ReturnValue and the other out-parameters (untyped) of ``<p:Method_OUTPUT>``."""
    output = next((child for child in body if child.tag.endswith(f"}}{method}_OUTPUT")), None)
    if output is None:
        raise CimError(f"the answer to {method} holds no {method}_OUTPUT")
    out = read_values(output)
    returned = next((v for k, v in out.items() if k.lower() == "returnvalue"), None)
    out = {k: v for k, v in out.items() if k.lower() != "returnvalue"}
    if not isinstance(returned, str) or not returned.strip().lstrip("-").isdigit():
        raise CimError(f"{method} returned no ReturnValue")
    return int(returned), out
