"""docker-compose.yml's ``monitoring`` profile: Prometheus scrapes what the workers serve, and
its alert rules name metrics that exist (``make compose-check`` runs the compose binary on the
profile; promtool is not on PyPI, so this is the check of deploy/)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
import yaml
from prometheus_client import REGISTRY

import orchestrator.metrics  # noqa: F401  (registers the per-process counters)
from orchestrator.cli.app import app
from orchestrator.config import Settings
from orchestrator.lifecycle.gauges import MoneyCollector

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SUFFIXES = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def _prometheus() -> dict[str, Any]:
    service: dict[str, Any] = COMPOSE["services"]["prometheus"]
    return service


def _mounts() -> dict[str, Path]:
    """Where in the Prometheus container each file of the repo is mounted."""
    mounts = {}
    for volume in _prometheus()["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def _config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_mounts()["/etc/prometheus/prometheus.yml"].read_text())
    return config


def _exposed() -> set[str]:
    """Every sample name of ours that /metrics may show, as each metric's type names them."""
    families = [*MoneyCollector(None, Settings()).describe(), *REGISTRY.collect()]  # type: ignore[arg-type]
    return {
        family.name + suffix
        for family in families
        if family.name.startswith("orchestrator_")
        for suffix in SUFFIXES[family.type]
    }


def test_prometheus_runs_only_in_the_monitoring_profile_with_the_repos_config() -> None:
    assert _prometheus()["profiles"] == ["monitoring"]
    assert all(path.is_file() for path in _mounts().values()), _mounts()
    for rule_file in _config()["rule_files"]:
        assert rule_file in _mounts(), f"{rule_file} is not mounted from the repo"


def test_every_scrape_target_is_a_service_serving_metrics_on_that_port() -> None:
    worker_options = {
        name
        for param in typer.main.get_command(app).commands["worker"].params  # type: ignore[attr-defined]
        for name in param.opts
    }
    assert {"--metrics-port", "--metrics-host"} <= worker_options
    targets = [
        (name, sd["port"])
        for job in _config()["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    ]
    assert targets
    for name, port in targets:
        command = COMPOSE["services"][name]["command"]
        assert command[0] == "worker", name
        options = dict(zip(command[1::2], command[2::2], strict=True))
        assert options["--metrics-port"] == str(port), name
        assert options["--metrics-host"] == "0.0.0.0", f"{name} must listen beyond localhost"


def test_the_alert_rules_name_metrics_we_serve_and_the_readme_shows_the_refund_alert() -> None:
    exposed = _exposed()
    assert "orchestrator_refund_at_risk_dollars" in exposed
    rules = [
        rule
        for rule_file in _config()["rule_files"]
        for group in yaml.safe_load(_mounts()[rule_file].read_text())["groups"]
        for rule in group["rules"]
    ]
    for rule in rules:
        named = set(re.findall(r"\borchestrator_[a-z0-9_]+", rule["expr"]))
        assert named and named <= exposed, rule["alert"]
    at_risk = next(r for r in rules if "refund_at_risk" in r["expr"])
    assert at_risk["for"] == "5m"
    assert at_risk["expr"].endswith("> 0")
    assert at_risk["expr"] in (ROOT / "README.md").read_text(), "README shows the same rule"
