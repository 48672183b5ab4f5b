"""The shipped Grafana dashboard, Prometheus scrape config and rules query metrics the sidecar exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

from driftserve.sidecar.settings import DEFAULT_HTTP_PORT
from tests.sidecar.support import ROOT, InProcessSidecar, batches_from, reference_rows

DASHBOARDS = ROOT / "monitoring" / "dashboards"
METRIC = re.compile(r"\bdriftserve_[a-z_]+")


def _exported_samples(sidecar: InProcessSidecar) -> set[str]:
    return {s.name for family in sidecar.registry.collect() for s in family.samples}


def test_every_dashboard_and_rule_query_uses_an_exported_metric(
    repository: Path, primary: ort.InferenceSession
) -> None:
    dashboard = json.loads((DASHBOARDS / "grafana_drift.json").read_text())
    rules = yaml.safe_load((DASHBOARDS / "drift_alerts.rules.yml").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    with InProcessSidecar(repository) as sidecar:
        sidecar.publish(batches_from(reference_rows(np.random.default_rng(31), 512), primary))
        sidecar.report()
        exported = _exported_samples(sidecar)
    assert used and used <= exported, sorted(used - exported)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_scrape_config_targets_the_sidecar_port_and_loads_the_rules() -> None:
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["driftserve-sidecar"] == [f"127.0.0.1:{DEFAULT_HTTP_PORT}"]
    assert all((DASHBOARDS / f).is_file() for f in config["rule_files"])
