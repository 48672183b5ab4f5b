"""Keep what validation needs of a CustomResourceDefinition: its openAPIV3Schema, as JSON.

The manifests under deploy/ are validated offline (tests/deploy/test_manifests.py) against the
schemas of the CRDs they use (KServe, prometheus-operator), kept in deploy/schemas/. This takes a
CRD file of the upstream repository and writes the stored version's schema without its
description texts (they are most of the size and play no part in validation), with a header
naming the source, the commit and the license::

    git -C KSERVE_CHECKOUT show COMMIT:config/crd/full/serving.kserve.io_servingruntimes.yaml > crd.yaml
    python scripts/extract_crd_schema.py crd.yaml deploy/schemas/serving.kserve.io_servingruntimes.json \\
        --repository kserve/kserve --commit COMMIT --path config/crd/full/serving.kserve.io_servingruntimes.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

# Keys whose values are maps of property names (a property may be called "description").
NAME_MAPS = ("properties", "patternProperties")


def without_descriptions(node: Any, names: bool = False) -> Any:
    """``node`` with every schema's ``description`` removed (property names are kept)."""
    if isinstance(node, dict):
        return {
            key: without_descriptions(value, names=key in NAME_MAPS and not names)
            for key, value in node.items()
            if names or not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    return node


def extract(crd: dict[str, Any], repository: str, commit: str, path: str) -> dict[str, Any]:
    """The stored version's openAPIV3Schema of ``crd``, headed by where it came from."""
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    owner = repository.split("/")[0]
    return {
        "$comment": (
            f"openAPIV3Schema of {kind} {group}/{version['name']}, from {path} of github.com/{repository} at commit "
            f"{commit}. Copyright The {owner} Authors, licensed under the Apache License 2.0 (the license of "
            "driftserve too: LICENSE). Only the schema is kept, without its description texts "
            "(scripts/extract_crd_schema.py)."
        ),
        "x-source": {"repository": f"https://github.com/{repository}", "commit": commit, "path": path},
        "x-license": "Apache-2.0",
        "x-crd": {"group": group, "version": version["name"], "kind": kind},
        **without_descriptions(version["schema"]["openAPIV3Schema"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crd", type=Path, help="the CRD's YAML file")
    parser.add_argument("out", type=Path, help="the JSON schema to write")
    parser.add_argument("--repository", required=True, help="owner/name of the upstream repository")
    parser.add_argument("--commit", required=True, help="the upstream commit the CRD was read at")
    parser.add_argument("--path", required=True, help="the CRD's path in the upstream repository")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    schema = extract(crd, args.repository, args.commit, args.path)
    args.out.write_text(json.dumps(schema, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {schema['x-crd']['kind']} {schema['x-crd']['group']}/{schema['x-crd']['version']}")


if __name__ == "__main__":
    main()
