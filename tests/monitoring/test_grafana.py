"""The Grafana dashboards: valid units, a templated data source, and queries on live metric names."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftserve.sidecar.drift.hysteresis import LEVELS
from driftserve.sidecar.metrics import INSUFFICIENT_GAUGE
from tests import system_tools
from tests.monitoring import promql
from tests.monitoring.conftest import MONITORING, Scrapes

GRAFANA = MONITORING / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
# Unit ids from Grafana's value formats (packages/grafana-data/src/valueFormats/categories.ts).
GRAFANA_UNITS = {
    "none", "short", "percent", "percentunit", "bool", "bool_yes_no", "sci", "locale", "string",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurations", "dtdurationms",
    "reqps", "rps", "wps", "iops", "ops", "cps", "cpm", "opm", "rpm", "wpm",
    "bytes", "decbytes", "bits", "Bps", "bps", "binBps",
}  # fmt: skip
# Grafana's custom-unit syntax: the text after "suffix:" is shown after the value.
CUSTOM_UNIT_PREFIXES = ("suffix:",)
# Labels Prometheus adds on scrape (prometheus.yml adds `component`).
TARGET_LABELS = {"instance", "job", "component"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana substitutes before a query reaches Prometheus, for checking the PromQL itself.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _units(panel: dict[str, Any]) -> list[str]:
    config = panel.get("fieldConfig", {})
    units = [config.get("defaults", {}).get("unit")]
    units += [p["value"] for o in config.get("overrides", []) for p in o["properties"] if p["id"] == "unit"]
    return units


def _load(path: Any) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_both_dashboards_ship_with_distinct_uids() -> None:
    assert {p.name for p in DASHBOARDS} == {"driftserve-server.json", "driftserve-drift.json"}
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert sorted(uids) == ["driftserve-drift", "driftserve-server"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed_with_valid_units_and_a_templated_data_source(path) -> None:
    dashboard = _load(path)
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
        for unit in _units(panel):
            assert unit in GRAFANA_UNITS or str(unit).startswith(CUSTOM_UNIT_PREFIXES), (panel["title"], unit)
    cells = [
        (x, y, p["title"])
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len({(x, y) for x, y, _ in cells}) == len(cells), f"overlapping panels in {path.name}"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), f"duplicate panel titles in {path.name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_reads_metrics_and_labels_the_live_processes_export(path, scrapes: Scrapes) -> None:
    exported = scrapes.labels_by_sample()
    dashboard = _load(path)
    problems = {}
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            missing = promql.unknown_references(target["expr"], exported, TARGET_LABELS)
            if missing or not promql.metrics(target["expr"]):
                problems[f"{panel['title']}: {target['expr']}"] = missing or ["no driftserve metric"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = promql.label_values(variable["definition"]) or ("", "")
            if label not in exported.get(metric, set()):
                problems[f"variable {variable['name']}"] = [variable["definition"]]
    assert not problems, problems


def test_the_server_dashboard_covers_the_serving_questions() -> None:
    panels = _panels(_load(GRAFANA / "driftserve-server.json"))
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    latency = "sum by (model, le) (rate(driftserve_server_request_duration_seconds_bucket"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, {latency}" in exprs
    for metric in (
        "driftserve_server_requests_total",
        "driftserve_batcher_batch_size_rows_bucket",
        "driftserve_batcher_queue_depth_requests",
        "driftserve_batcher_rejections_total",
        "driftserve_server_inflight_requests",
        "driftserve_mirror_queue_depth_records",
        "driftserve_mirror_records_total",
    ):
        assert metric in exprs, metric
    assert "sum by (model, version) (rate(driftserve_server_requests_total" in exprs  # per-version share


def test_drift_alert_panels_map_the_sidecar_gauge_encoding_to_names() -> None:
    expected = {str(level): name for name, level in LEVELS.items()}
    expected[str(int(INSUFFICIENT_GAUGE))] = "too few rows"
    alert_panels = [
        p
        for p in _panels(_load(GRAFANA / "driftserve-drift.json"))
        if any("driftserve_drift_alert" in t["expr"] for t in p.get("targets", []))
    ]
    assert len(alert_panels) >= 2
    for panel in alert_panels:
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        assert mapping["type"] == "value"
        assert {value: option["text"] for value, option in mapping["options"].items()} == expected, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_parses_as_promql(path, tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables substituted) as a recording rule."""
    exprs = [t["expr"] for p in _panels(_load(path)) for t in p.get("targets", [])]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    assert not [e for e in exprs if "$" in e], "a Grafana variable the test does not substitute"
    rules = {
        "groups": [{"name": "queries", "rules": [{"record": f"query:{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [system_tools.promtool(), "check", "rules", "queries.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
