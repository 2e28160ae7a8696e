"""`python -m kompress_testing.apiserver --port 8001 --crd crds/kompress.dev_compressionjobs.yaml`

Serves the emulated API server in the foreground until interrupted (SIGINT/SIGTERM), so a demo or
a developer can point kubectl and an operator at it. Prints the URL; writes a kubeconfig if asked.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import sys

import yaml

from kompress_testing.apiserver.runner import serve, write_kubeconfig
from kompress_testing.apiserver.server import ADMIN_TOKEN, ApiServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.apiserver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--crd", action="append", default=[], type=pathlib.Path, help="a CRD YAML to install (repeatable)")
    parser.add_argument("--kubeconfig", type=pathlib.Path, help="write an admin kubeconfig here")
    parser.add_argument("--service-account-kubeconfig", action="append", default=[], metavar="NAMESPACE/NAME=PATH",
                        help="write a kubeconfig that authenticates as this ServiceAccount (repeatable): an operator's or a node agent's own identity")
    parser.add_argument("--rbac", action="store_true", help="enforce RBAC for every token but the admin's")
    parser.add_argument("--plain-http", action="store_true", help="serve HTTP, not HTTPS (kubectl then sends no tokens)")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ApiServer(rbac_enforced=args.rbac) as server:
        for path in args.crd:
            for document in yaml.safe_load_all(path.read_text()):
                if document:
                    server.install_crd(document)
        runner, url = await serve(server, args.host, args.port, tls=not args.plain_http)
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, url, ADMIN_TOKEN)
        for entry in args.service_account_kubeconfig:
            account, _, target = entry.partition("=")
            namespace, _, name = account.partition("/")
            write_kubeconfig(target, url, server.service_account_token(namespace, name), namespace)
        print(f"emulated Kubernetes API server at {url} (admin token: {ADMIN_TOKEN})", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
