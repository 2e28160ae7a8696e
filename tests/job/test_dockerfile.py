"""The worker image can't be built here; these checks hold its Dockerfile to the project's own pins and contract:
versions only from requirements/, the tests' Python, non-root, scratch on a volume, `kompress worker` as entry point,
and every package the worker's code imports installed by what the image installs."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from kompress_api.worker_protocol import PROGRESS_PORT, SCRATCH_DIR, WORKER_COMMAND

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "job_image" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def arg(name: str) -> str:
    [value] = [rest.split("=", 1)[1] for word, rest in instructions() if word == "ARG" and rest.startswith(f"{name}=")]
    return value


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(3)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_base_image_is_an_exact_cuda_release():
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", arg("CUDA_IMAGE"))


def test_python_is_the_one_the_tests_ran_on():
    assert arg("PYTHON") == f"python{sys.version_info.major}.{sys.version_info.minor}"


def test_versions_come_only_from_the_requirements_files():
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "pip install -r /src/requirements/worker.txt -c /src/requirements/lock.txt" in runs
    every = " ".join(rest for _, rest in instructions())
    assert not re.search(r"[A-Za-z0-9_.\-]+==\d", every), "a version pinned in the Dockerfile instead of requirements/"
    assert "pip install --no-deps /src/api /src/job_image" in runs  # our code, nothing resolved a second time
    copied = " ".join(rest for word, rest in instructions() if word == "COPY")
    assert "testing" not in copied and "operator" not in copied  # the harness and the operator stay out


def test_runs_as_non_root_with_scratch_and_caches_on_a_volume():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    assert f"KOMPRESS_SCRATCH={SCRATCH_DIR}" in env
    assert re.search(rf"HF_HOME={SCRATCH_DIR}/", env) and re.search(rf"XDG_CACHE_HOME={SCRATCH_DIR}/", env)
    volumes = [json.loads(rest) for word, rest in instructions() if word == "VOLUME"]
    assert [SCRATCH_DIR] in volumes
    assert "KOMPRESS_LOG_FORMAT=json" in env


def test_entry_point_and_port_are_the_operators_contract():
    [entrypoint] = [json.loads(rest) for word, rest in instructions() if word == "ENTRYPOINT"]
    assert entrypoint == WORKER_COMMAND
    assert str(PROGRESS_PORT) in [rest for word, rest in instructions() if word == "EXPOSE"]
    scripts = (ROOT / "job_image" / "pyproject.toml").read_text()
    assert 'kompress = "kompress_job.cli:main"' in scripts


def _closure(names: set[str]) -> set[str]:
    """Distributions installed by installing `names`, from the installed packages' own metadata."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s\[<>=!~;(]", req, 1)[0])
    return seen


def test_every_package_the_worker_imports_is_installed_by_the_image():
    installed = _closure(set(pins(ROOT / "requirements" / "worker.txt")))
    module_dists = metadata.packages_distributions()
    missing = set()
    for path in (ROOT / "job_image" / "kompress_job").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top.startswith("kompress_"):
                    continue
                dists = {canonical(d) for d in module_dists.get(top, [top])}
                if not dists & installed:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported by the worker but not installed by requirements/worker.txt: {sorted(missing)}"


def test_the_worker_image_has_no_kubernetes_client():
    # The pod has no Kubernetes rights and must not try: progress goes out over HTTP, the result in the termination message.
    installed = _closure(set(pins(ROOT / "requirements" / "worker.txt")))
    assert not {"kubernetes", "kopf", "kubernetes-asyncio"} & installed


def test_the_image_carries_the_static_busybox_an_oci_output_packs_as_its_base_layer():
    from kompress_api.worker_protocol import OCI_BUSYBOX

    installs = " ".join(rest for word, rest in instructions() if word == "RUN" and "apt-get install" in rest)
    assert "busybox-static" in installs.split()  # Ubuntu's package puts the static binary at /bin/busybox
    assert OCI_BUSYBOX == "/bin/busybox"
