"""Operator settings: the chart's environment variables, flags on top, clear errors."""

from __future__ import annotations

import pytest

from kompress_operator import config

pytestmark = pytest.mark.unit


def test_defaults_watch_every_namespace_with_nvidia_gpus():
    cfg = config.from_env({})
    assert cfg.clusterwide and cfg.watch_namespaces == ()
    assert cfg.gpu_resource_name == "nvidia.com/gpu"
    assert cfg.log_format == "text"


def test_the_chart_environment_is_understood():
    # the names charts/kompress/templates/deployment.yaml sets
    env = {
        "KOMPRESS_WATCH_NAMESPACES": "ml, research,",
        "KOMPRESS_WORKER_IMAGE": "registry.example/worker:2",
        "KOMPRESS_GPU_RESOURCE_NAME": "amd.com/gpu",
        "KOMPRESS_WORKER_SERVICE_ACCOUNT": "kompress-worker",
        "KOMPRESS_LOG_FORMAT": "json",
        "KOMPRESS_HEALTH_PORT": "8080",
        "KOMPRESS_METRICS_PORT": "9090",
    }
    cfg = config.from_env(env)
    assert cfg.watch_namespaces == ("ml", "research") and not cfg.clusterwide
    assert (cfg.worker_image, cfg.gpu_resource_name, cfg.worker_service_account) == ("registry.example/worker:2", "amd.com/gpu", "kompress-worker")
    assert (cfg.log_format, cfg.health_port, cfg.metrics_port) == ("json", 8080, 9090)
    # an empty list (the chart's default) means every namespace
    assert config.from_env({"KOMPRESS_WATCH_NAMESPACES": ""}).clusterwide


def test_flags_win_over_the_environment():
    cfg = config.load(["--log-format=text", "--resync-interval", "2.5", "--verbose"], {"KOMPRESS_LOG_FORMAT": "json", "KOMPRESS_RESYNC_INTERVAL": "30"})
    assert cfg.log_format == "text" and cfg.resync_interval_s == 2.5 and cfg.verbose


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KOMPRESS_LOG_FORMAT": "xml"}, "text or json"),
        ({"KOMPRESS_METRICS_PORT": "ninety"}, "KOMPRESS_METRICS_PORT='ninety' is not a number"),
        ({"KOMPRESS_VERBOSE": "maybe"}, "not a boolean"),
        ({"KOMPRESS_RESYNC_INTERVAL": "0"}, "positive"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        config.from_env(env)
