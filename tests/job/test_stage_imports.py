"""The stages are plain imports of the pipeline, yet nothing heavy is paid for before a stage runs: importing the
worker's runner (every stage with it) imports neither torch nor llm-compressor, and `kompress plan` resolves every
preset without importing llm-compressor or compressed-tensors (only torch and transformers, for the meta model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kompress_api.v1alpha1 import Preset

from kompress_testing.models import build_config

pytestmark = pytest.mark.unit

HEAVY = ("torch", "transformers", "llmcompressor", "compressed_tensors", "datasets", "lm_eval")


def _heavy_after(script: str) -> dict:
    """Run `script` in a fresh interpreter; it leaves its findings as JSON on its last line of stdout."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_runner_and_every_stage_imports_nothing_heavy():
    out = _heavy_after(
        "import json, sys\n"
        "import kompress_job.cli, kompress_job.runner, kompress_job.pipeline\n"
        f"print(json.dumps({{'stages': list(kompress_job.pipeline.FUNCTIONS), 'heavy': sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))}}))\n"
    )
    assert len(out["stages"]) == 11
    assert out["heavy"] == []


def test_kompress_plan_never_imports_llm_compressor(tmp_path: Path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(build_config("glm4-moe").to_dict()))
    jobs = []
    for preset in Preset:
        doc = {
            "apiVersion": "kompress.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": f"plan-{preset.value}"},
            "spec": {"model": {"uri": "hf://org/tiny-moe"}, "recipe": {"preset": preset.value}, "output": {"uri": "s3://bucket/tiny"}},
        }
        path = tmp_path / f"{preset.value}.yaml"
        path.write_text(yaml.safe_dump(doc))
        jobs.append(str(path))
    out = _heavy_after(
        "import json, sys\n"
        "from kompress_job import cli\n"
        f"codes = [cli.main(['plan', job, '--model-config', {str(config)!r}, '--json']) for job in {jobs!r}]\n"
        "print(json.dumps({'codes': codes, 'loaded': sorted({m.split('.')[0] for m in sys.modules})}))\n"
    )
    assert out["codes"] == [0] * len(jobs)
    assert "torch" in out["loaded"]  # the plans were made: on the meta device
    assert not {"llmcompressor", "compressed_tensors"} & set(out["loaded"])
