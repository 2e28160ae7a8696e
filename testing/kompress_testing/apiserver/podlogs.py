"""`GET pods/NAME/log` (`kubectl logs [-f] [--tail N] [-c C]`): proxied to the kubelet of the pod's node.

As kube-apiserver does: the pod's container is chosen (the only one, or `?container=`), the pod's Node
gives the kubelet's address (`status.addresses` InternalIP, `status.daemonEndpoints.kubeletEndpoint.Port`),
and the kubelet's `/containerLogs/NS/POD/CONTAINER` answer is streamed back (`follow`, `tailLines`,
`limitBytes`, `timestamps` passed through). Plain HTTP to the kubelet: both are on loopback here.
Must not: read logs itself; with no kubelet on the node (no node agent), the client gets the error a
real server gives when it cannot reach one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.web

from kompress_testing.apiserver import errors as E
from kompress_testing.apiserver.request_info import Call

if TYPE_CHECKING:
    from kompress_testing.apiserver.server import ApiServer

PASSED = ("follow", "tailLines", "limitBytes", "timestamps", "sinceSeconds", "previous")


def _container(pod: dict[str, Any], wanted: str | None) -> str:
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    name = pod["metadata"]["name"]
    if wanted:
        if wanted not in names:
            raise E.bad_request(f"container {wanted} is not valid for pod {name}")
        return wanted
    if len(names) != 1:
        raise E.bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")
    return names[0]


def _kubelet_url(node: dict[str, Any]) -> str | None:
    status = node.get("status") or {}
    address = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    return f"http://{address}:{port}" if address and port else None


async def serve(server: ApiServer, call: Call, pod: dict[str, Any]) -> aiohttp.web.StreamResponse:
    container = _container(pod, call.params.get("container"))
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    status = next((s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") == container), {})
    waiting = (status.get("state") or {}).get("waiting")
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name or (waiting and not (status.get("state") or {}).get("terminated")) or not status:
        reason = (waiting or {}).get("reason", "ContainerCreating")
        raise E.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    nodes = server.registry.get("", "v1", "nodes")
    node = server.store.get(nodes.storage, None, node_name) if nodes is not None else None
    base = _kubelet_url(node) if node else None
    if base is None:
        raise E.bad_request(f"no kubelet address for node {node_name}")
    query = {k: call.params[k] for k in PASSED if k in call.params}
    url = f"{base}/containerLogs/{namespace}/{name}/{container}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as session:
            async with session.get(url, params=query) as upstream:
                if upstream.status >= 400:
                    raise E.bad_request((await upstream.text()).strip() or f"the kubelet answered {upstream.status}")
                response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain", "Cache-Control": "no-cache, private"})
                await response.prepare(call.raw)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
    except aiohttp.ClientError as err:
        raise E.bad_request(f"Get \"{url}\": {err}") from err
