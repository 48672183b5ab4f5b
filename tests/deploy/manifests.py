"""Reading and validating the manifests under deploy/ offline (tests/deploy/test_manifests.py).

Built-in kinds are validated by ``kubernetes-validate`` against the Kubernetes JSON schemas it
ships (strict: unknown fields are errors, as ``kubectl apply`` with server-side field validation
reports them), at a pinned Kubernetes version. Custom resources (KServe, prometheus-operator) are
validated by ``jsonschema`` against the CRD schemas kept in deploy/schemas/, made strict the same
way: an object schema that lists its properties and neither allows nor preserves unknown fields
gets ``additionalProperties: false``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.install_support import ROOT

# The oldest Kubernetes the manifests must apply to: gRPC probes are GA since 1.27,
# autoscaling/v2 since 1.23, policy/v1 PodDisruptionBudget since 1.21.
KUBERNETES_VERSION = "1.33.0"
DEPLOY = ROOT / "deploy"
# Every YAML document below these folders is validated, whoever adds it.
MANIFEST_DIRS = (DEPLOY / "kubernetes", DEPLOY / "kserve")
SCHEMA_DIR = DEPLOY / "schemas"


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(DEPLOY)}#{self.index}:{self.body.get('kind')}"


def manifest_paths() -> list[Path]:
    return sorted(p for d in MANIFEST_DIRS for pattern in ("*.yaml", "*.yml") for p in d.rglob(pattern))


def documents() -> list[Document]:
    """Every non-empty YAML document of every manifest file."""
    found = []
    for path in manifest_paths():
        for index, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is not None:
                found.append(Document(path, index, body))
    return found


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of each CRD kept in deploy/schemas/."""
    schemas = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        crd = schema["x-crd"]
        schemas[(f"{crd['group']}/{crd['version']}", crd["kind"])] = strict(schema)
    return schemas


def strict(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever the CRD neither allows nor preserves them."""
    schema = copy.deepcopy(schema)
    for node in _schema_nodes(schema):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    return schema


def _schema_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in ("properties", "patternProperties") and isinstance(value, dict):
                for sub in value.values():
                    yield from _schema_nodes(sub)
            else:
                yield from _schema_nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schema_nodes(item)


def validate(body: dict[str, Any]) -> None:
    """Raise (a ValidationError naming the field) unless ``body`` is a valid object of its kind."""
    key = (body.get("apiVersion", ""), body.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(body)
        return
    kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)


def pod_specs(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs an object describes (a workload's template, a ServingRuntime's spec)."""
    if body.get("kind") == "ServingRuntime":
        return [body["spec"]]
    template = body.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []
