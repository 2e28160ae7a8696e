"""How long `make demo` takes on this machine, step by step, against its goal of 5 minutes.

Runs the demo's flow (kompress_testing.demo: S3, the emulated API, the node agent and the operator as
processes; the trained test model; examples/demo.yaml) and prints, as `figure: value` lines:

    stack start            S3, API server, node agent and operator ready
    model and data upload  the trained test model and its held-out rows, to S3
    apply to Planned       kubectl apply until the Planned condition (the planning pod's run included)
    Planned to Succeeded   the worker pod: queued, running, published
    total                  what a user waits for, and its ratio to the 300 s goal
    worker run / peak memory, planning pod run / peak memory   (the node agent's container records)

Usage: python bench/bench_demo.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from kompress_testing.demo import flow
from kompress_testing.demo.stack import running_stack

GOAL_S = 300.0


def main() -> int:
    marks: dict[str, float] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp, running_stack(Path(tmp)) as stack:
        marks["stack start"] = time.monotonic()
        job = flow.with_endpoint(flow.demo_job(), stack.s3.endpoint)
        flow.prepare(stack, job)
        marks["model and data upload"] = time.monotonic()
        flow.apply_job(stack, job)
        name = job["metadata"]["name"]
        while True:
            cjob = stack.client.get(f"{flow.CJOBS}/{name}")
            conditions = {c["type"]: c["status"] for c in (cjob.get("status") or {}).get("conditions") or []}
            if conditions.get("Planned") == "True" and "apply to Planned" not in marks:
                marks["apply to Planned"] = time.monotonic()
            if (cjob.get("status") or {}).get("phase") in flow.TERMINAL:
                break
            stack.check_alive()
            time.sleep(0.2)
        marks["Planned to Succeeded"] = time.monotonic()
        phase = cjob["status"]["phase"]
        records = flow.container_records(stack)
    previous = started
    for step, at in marks.items():
        print(f"{step}: {at - previous:.1f} s")
        previous = at
    total = previous - started
    print(f"total: {total:.1f} s (ratio to the {GOAL_S:.0f} s goal: {total / GOAL_S:.2f})")
    for record in records:
        role = "worker" if "-worker-" in record["pod"] else "planning pod" if "-plan-" in record["pod"] else record["pod"]
        print(f"{role} run: {record['seconds']:.1f} s, exit {record['exitCode']}")
        print(f"{role} peak memory: {record['peakMemoryBytes'] / 2**20:.0f} MiB"
              + (f" (ratio to its limit: {record['peakMemoryBytes'] / record['memoryLimitBytes']:.2f})" if record.get("memoryLimitBytes") else ""))
    print(f"phase: {phase}")
    return 0 if phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
