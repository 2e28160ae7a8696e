"""Serving a watch: the replay (current objects, or logged events after a resourceVersion), then live
events, as JSON lines; ADDED/DELETED when an object enters or leaves a selector; bookmarks; the
`sendInitialEvents` end marker; `timeoutSeconds`; 410 Gone for a resourceVersion the log has lost;
Tables for `kubectl get -w` (column definitions in the first event only, as a real server sends them).

Must not: write objects. Subscribing and taking the replay happen in one synchronous step (no await
in between), so no event is lost or repeated between them.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp.web

from kompress_testing.apiserver import errors as E
from kompress_testing.apiserver import selectors, tables
from kompress_testing.apiserver.request_info import Call
from kompress_testing.apiserver.resources import ResourceType
from kompress_testing.apiserver.store import Event

if TYPE_CHECKING:
    from kompress_testing.apiserver.server import ApiServer

Visible = Callable[[dict[str, Any] | None], bool]


def seen_as(event: Event, visible: Visible) -> tuple[str, dict[str, Any]] | None:
    """An event as a selector-filtered watch sees it (the watch cache's rules)."""
    now, before = visible(event.object), visible(event.old)
    if event.type == "DELETED":
        return ("DELETED", copy.deepcopy(event.object)) if before or now else None
    if now and not before:
        return ("ADDED", copy.deepcopy(event.object))
    if now and before:
        return (event.type, copy.deepcopy(event.object))
    if before and not now:
        return ("DELETED", copy.deepcopy(event.object))
    return None


def _visibility(call: Call, rtype: ResourceType) -> Visible:
    match = selectors.matcher(call.params.get("labelSelector"), call.params.get("fieldSelector"), rtype.plural, rtype.custom)
    namespace = call.info.namespace if rtype.namespaced else None
    name = call.info.name

    def visible(obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        return (namespace is None or meta.get("namespace") == namespace) and (name is None or meta.get("name") == name) and match(obj)

    return visible


async def serve(server: ApiServer, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
    params = call.params
    store = server.store
    visible = _visibility(call, rtype)
    namespace = call.info.namespace if rtype.namespaced else None
    timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
    bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
    initial_events = params.get("sendInitialEvents") in ("true", "1")
    since = params.get("resourceVersion") or ""

    queue = store.subscribe(rtype.storage)
    try:
        replay: list[tuple[str, dict[str, Any]]] = []
        error: dict[str, Any] | None = None
        if initial_events or since in ("", "0"):
            replay = [("ADDED", obj) for _, obj in store.items(rtype.storage, namespace) if visible(obj)]
        else:
            try:
                since_rv = int(since)
            except ValueError as exc:
                raise E.bad_request(f"invalid resource version: {since!r}") from exc
            events = store.events_since(rtype.storage, since_rv)
            if events is None:
                error = E.gone(f"too old resource version: {since_rv} ({store.compacted + 1})").status()
            else:
                replay = [converted for event in events if (converted := seen_as(event, visible))]
        current_rv = store.rv

        accept = call.raw.headers.get("Accept")
        as_table = tables.wants_table(accept)
        include = params.get("includeObject", "Metadata")
        headers_sent = False
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        await response.prepare(call.raw)

        async def send(event_type: str, obj: dict[str, Any]) -> None:
            nonlocal headers_sent
            if as_table and event_type not in ("BOOKMARK", "ERROR"):
                obj = tables.table(rtype, [server.present(rtype, obj)], obj["metadata"].get("resourceVersion", ""),
                                   include, headers=not headers_sent, version=tables.table_version(accept))
                headers_sent = True
            elif event_type != "ERROR":
                obj = server.present(rtype, obj)
            await response.write(json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n")

        def bookmark(rv: int, initial_end: bool = False) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return {"apiVersion": rtype.api_version, "kind": rtype.kind, "metadata": meta}

        try:
            if error is not None:
                await send("ERROR", error)
                await response.write_eof()
                return response
            for event_type, obj in replay:
                await send(event_type, obj)
            if initial_events and bookmarks:
                await send("BOOKMARK", bookmark(current_rv, initial_end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                wait = server.bookmark_interval if bookmarks else None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wait = min(wait, remaining) if wait is not None else remaining
                try:
                    event = await asyncio.wait_for(queue.get(), wait) if wait is not None else await queue.get()
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        await send("BOOKMARK", bookmark(store.rv))
                    continue
                converted = seen_as(event, visible)
                if converted:
                    await send(*converted)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; a cancelled handler (client disconnect) unwinds through finally
        return response
    finally:
        store.unsubscribe(rtype.storage, queue)
