"""`make demo` (`python -m kompress_testing.demo`): Kompress end to end on this machine, no cluster, no GPU.

S3 (moto), the Kubernetes API (emulated), the node agent (pods as local processes) and the operator
start; a tiny model goes to S3; `kubectl apply -f examples/demo.yaml`; the operator plans it, the
worker compresses it and publishes it back to S3; the status, the S3 listing with the manifest and the
plan-versus-actual size are printed; everything stops. Exit 0 only for a Succeeded job whose published
files all match the manifest. Logs of every part stay in .demo/logs/ and .demo/node/logs/.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from kompress_testing.demo import flow, report
from kompress_testing.cluster.build import binaries_dir, kubectl_binary
from kompress_testing.demo.stack import REPO_ROOT, Stack, StackError, port_free, running_stack, tail


class Demo:
    def __init__(self, workdir: Path, timeout: float, keep: bool = False) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.keep = keep
        self.started = time.monotonic()
        self.step = "starting"

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def doing(self, step: str) -> None:
        self.step = step
        self.say(step)

    def run(self) -> int:
        try:
            kubectl_binary(), binaries_dir()
        except RuntimeError as err:  # `make demo` builds both first; a bare `python -m` may not have
            raise StackError(str(err)) from None
        job = flow.demo_job()
        port = flow.s3_port_of(job)
        if not port_free(port):
            self.say(f"port {port} (the S3 endpoint in examples/demo.yaml) is taken: the demo uses another and applies the job pointed at it")
            port = 0
        self.doing("starting S3, the Kubernetes control plane, the node agent (kubelet) and the operator")
        with running_stack(self.workdir, s3_port=port or None, progress=lambda text: self.say("  " + text)) as stack:
            try:
                return self._flow(stack, flow.with_endpoint(job, stack.s3.endpoint))
            except StackError as err:
                self.failed(str(err), stack)
                return 1

    def _flow(self, stack: Stack, job: dict[str, Any]) -> int:
        self.doing(f"uploading a small trained GLM4-MoE ({flow.DEMO_MODEL.relative_to(REPO_ROOT)}) and its held-out conversations "
                   f"(never trained on) to S3; creating the Secret {flow.SECRET_NAME} with the S3 keys, and the workers' ServiceAccount")
        for uri, size in flow.prepare(stack, job):
            self.say(f"  {uri}  {report.human(size)}")

        self.doing("$ kubectl apply -f examples/demo.yaml")
        self.say("  " + flow.apply_job(stack, job))
        self.doing("$ kubectl get compressionjobs --watch")
        watch = flow.Watch(stack, lambda line: print(f"         {line}", flush=True))
        try:
            final = flow.wait_finished(stack, job["metadata"]["name"], self.timeout)
        finally:
            watch.stop()

        print()
        print(report.status_report(final))
        if final["status"]["phase"] != "Succeeded":
            self.failed(f"the CompressionJob ended {final['status']['phase']}", stack, cjob=final)
            return 1
        output_uri = final["status"]["result"]["outputUri"]
        self.doing(f"reading {output_uri} back from S3 and checking every file against the manifest")
        published = flow.read_published(stack, output_uri)
        print(report.listing_report(published, output_uri))
        print(report.plan_vs_actual(final, flow.container_records(stack), published))
        print()
        if published.checksum_problems:
            self.failed("the published checkpoint does not match its manifest", stack, cjob=final)
            return 1
        self.say("Succeeded: the checkpoint is in S3 and matches its manifest.")
        if self.keep:
            self.say(f"everything keeps running until Ctrl-C; in another shell: export KUBECONFIG={stack.kubeconfig}; "
                     "kubectl get compressionjobs,jobs,pods; kubectl describe compressionjob demo; kubectl logs <pod>")
            try:
                while True:
                    stack.check_alive()
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        self.say("stopping everything the demo started")
        return 0

    def failed(self, what: str, stack: Stack | None, cjob: dict[str, Any] | None = None) -> None:
        print(f"\nFAILED while {self.step}: {what}", file=sys.stderr)
        if stack is None:
            return
        if cjob is None:
            try:
                cjob = stack.client.get(f"{flow.CJOBS}/demo")
            except Exception:  # noqa: BLE001 - diagnostics are best effort
                cjob = None
        if cjob is not None and cjob.get("status"):
            print(report.status_report(cjob), file=sys.stderr)
        try:
            jobs = stack.client.get("/apis/batch/v1/namespaces/default/jobs")["items"]
            pods = stack.client.get("/api/v1/namespaces/default/pods")["items"]
            print(report.workloads_report(jobs, pods), file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - diagnostics are best effort
            print(f"(could not list jobs and pods: {err})", file=sys.stderr)
        for name, text in flow.pod_logs(stack).items():
            print(f"--- the end of pod log {name}:\n{text}", file=sys.stderr)
        for service in stack.services.values():
            print(f"--- the end of {service.log_path.relative_to(REPO_ROOT) if service.log_path.is_relative_to(REPO_ROOT) else service.log_path}:\n"
                  f"{tail(service.log_path, 15)}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kompress_testing.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".demo", help="logs, kubeconfigs, the model (default .demo)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the CompressionJob may take (default 600)")
    parser.add_argument("--keep", action="store_true", help="after a success, keep everything running until Ctrl-C (to look around with kubectl)")
    args = parser.parse_args(argv)
    demo = Demo(args.workdir.resolve(), args.timeout, args.keep)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: everything started is stopped
    try:
        code = demo.run()
    except StackError as err:
        demo.failed(str(err), None)
        code = 1
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started was stopped", file=sys.stderr)
        return 130
    demo.say(f"{'done' if code == 0 else 'failed'}; logs in {args.workdir}/logs and {args.workdir}/node/logs")
    return code


if __name__ == "__main__":
    sys.exit(main())
