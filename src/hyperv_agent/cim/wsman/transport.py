"""WS-Management requests over pypsrp's HTTP transport, with typed, one-line errors.

pypsrp's ``WSMan`` is synchronous and holds one HTTP session with one security context
(NTLM/Kerberos sequence numbers make it unsafe to share between concurrent requests), so
the transport keeps a small pool of them, each used by one request at a time in a worker
thread, and bounds the requests in flight. Connections are kept alive between requests.

Every failure becomes a ``CimError``: a SOAP fault is parsed again here (pypsrp reads only
its subcode) so ``MSFT_WmiError`` codes decide the error class; authentication, TLS and
connection failures name the host and never the password. A failure where nothing
answered (no connection, a broken one, no answer in time) is ``CimUnreachable``: any
answer, an HTTP error or a fault included, says the host is running; so does a connection
refused (``CimRefused``), which the host's network stack answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from xml.etree.ElementTree import Element, ParseError

import requests
import urllib3
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pypsrp.exceptions import (
    AuthenticationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.wsman import OptionSet, SelectorSet, WSMan
from spnego.exceptions import SpnegoError

from hyperv_agent.cim import faults
from hyperv_agent.cim.api import ObjectPath
from hyperv_agent.cim.wsman.faultxml import find_fault, read_fault
from hyperv_agent.cim.wsman.names import ENUMERATE, GET, S, add_selectors, q
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.errors import (
    CimAccessDenied,
    CimAuthNotOffered,
    CimError,
    CimRefused,
    CimResponseTooLarge,
    CimUnavailable,
    CimUnreachable,
)

_T = TypeVar("_T")
_E = TypeVar("_E", bound=CimError)
log = logging.getLogger("hyperv_agent.cim.wsman.transport")
#: A session idle this long is closed rather than reused: the host may have dropped its
#: connection (http.sys keeps idle ones for 120 s), and a security context cannot move to
#: a new connection, so it is built anew, on a new connection, instead.
IDLE_SESSION_S = 60.0
#: A request's whole answer must have arrived this long after the operation timeout: a
#: host sending it a few bytes at a time never trips the socket's per-read timeout.
ANSWER_GRACE_S = 10.0
#: After the host refused the credentials on a new session, requests fail at once for this
#: long instead of each trying to log on again: every failed logon counts towards the
#: account's lockout threshold, and the management server sends commands all the time.
CREDENTIALS_RETRY_S = 60.0
# They log whole messages at DEBUG; pypsrp logs each failure it raises at ERROR, with its
# traceback, and the transport says each one again, in one line naming the host.
#: The actions sent again, once, on a new connection when a kept-alive one is reset before
#: any byte of their answer (the host restarted since it was last used: its end of the
#: connection is gone). Get and Enumerate change nothing on the host (an Enumerate it did
#: carry out leaves a context it drops after EnumerationTimeoutms). Not a Pull: one the
#: host carried out moved its enumeration on, and sent again it would answer the next
#: batch, the lost one silently missing (a state report without a running VM); the
#: backend reads such an enumeration again from its start instead. Not a method call
#: (Invoke): sent twice, DefineSystem makes two VMs, and AddResourceSettings two devices.
REPEATABLE = frozenset({GET, ENUMERATE})
_QUIET = {"pypsrp": logging.CRITICAL, "spnego": logging.WARNING,
          "requests_credssp": logging.WARNING, "urllib3": logging.WARNING}


class _Call:
    """One request's fate: ``abandoned`` once its answer took too long (its session is
    then closed when the worker thread is done with it, never reused)."""

    abandoned = False


class _Answered(Exception):
    """The host answered a request with a fault or an HTTP error: ``error`` says which."""

    def __init__(self, error: CimError) -> None:
        super().__init__(str(error))
        self.error = error


class PathSelectors(SelectorSet):
    """The selector set of an object path, nested EPRs included."""

    def __init__(self, path: ObjectPath) -> None:
        super().__init__()
        self.path = path

    def pack(self) -> Element:
        return add_selectors(Element("holder"), self.path)


class NameSelectors(SelectorSet):
    """A selector set from plain (name, value) pairs."""

    def __init__(self, pairs: dict[str, str]) -> None:
        super().__init__()
        for name, value in pairs.items():
            self.add_option(name, value)


class Transport:
    """Requests to one WinRM endpoint; ``requests`` counts the SOAP requests sent."""

    def __init__(self, settings: WsmanSettings) -> None:
        self.settings = settings
        self.requests = 0
        self._idle: list[tuple[WSMan, float]] = []  # session, when it was last used
        self._lock = threading.Lock()
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        self._refused: tuple[float, str] | None = None  # when, and what the host said
        # Worker threads of their own: a request whose answer never completes holds its
        # thread until the socket gives up, and must not hold up other work of the process
        # (twice the slots, so requests abandoned by their deadline leave room for new ones).
        self._workers = _Workers(2 * settings.max_concurrent_requests)
        for name, level in _QUIET.items():
            library = logging.getLogger(name)
            if library.level == logging.NOTSET:
                library.setLevel(level)

    @property
    def deadline_s(self) -> float:
        """How long a request may take, its whole answer read."""
        return self.settings.operation_timeout_s + ANSWER_GRACE_S

    async def send(self, action: str, resource_uri: str, body: Element | None = None, *,
                   selectors: SelectorSet | None = None, options: OptionSet | None = None
                   ) -> Element:
        """The ``s:Body`` of the answer to one request; CimError on any failure, and
        CimUnreachable when the whole answer has not arrived by ``deadline_s``; within
        ``CREDENTIALS_RETRY_S`` of the host refusing the credentials, CimAccessDenied
        without a request."""
        self._check_refusal()
        async with self._slots:
            self._check_refusal()  # noted while this request waited for its slot
            self.requests += 1
            call = _Call()
            # No per-call ``timeout``: pypsrp would then use timeout + 2 s as both the
            # connect and the read timeout of the HTTP request, in place of the session's
            # (connect_timeout_s, operation timeout + ANSWER_GRACE_S); the OperationTimeout
            # header is the session's operation_timeout either way.
            work = functools.partial(self._with_session, lambda wsman: wsman.invoke(
                action, resource_uri, body, option_set=options, selector_set=selectors), call,
                action in REPEATABLE)
            running = asyncio.get_running_loop().run_in_executor(
                self._workers, functools.partial(contextvars.copy_context().run, work))
            try:
                return await asyncio.wait_for(asyncio.shield(running), self.deadline_s)
            except asyncio.CancelledError:  # its caller gave up (the host check found the
                call.abandoned = True        # host unreachable): the thread ends by itself
                running.add_done_callback(_forget)
                raise
            except TimeoutError:
                call.abandoned = True
                running.add_done_callback(_forget)
                raise CimUnreachable(f"{self.settings.where}: the WinRM service did not "
                                     f"complete its answer within {self.deadline_s:.0f} s; "
                                     "the connection is dropped") from None

    def _check_refusal(self) -> None:
        refused = self._refused
        if refused is None:
            return
        since, said = refused
        left = CREDENTIALS_RETRY_S - (time.monotonic() - since)
        if left > 0:
            raise CimAccessDenied(f"{said} ({CREDENTIALS_RETRY_S - left:.0f} s ago; not "
                                  f"tried again for {left:.0f} s, so that failed logons do "
                                  "not lock the account out)")

    def _with_session(self, work: Callable[[WSMan], Element], call: _Call,
                      repeatable: bool = False) -> Element:
        """``work`` on an idle session, or a new one. A reused session the host no longer
        accepts (it dropped the connection, and pypsrp re-authenticated but sealed the
        message with the old context: 400 or 401, nothing done) is replaced once; so is
        one whose connection was reset before any byte of the answer when the request is
        ``repeatable`` (REPEATABLE). A new session's credentials refused are remembered
        (``_check_refusal``); any answer forgets them."""
        wsman, reused = self._take()
        try:
            return self._answered(self._run(wsman, work, call))
        except CimError as error:
            if not reused:
                self._note_refusal(error)
            reset = repeatable and getattr(error, "reset_unanswered", False)
            if not (reused and (getattr(error, "stale_session", False) or reset)) \
                    or call.abandoned:
                raise
            if reset:
                log.info("%s: a kept-alive connection was reset before its answer (the "
                         "host restarted?); the request is sent again on a new one",
                         self.settings.where)
        try:
            return self._answered(self._run(self._open(), work, call))
        except CimError as error:
            self._note_refusal(error)
            raise

    def _note_refusal(self, error: CimError) -> None:
        if isinstance(error, CimAccessDenied) and getattr(error, "stale_session", False):
            self._refused = (time.monotonic(), str(error))

    def _answered(self, body: Element) -> Element:
        self._refused = None
        return body

    def _run(self, wsman: WSMan, work: Callable[[WSMan], Element], call: _Call) -> Element:
        try:
            envelope = self._guarded(lambda: work(wsman))
        except _Answered as answered:  # the host answered: the session is sound, unless
            if getattr(answered.error, "stale_session", False):  # it could not be read
                wsman.close()
            else:
                self._kept(wsman, call)
            raise answered.error from None
        except BaseException:
            wsman.close()  # a failed session may hold a broken security context
            raise
        self._kept(wsman, call)
        body = envelope.find(q(S, "Body"))
        if body is None:
            raise CimError(f"{self.settings.where}: the WinRM answer has no SOAP body")
        return body

    def _take(self) -> tuple[WSMan, bool]:
        """An idle session used within IDLE_SESSION_S (True), else a new one (False)."""
        while True:
            with self._lock:
                if not self._idle:
                    return self._open(), False
                wsman, used = self._idle.pop()
            if time.monotonic() - used < IDLE_SESSION_S:
                return wsman, True
            wsman.close()

    def _kept(self, wsman: WSMan, call: _Call) -> None:
        """A session back among the idle ones; closed when its request was abandoned."""
        if call.abandoned:
            wsman.close()
            return
        with self._lock:
            self._idle.append((wsman, time.monotonic()))

    def _open(self) -> WSMan:
        s = self.settings
        # verify_tls = false wins over a ca_file left in the configuration
        verify: Any = (str(s.ca_file) if s.ca_file else True) if s.verify_tls else False
        extra: dict[str, Any] = {}
        if s.auth == "certificate":
            extra = {"certificate_pem": str(s.certificate_pem),
                     "certificate_key_pem": str(s.certificate_key_pem)}
        return WSMan(
            s.host, max_envelope_size=s.max_envelope_bytes,
            operation_timeout=s.operation_timeout_s, port=s.port, username=s.username,
            password=s.password, ssl=s.ssl, path=s.path, auth=s.auth,
            cert_validation=verify, connection_timeout=int(s.connect_timeout_s),
            read_timeout=int(s.operation_timeout_s + ANSWER_GRACE_S), no_proxy=True, **extra)

    def close(self) -> None:
        with self._lock:
            sessions, self._idle = self._idle, []
        for wsman, _ in sessions:
            wsman.close()
        self._workers.shutdown(wait=False, cancel_futures=True)

    # --- errors ---------------------------------------------------------------------------

    def _guarded(self, work: Callable[[], _T]) -> _T:
        where = self.settings.where
        try:
            return work()
        except (AuthenticationError, SpnegoError, ImportError) as error:
            raise self._logon_failed(error) from None
        except WSManFaultError as error:
            raise _Answered(self._fault(error)) from None
        except WinRMTransportError as error:
            raise _Answered(_http_error(where, error)) from None
        except requests.exceptions.SSLError as error:
            raise CimUnavailable(f"{where}: the server's TLS certificate is not trusted "
                                 f"({_reason(error)}); give a CA file or turn verification "
                                 "off") from None
        except requests.exceptions.ChunkedEncodingError:
            raise CimUnreachable(f"{where}: the connection broke during the WinRM service's "
                                 "answer") from None
        except requests.exceptions.Timeout as error:
            raise self._timed_out(error) from None
        except requests.exceptions.RequestException as error:
            raise _unreached(where, error) from None
        except WinRMError as error:
            raise CimError(f"{where}: {faults.one_line(str(error))}") from None
        except (ParseError, ValueError) as error:  # DefusedXmlException is a ValueError
            raise self._not_taken(error) from None

    def _not_taken(self, error: ParseError | ValueError) -> CimError:
        """An answer pypsrp could not take: not well-formed XML (pypsrp reads every
        answer; CimUnavailable), or a 401 offering another SPNEGO scheme than ``auth``
        logs on with (CimAuthNotOffered, ``_incompatible``). Any other ValueError is
        raised as it is: nothing the host answered explains it."""
        if isinstance(error, ParseError | DefusedXmlException):
            return CimUnavailable(f"{self.settings.where}: the WinRM service's answer is not "
                                  f"well-formed XML ({faults.one_line(str(error))[:200]})")
        scheme = _incompatible(error)
        if scheme is None:
            raise error
        return self._not_offered([scheme])

    def _logon_failed(self, error: Exception) -> CimAccessDenied:
        """The host refused the credentials (HTTP 401: AuthenticationError), or the
        security library could not make the logon, before or while the host
        re-challenged: no Kerberos ticket (expired, with no password to get another), no
        KDC, clock skew, or no Kerberos library on this machine (pyspnego's ImportError).
        Only the host's refusal counts towards the account's lockout, so only it is
        marked to be noted as a refusal (``_note_refusal``)."""
        where, auth = self.settings.where, self.settings.auth
        if isinstance(error, AuthenticationError):
            offered = _offered(error)
            if offered is not None and auth in _SCHEMES and not (
                    _SCHEMES[auth] & {scheme.lower() for scheme in offered}):
                return self._not_offered(offered)
            return _stale(CimAccessDenied(
                f"{where}: the WinRM service refused the credentials ({auth} "
                "authentication); check the user name and password"))
        return CimAccessDenied(f"{where}: cannot log on to the WinRM service: {auth} "
                               "authentication failed on this machine "
                               f"({faults.one_line(str(error))[:200]})")

    def _not_offered(self, offered: list[str]) -> CimAuthNotOffered:
        """The host's 401 offers none of the schemes the ``auth`` setting logs on with:
        not a refusal of the credentials (none was made), so requests are not held back
        as after one (``_note_refusal``); the answer names what the host offers, the
        setting to change, and how to turn the method on at the host."""
        s = self.settings
        choices = [f'"{setting}"' for scheme in offered
                   for setting in _SETTINGS.get(scheme.lower(), ())
                   if setting != "basic" or s.ssl]
        change = (f"set [wsman] auth = {' or '.join(dict.fromkeys(choices))}, or "
                  if choices else "")
        host_name = _HOST_SETTING[s.auth]
        return CimAuthNotOffered(
            f"{s.where}: the WinRM service does not offer {s.auth} authentication (it "
            f"offers {', '.join(offered)}); {change}turn {host_name} on at the host "
            f"(Set-Item WSMan:\\localhost\\Service\\Auth\\{host_name} $true)")

    def _timed_out(self, error: requests.exceptions.Timeout) -> CimUnreachable:
        where = self.settings.where
        if isinstance(error, requests.exceptions.ConnectTimeout):
            return CimUnreachable(f"{where}: cannot reach the WinRM service (no connection "
                                  f"within {self.settings.connect_timeout_s:g} s)")
        return CimUnreachable(f"{where}: no answer from the WinRM service within "
                              f"{self.settings.operation_timeout_s} s")

    def _fault(self, error: WSManFaultError) -> CimError:
        context = error.__context__
        text = getattr(context, "response_text", "") if context is not None else ""
        try:
            fault = find_fault(fromstring(text)) if text else None
        except (ParseError, DefusedXmlException, ValueError):
            fault = None
        if fault is None and isinstance(context, WinRMTransportError):
            return _http_error(self.settings.where, context)  # an answer, but no SOAP fault
        if fault is None:
            return CimError(f"{self.settings.where}: WinRM fault {error.code}: "
                            f"{faults.one_line(str(error.reason or ''))}")
        return faults.to_error(read_fault(fault), f"{self.settings.where}: ")


class _Workers(concurrent.futures.Executor):
    """Up to ``count`` daemon threads taking the work submitted in order. Not a
    ThreadPoolExecutor: Python joins its threads at exit, so a request to a hung host
    (its connection accepted, never answered) held the process for the socket's read
    timeout (70 s by default) after everything else was done (doctor's report printed,
    the agent stopped). A daemon thread only waits on the network; it ends with the
    process."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._queue: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], None]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._queue.put((future, run))
        with self._lock:
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._count:
                thread = threading.Thread(target=self._serve, daemon=True,
                                          name=f"winrm_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return future

    def _serve(self) -> None:
        while (work := self._queue.get()) is not None:
            work[1]()
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Threads end once their request has; work not yet started is cancelled
        (``cancel_futures`` is what this always does)."""
        with self._lock:
            threads = list(self._threads)
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                queued[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()


#: The HTTP authentication schemes each ``auth`` setting logs on with (pypsrp: Basic; SPNEGO
#: under the Negotiate header, or Kerberos or NTLM under their own). Certificate
#: authentication is made in the TLS handshake, and is not told apart here.
_SCHEMES = {"basic": frozenset({"basic"}), "ntlm": frozenset({"negotiate", "ntlm"}),
            "negotiate": frozenset({"negotiate", "kerberos", "ntlm"}),
            "kerberos": frozenset({"negotiate", "kerberos"})}
#: The ``auth`` settings that log on with a scheme a host offers.
_SETTINGS = {"basic": ("basic",), "negotiate": ("negotiate", "ntlm"),
             "kerberos": ("kerberos",), "ntlm": ("ntlm",)}
#: The host's WinRM setting (``WSMan:\localhost\Service\Auth\...``) each ``auth`` needs.
_HOST_SETTING = {"basic": "Basic", "ntlm": "Negotiate", "negotiate": "Negotiate",
                 "kerberos": "Kerberos"}
_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


#: pypsrp's ValueError when the host's 401 offers a SPNEGO scheme, but not the one its
#: ``auth_provider`` (``ntlm``, ``kerberos``) logs on with: the first of Negotiate,
#: Kerberos and NTLM the WWW-Authenticate names (``HTTPNegotiateAuth.handle_401``).
_INCOMPATIBLE = re.compile(r"Server responded with the auth protocol '([A-Za-z]+)' which is "
                           r"incompatible with the specified auth_provider")


def _incompatible(error: ValueError) -> str | None:
    """The scheme the host offers when ``error`` is pypsrp's refusal of a 401 offering
    another SPNEGO scheme than ``auth`` logs on with (only Kerberos against ``ntlm``, only
    NTLM against ``kerberos``); None for any other ValueError. pypsrp names only that
    scheme, not Basic the host may offer besides."""
    found = _INCOMPATIBLE.match(str(error))
    return found.group(1) if found else None


def _offered(error: AuthenticationError) -> list[str] | None:
    """The authentication schemes the host's 401 offers (its WWW-Authenticate headers,
    which requests joins with commas): from the response pypsrp raised over (a 401 to a
    request that carried credentials), else as pypsrp's message quotes them (a first
    401 offering none of the SPNEGO schemes); None when neither tells, or it lists none."""
    response = getattr(error.__context__, "response", None)
    header = response.headers.get("WWW-Authenticate") if response is not None else None
    if header is None:
        quoted = re.search(r"- actual: '(.*)'\Z", str(error), re.S)
        header = quoted.group(1) if quoted else None
    if header is None:
        return None
    schemes: list[str] = []
    for piece in header.split(","):  # a challenge, or a parameter of the one before
        words = piece.split(None, 1)
        if words and _SCHEME_NAME.fullmatch(words[0]) and words[0] not in schemes:
            schemes.append(words[0])
    return schemes or None


def _forget(done: asyncio.Future[Element]) -> None:
    """Take the outcome of a request its caller no longer waits for."""
    if not done.cancelled():
        done.exception()


def _stale(error: _E) -> _E:
    """``error`` marked as one a reused session gets when its context went stale."""
    error.stale_session = True  # type: ignore[attr-defined]
    return error


def _http_error(where: str, error: WinRMTransportError) -> CimError:
    code = error.code
    if code == 400:
        return _stale(CimUnavailable(f"{where}: the WinRM service could not read the "
                                     "request (HTTP 400)"))
    if code == 413:
        return CimResponseTooLarge(f"{where}: the request is larger than the host accepts "
                                   "(HTTP 413, MaxEnvelopeSizekb)")
    if code == 403:
        return CimAccessDenied(f"{where}: the WinRM service denied access (HTTP 403)")
    return CimUnavailable(f"{where}: the WinRM service answered HTTP {code}")


def _unreached(where: str, error: requests.exceptions.RequestException
               ) -> CimUnreachable | CimRefused:
    """The host could not be reached; marked ``reset_unanswered`` when its connection was
    reset before any byte of the answer (``_reset_unanswered``). A connection refused is
    ``CimRefused``: the host's network answered it, so the machine runs (a host powered
    off or cut off answers nothing: the connect times out, or no route to it is found)."""
    if _refused(error):
        return CimRefused(f"{where}: the WinRM service refuses connections (connection "
                          "refused: the host's network answers, but nothing listens on "
                          "the port: the WinRM service is stopped, or a firewall rejects "
                          "the connection)")
    unreachable = CimUnreachable(f"{where}: cannot reach the WinRM service ({_reason(error)})")
    if _reset_unanswered(error):
        unreachable.reset_unanswered = True  # type: ignore[attr-defined]
    return unreachable


def _refused(error: BaseException) -> bool:
    """Whether ``error`` comes of a connection refused (``ConnectionRefusedError``, which
    urllib3 wraps in a NewConnectionError, itself in a MaxRetryError and a requests
    ConnectionError), followed through arguments, reasons and causes."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        inner = todo.pop()
        if id(inner) in seen or len(seen) > 16:
            continue
        seen.add(id(inner))
        if isinstance(inner, ConnectionRefusedError):
            return True
        nested = [*inner.args, getattr(inner, "reason", None), inner.__cause__,
                  inner.__context__]
        todo += [n for n in nested if isinstance(n, BaseException)]
    return False


def _reset_unanswered(error: requests.exceptions.RequestException) -> bool:
    """Whether the connection was reset or closed before any byte of the answer: urllib3's
    "Connection aborted." around a reset, a broken pipe while sending, or http.client's
    RemoteDisconnected (no status line). A connection broken during the answer's body is
    a ChunkedEncodingError, never this."""
    if not isinstance(error, requests.exceptions.ConnectionError):
        return False
    inner = error.args[0] if error.args else None
    if not isinstance(inner, urllib3.exceptions.ProtocolError):
        return False
    cause = inner.args[1] if len(inner.args) > 1 else None
    return isinstance(cause, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))


def _reason(error: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, on one line."""
    inner: BaseException = error
    seen = 0
    while seen < 8:
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) \
            else getattr(inner, "reason", None)
        if not isinstance(nested, BaseException):
            break
        inner, seen = nested, seen + 1
    text = getattr(inner, "strerror", None) or str(inner)
    return faults.one_line(str(text))[:200]
