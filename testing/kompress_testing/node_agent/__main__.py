"""`python -m kompress_testing.node_agent --kubeconfig KUBECONFIG --state-dir DIR`

Runs the node agent in the foreground until SIGINT or SIGTERM, then stops every pod it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from kompress_testing.node_agent.agent import NodeAgent
from kompress_testing.node_agent.config import AgentConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.node_agent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the agent's own credentials")
    parser.add_argument("--state-dir", type=Path, required=True, help="pod sandboxes, volumes and logs (logs/<ns>_<pod>_<container>.log)")
    parser.add_argument("--node-name", default="kompress-node")
    parser.add_argument("--pod-cidr", help="loopback network for pod IPs (default: a random 127.x.y.0/24)")
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the node advertises (pods asking for more stay Pending)")
    parser.add_argument("--keep-node", action="store_true", help="leave the Node NotReady on stop instead of deleting it")
    parser.add_argument("--max-grace", type=float, default=30.0, help="cap on a deleted pod's grace period, seconds")
    parser.add_argument("--no-memory-limits", action="store_true", help="do not kill containers over their memory limit")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    config = AgentConfig(kubeconfig=args.kubeconfig, state_dir=args.state_dir, node_name=args.node_name, gpus=args.gpus,
                         delete_node_on_stop=not args.keep_node, max_grace_s=args.max_grace, enforce_memory_limits=not args.no_memory_limits,
                         **({"pod_cidr": args.pod_cidr} if args.pod_cidr else {}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent = NodeAgent(config)
    await agent.run(stop, lambda: print(f"node agent: node {config.node_name} ready, pod IPs in {config.pod_cidr}, "
                                        f"state in {config.state_dir}", flush=True))


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.DEBUG if arguments.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(main(arguments))
    except KeyboardInterrupt:
        sys.exit(130)
