"""Where replayed events go when no broker is involved: JSON lines on a file or stdout.

Speed: a handshake event repeats most of its bytes from earlier events: the sensor's event
builder shares one ``tls`` block per client software, server name, chain and outcome, one
``TlsServer`` (with the chain's base64 DER), one ``ChainCertificate`` per certificate and one
hello summary per client software between events (``sensor.build``).
Serialising those again for every event was a third of the sensor's cost per handshake, so
the writer keeps their JSON text, by object identity, in a bounded table, and composes the
event around it; the small parts the builder shares too (``ecs``, ``observer``, the server's
``destination``, ``network``) are spliced in the same way, so the one serializer call per
event covers only what is the event's own (times, ids, the client, timing, counters).
The text is exactly what ``model_dump_json(by_alias=True, exclude_none=True)`` gives for the
whole event (tests compare the two on every capture).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Any, Self

from pydantic import BaseModel
from pydantic_core import to_json

from schemas.base import Ecs, Endpoint, Network, Observer
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
    X509, CertificateExtra, Ecs, Endpoint, Network,
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
#: parts (``ecs``, ``observer``, ``destination``, ``network``, ``tls`` and the first four
#: members of ``certwatch.tls``, all models the builder shares between events), whose text
#: is then put in place (see ``JsonLinesWriter._handshake``): before the keys that open
#: ``event``, ``source`` and ``certwatch``, and after the one that opens ``certwatch.tls``.
#: A ``"`` inside a JSON string is always escaped (``\"``), so ``,"source":{`` and the others
#: can only be the members themselves; ``@timestamp`` (a date) comes before ``event``, and
#: between ``certwatch`` and ``"tls":{`` there is only ``schema_version`` (an integer).
_HANDSHAKE_SHARED_DETAIL = ("client_hello", "server_hello", "server_chain", "client_chain")
_HANDSHAKE_EXCLUDE: dict[str, Any] = {
    "ecs": True, "observer": True, "destination": True, "network": True, "tls": True,
    "certwatch": {"tls": dict.fromkeys(_HANDSHAKE_SHARED_DETAIL, True)}}
_EVENT_OPENS, _SOURCE_OPENS = ',"event":{', ',"source":{'
_CERTWATCH_OPENS, _DETAIL_OPENS = ',"certwatch":{', '"tls":{'


class JsonLinesWriter:
    """Writes each event or alert as one ECS JSON document per line (``-`` is stdout)."""

    def __init__(self, path: str) -> None:
        self._owned = path != "-"
        self._stream: IO[str] = open(path, "w", encoding="utf-8") if self._owned else sys.stdout  # noqa: SIM115
        self.written = 0
        # id(model) -> (model, its JSON): the model is kept so its id cannot be reused.
        self._fragments: dict[int, tuple[BaseModel, str]] = {}
        # (ids of a TlsDetail's first four members) -> (those members, their JSON text).
        self._heads: dict[tuple[int, int, int, int], tuple[Any, Any, Any, Any, str]] = {}

    def write(self, event: BaseModel) -> None:
        self.write_json(self.to_json(event))

    def write_json(self, text: str) -> None:
        """Write one line already made by :meth:`to_json` (a caller that also needs the text,
        e.g. to publish it, composes it once)."""
        self._stream.write(text)
        self._stream.write("\n")
        self.written += 1

    def to_json(self, model: BaseModel) -> str:
        """``model.model_dump_json(by_alias=True, exclude_none=True)``, reusing the text of
        shared parts written before."""
        cls = type(model)
        if cls in _SHARED:
            return self._fragment(model)
        if cls is HandshakeEvent:
            return self._handshake(model)  # type: ignore[arg-type]
        return self._composed(model, cls)

    def _fragment(self, model: BaseModel) -> str:
        """The JSON of a model of a ``_SHARED`` class, from the table when written before."""
        hit = self._fragments.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1]
        text = _dump(model)
        if len(self._fragments) >= FRAGMENT_ENTRIES:
            self._fragments.clear()
        self._fragments[id(model)] = (model, text)
        return text

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
        (``ecs``, ``observer``, ``destination``, ``network``, ``tls``; ``certwatch.tls``'s
        hello summaries and chains, which come first in ``TlsDetail``) from the fragment
        table, put in place. The result is the text of ``_composed`` (tests compare it with
        ``model_dump_json``)."""
        text = HandshakeEvent.__pydantic_serializer__.to_json(
            event, exclude=_HANDSHAKE_EXCLUDE, by_alias=True, exclude_none=True).decode()
        event_at = text.find(_EVENT_OPENS)
        source_at = text.find(_SOURCE_OPENS, event_at)
        certwatch_at = text.find(_CERTWATCH_OPENS, source_at)
        opens = text.find(_DETAIL_OPENS, certwatch_at) + len(_DETAIL_OPENS)
        if event_at < 0 or source_at < 0 or certwatch_at < 0 or opens < len(_DETAIL_OPENS):
            return self._composed(event, HandshakeEvent)  # not the layout expected
        fragment = self._fragment  # every part put in place here is of a _SHARED class
        rest = text[opens:]
        return "".join((
            text[:event_at], ',"ecs":', fragment(event.ecs),
            text[event_at:source_at], ',"observer":', fragment(event.observer),
            text[source_at:certwatch_at], ',"destination":', fragment(event.destination),
            ',"network":', fragment(event.network), ',"tls":', fragment(event.tls),
            text[certwatch_at:opens], self._detail_head(event.certwatch.tls),
            "" if rest[0] == "}" else ",", rest))

    def _detail_head(self, detail: TlsDetail) -> str:
        """The text of ``certwatch.tls``'s first four members (hello summaries and chains),
        kept by the identity of the four values: the builder shares the summaries and each
        chain's list of entries between events, so most events repeat one of a few heads.
        An empty chain is keyed as such (its list is made per event)."""
        hello, server_hello = detail.client_hello, detail.server_hello
        server_chain, client_chain = detail.server_chain, detail.client_chain
        key = (id(hello), id(server_hello), id(server_chain) if server_chain else 0,
               id(client_chain) if client_chain else 0)
        hit = self._heads.get(key)
        if (hit is not None and hit[0] is hello and hit[1] is server_hello
                and (hit[2] is server_chain or not server_chain)
                and (hit[3] is client_chain or not client_chain)):
            return hit[4]
        to_json = self.to_json  # not _fragment: another producer may put other models here
        parts = []
        if hello is not None:
            parts.append('"client_hello":' + to_json(hello))
        if server_hello is not None:
            parts.append('"server_hello":' + to_json(server_hello))
        parts.append('"server_chain":[' + ",".join(
            [to_json(entry) for entry in server_chain]) + "]")
        parts.append('"client_chain":[' + ",".join(
            [to_json(entry) for entry in client_chain]) + "]")
        head = ",".join(parts)
        if len(self._heads) >= FRAGMENT_ENTRIES:
            self._heads.clear()
        # The values are kept so that their ids cannot be reused while the entry lives.
        self._heads[key] = (hello, server_hello, server_chain, client_chain, head)
        return head

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
