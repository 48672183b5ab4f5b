"""The Prometheus scrape config and rules: promtool accepts them, their unit tests pass, and they
read metrics the live server and sidecar export; promtool also lints both live /metrics pages."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from driftserve.server.settings import DEFAULT_METRICS_PORT
from driftserve.sidecar.settings import DEFAULT_HTTP_PORT
from tests import system_tools
from tests.monitoring import promql
from tests.monitoring.conftest import MONITORING, Scrapes
from tests.monitoring.test_grafana import TARGET_LABELS

PROMETHEUS = MONITORING / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "driftserve.rules.yml"
RULES_TEST = PROMETHEUS / "driftserve.rules.test.yml"


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tools.promtool(), *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
    )


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_config_and_the_rules_it_loads() -> None:
    result = _promtool("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    assert alerts == firing
    assert {"DriftserveLatencyP99OverBudget", "DriftserveErrorRatioHigh", "DriftserveShedding"} <= alerts


@pytest.mark.parametrize("process", ["server", "sidecar"])
def test_promtool_lints_the_live_metrics_page(process: str, scrapes: Scrapes) -> None:
    text = getattr(scrapes, process)
    assert "driftserve_" in text
    result = _promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )


def test_rules_read_exported_metrics_and_defined_recordings(scrapes: Scrapes) -> None:
    exported = scrapes.labels_by_sample()
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    problems = {}
    for rule in rules:
        missing = promql.unknown_references(rule["expr"], exported, TARGET_LABELS)
        missing += sorted(promql.recorded(rule["expr"]) - recorded)
        if missing or not (promql.metrics(rule["expr"]) or promql.recorded(rule["expr"])):
            problems[rule.get("alert") or rule["record"]] = missing or ["reads nothing driftserve exports"]
    assert not problems, problems


def test_scrape_config_targets_the_default_ports_and_loads_the_rules() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "driftserve-server": [f"127.0.0.1:{DEFAULT_METRICS_PORT}"],
        "driftserve-sidecar": [f"127.0.0.1:{DEFAULT_HTTP_PORT}"],
    }
    assert config["rule_files"] == [RULES.name]
