"""Where replayed events go when no broker is involved: JSON lines on a file or stdout.

Speed: a handshake event repeats most of its bytes from earlier events: the sensor's event
builder shares one ``tls`` block per client software, server name, chain and outcome, one
``TlsServer`` (with the chain's base64 DER), one ``ChainCertificate`` per certificate and one
hello summary per client software between events (``sensor.build``).
Serialising those again for every event was a third of the sensor's cost per handshake, so
the writer keeps their JSON text, by object identity, in a bounded table, and composes the
event around it. The text is exactly what ``model_dump_json(by_alias=True,
exclude_none=True)`` gives for the whole event (tests compare the two).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Any, Self

from pydantic import BaseModel
from pydantic_core import to_json

from schemas.base import Observer
from schemas.events import (
    CertificateEvent,
    CertificateExtension,
    HandshakeEvent,
    HandshakeExtension,
)
from schemas.tls import ClientHelloSummary, ServerHelloSummary, Tls, TlsDetail, TlsServer
from schemas.x509 import X509, CertificateExtra, ChainCertificate, Hashes

#: Models the event builder shares between events: their JSON text is kept.
_SHARED: frozenset[type[BaseModel]] = frozenset({
    Tls, TlsServer, ChainCertificate, ClientHelloSummary, ServerHelloSummary, Observer, Hashes,
    X509, CertificateExtra,
})
#: Models composed field by field, so that the shared models inside them are reused.
_COMPOSED: frozenset[type[BaseModel]] = frozenset({
    HandshakeEvent, HandshakeExtension, TlsDetail, CertificateEvent, CertificateExtension,
})
#: Entries of the fragment table; a full table is emptied (it only saves work).
FRAGMENT_ENTRIES = 4096


def _dump(model: BaseModel) -> str:
    return model.__pydantic_serializer__.to_json(
        model, by_alias=True, exclude_none=True).decode()


#: Fields of the composed models that hold shared (or composed) models; each composed
#: model's other fields are serialised together, one serializer call per run of them.
_COMPOSED_FIELDS: dict[type[BaseModel], frozenset[str]] = {
    HandshakeEvent: frozenset({"tls", "certwatch"}),
    HandshakeExtension: frozenset({"tls"}),
    TlsDetail: frozenset({"client_hello", "server_hello", "server_chain", "client_chain"}),
    CertificateEvent: frozenset({"hash", "x509", "certwatch"}),
    CertificateExtension: frozenset({"certificate"}),
}
#: A step of a composed model's plan: ``(None, run)`` serialises the fields named in ``run``
#: in one call; ``(name, '"key":')`` writes one composed field.
_Step = tuple[str | None, Any]


def _plan(cls: type[BaseModel]) -> tuple[_Step, ...]:
    """The steps writing ``cls``, in the order pydantic writes its fields: runs of plain
    fields (one serializer call each: fewer calls is most of the saving) and the fields
    whose values may be shared models, written one by one."""
    steps: list[_Step] = []
    run: set[str] = set()
    for name, info in cls.model_fields.items():
        if name not in _COMPOSED_FIELDS[cls]:
            run.add(name)
            continue
        if run:
            steps.append((None, run))
            run = set()
        steps.append((name, to_json(info.serialization_alias or info.alias or name).decode()
                      + ":"))
    if run:
        steps.append((None, run))
    return tuple(steps)


_PLANS = {cls: _plan(cls) for cls in _COMPOSED}

#: A handshake event is written with one serializer call for everything but its shared
#: parts (``tls`` and the first four members of ``certwatch.tls``, all shared models), whose
#: text is then put in place (see ``JsonLinesWriter._handshake``). Where: the key that opens
#: ``certwatch`` and, after it, the one that opens ``certwatch.tls``. A ``"`` inside a JSON
#: string is always escaped (``\"``), so ``,"certwatch":{`` can only be the member itself,
#: and between it and ``"tls":{`` there is only ``schema_version`` (an integer).
_HANDSHAKE_SHARED_DETAIL = ("client_hello", "server_hello", "server_chain", "client_chain")
_HANDSHAKE_EXCLUDE: dict[str, Any] = {
    "tls": True, "certwatch": {"tls": dict.fromkeys(_HANDSHAKE_SHARED_DETAIL, True)}}
_CERTWATCH_OPENS, _DETAIL_OPENS = ',"certwatch":{', '"tls":{'


class JsonLinesWriter:
    """Writes each event or alert as one ECS JSON document per line (``-`` is stdout)."""

    def __init__(self, path: str) -> None:
        self._owned = path != "-"
        self._stream: IO[str] = open(path, "w", encoding="utf-8") if self._owned else sys.stdout  # noqa: SIM115
        self.written = 0
        # id(model) -> (model, its JSON): the model is kept so its id cannot be reused.
        self._fragments: dict[int, tuple[BaseModel, str]] = {}

    def write(self, event: BaseModel) -> None:
        self._stream.write(self.to_json(event))
        self._stream.write("\n")
        self.written += 1

    def to_json(self, model: BaseModel) -> str:
        """``model.model_dump_json(by_alias=True, exclude_none=True)``, reusing the text of
        shared parts written before."""
        cls = type(model)
        if cls in _SHARED:
            hit = self._fragments.get(id(model))
            if hit is not None and hit[0] is model:
                return hit[1]
            text = _dump(model)
            if len(self._fragments) >= FRAGMENT_ENTRIES:
                self._fragments.clear()
            self._fragments[id(model)] = (model, text)
            return text
        if cls is HandshakeEvent:
            return self._handshake(model)  # type: ignore[arg-type]
        return self._composed(model, cls)

    def _composed(self, model: BaseModel, cls: type[BaseModel]) -> str:
        plan = _PLANS.get(cls)
        if plan is None:
            return _dump(model)
        serializer = model.__pydantic_serializer__
        parts = []
        for name, arg in plan:
            if name is None:
                text = serializer.to_json(model, include=arg, by_alias=True,
                                          exclude_none=True).decode()
                if len(text) > 2:  # not "{}": every field of the run was None
                    parts.append(text[1:-1])
                continue
            value = getattr(model, name)
            if value is not None:
                parts.append(arg + self._value(value))
        return "{" + ",".join(parts) + "}"

    def _handshake(self, event: HandshakeEvent) -> str:
        """A handshake event: its own members in one serializer call, the shared parts
        (``tls``; ``certwatch.tls``'s hello summaries and chains, which come first in
        ``TlsDetail``) from the fragment table, put in place. The result is the text of
        ``_composed`` (tests compare it with ``model_dump_json``)."""
        text = HandshakeEvent.__pydantic_serializer__.to_json(
            event, exclude=_HANDSHAKE_EXCLUDE, by_alias=True, exclude_none=True).decode()
        at = text.find(_CERTWATCH_OPENS)
        opens = text.find(_DETAIL_OPENS, at) + len(_DETAIL_OPENS)
        if at < 0 or opens < len(_DETAIL_OPENS):  # not the layout expected: the slow way
            return self._composed(event, HandshakeEvent)
        detail = event.certwatch.tls
        parts = []
        if detail.client_hello is not None:
            parts.append('"client_hello":' + self.to_json(detail.client_hello))
        if detail.server_hello is not None:
            parts.append('"server_hello":' + self.to_json(detail.server_hello))
        parts.append('"server_chain":[' + ",".join(
            [self.to_json(entry) for entry in detail.server_chain]) + "]")
        parts.append('"client_chain":[' + ",".join(
            [self.to_json(entry) for entry in detail.client_chain]) + "]")
        rest = text[opens:]
        return "".join((text[:at], ',"tls":', self.to_json(event.tls), text[at:opens],
                        ",".join(parts), "" if rest[0] == "}" else ",", rest))

    def _value(self, value: Any) -> str:
        if isinstance(value, BaseModel):
            return self.to_json(value)
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "[" + ",".join([self.to_json(item) for item in value]) + "]"
        return to_json(value).decode()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
