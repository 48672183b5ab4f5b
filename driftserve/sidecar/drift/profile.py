"""Reference profiles: what the training data looked like, per feature and per model output.

A profile holds, per numeric feature, fine reference-quantile bin edges (1000 bins by default)
with the reference counts in them and the missing-value share; per categorical feature, its
levels and their counts. Live windows are binned on exactly these edges, so PSI and KS compare
counts over shared bins without ever keeping rows.

File format: JSON (``format: driftserve-drift-profile``, ``version: 1``), chosen because it is
readable and diffable; floats are written with ``repr`` precision so edges round-trip exactly.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

PROFILE_FORMAT = "driftserve-drift-profile"
PROFILE_VERSION = 1
DEFAULT_FINE_BINS = 1000
_MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none"})
_ORT_CHUNK_ROWS = 4096

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureProfile:
    """Reference distribution of one feature or output column.

    ``edges`` are the inner bin edges of a numeric feature (``len(counts) == len(edges) + 1``)
    or the sorted levels of a categorical one (``len(counts) == len(edges)``). ``tensor`` and
    ``column`` locate an output column (``probabilities[1]`` is tensor ``probabilities``,
    column 1); they are None for inputs.
    """

    name: str
    kind: Kind
    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    missing_count: int
    n_rows: int
    tensor: str | None = None
    column: int | None = None

    @property
    def n_valid(self) -> int:
        """Reference rows with a value (not missing)."""
        return self.n_rows - self.missing_count

    @property
    def missing_share(self) -> float:
        """Share of reference rows where the value was missing (NaN)."""
        return self.missing_count / self.n_rows if self.n_rows else 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form of this profile."""
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "missing_count": self.missing_count,
            "n_rows": self.n_rows,
            "tensor": self.tensor,
            "column": self.column,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureProfile:
        """Inverse of :meth:`to_json`, checking the invariants."""
        kind = obj["kind"]
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {obj.get('name')!r}: kind must be numeric or categorical, got {kind!r}")
        prof = cls(
            name=str(obj["name"]),
            kind=kind,
            edges=np.asarray(obj["edges"], dtype=np.float64),
            counts=np.asarray(obj["counts"], dtype=np.int64),
            missing_count=int(obj["missing_count"]),
            n_rows=int(obj["n_rows"]),
            tensor=obj.get("tensor"),
            column=obj.get("column"),
        )
        prof.validate()
        return prof

    def validate(self) -> None:
        """Raise ValueError naming the feature when edges and counts disagree."""
        expected = self.edges.size + (1 if self.kind == "numeric" else 0)
        if self.counts.shape != (expected,):
            raise ValueError(
                f"feature {self.name!r}: {self.counts.size} counts for {self.edges.size} edges of a "
                f"{self.kind} feature, expected {expected}"
            )
        if self.edges.size and (not np.all(np.isfinite(self.edges)) or np.any(self.edges[1:] <= self.edges[:-1])):
            raise ValueError(f"feature {self.name!r}: edges must be finite and strictly increasing")
        if np.any(self.counts < 0) or int(self.counts.sum()) + self.missing_count != self.n_rows:
            raise ValueError(f"feature {self.name!r}: counts + missing_count must equal n_rows={self.n_rows}")


@dataclass(frozen=True)
class ReferenceProfile:
    """Profiles of every input feature (in input column order) and of profiled model outputs."""

    features: list[FeatureProfile]
    outputs: list[FeatureProfile] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        """Input feature names, in the column order of the model input."""
        return [f.name for f in self.features]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as JSON, atomically (temporary file, then rename)."""
        path = Path(path)
        doc = {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "features": [f.to_json() for f in self.features],
            "outputs": [o.to_json() for o in self.outputs],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, separators=(",", ":"))
            # mkstemp creates 0600; a profile is data the serving user (often another one) reads.
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.info("wrote drift profile %s (%s features, %s outputs)", path, len(self.features), len(self.outputs))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        """Read a profile written by :meth:`save`; errors name the file and what is wrong."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read drift profile: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{path}: not a drift profile (expected format {PROFILE_FORMAT!r})")
        if doc.get("version") != PROFILE_VERSION:
            raise ValueError(f"{path}: profile version {doc.get('version')!r} unsupported, expected {PROFILE_VERSION}")
        try:
            return cls(
                features=[FeatureProfile.from_json(f) for f in doc["features"]],
                outputs=[FeatureProfile.from_json(o) for o in doc.get("outputs", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed drift profile: {exc}") from exc


def profile_column(
    values: NDArray[np.floating], name: str, kind: Kind, bins: int = DEFAULT_FINE_BINS
) -> FeatureProfile:
    """Profile one column: quantile edges and counts (numeric) or levels and counts (categorical)."""
    col = np.asarray(values, dtype=np.float64)
    missing = np.isnan(col)
    valid = col[~missing]
    if kind == "categorical":
        if not np.all(np.isfinite(valid)):
            raise ValueError(f"categorical feature {name!r} has infinite values; levels must be finite codes")
        edges, counts = np.unique(valid, return_counts=True)
    else:
        finite = valid[np.isfinite(valid)]
        edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins)) if finite.size else np.empty(0)
        counts = np.bincount(np.searchsorted(edges, valid, side="right"), minlength=edges.size + 1)
    prof = FeatureProfile(
        name=name,
        kind=kind,
        edges=edges.astype(np.float64),
        counts=counts.astype(np.int64),
        missing_count=int(missing.sum()),
        n_rows=int(col.size),
    )
    prof.validate()
    return prof


def build_profile(
    X: NDArray[np.floating], feature_names: list[str], categorical: Sequence[str] = (), bins: int = DEFAULT_FINE_BINS
) -> ReferenceProfile:
    """Profile training rows ``X`` (rows x features) whose columns are named ``feature_names``."""
    X = np.asarray(X)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be a 2-D numeric array (rows x features), got {X.dtype} {X.shape}")
    if X.shape[1] != len(feature_names):
        raise ValueError(f"X has {X.shape[1]} columns but {len(feature_names)} feature names were given")
    if len(set(feature_names)) != len(feature_names):
        raise ValueError("feature names must be unique")
    unknown = sorted(set(categorical) - set(feature_names))
    if unknown:
        raise ValueError(f"categorical features {unknown} are not among the feature names {feature_names}")
    if not 2 <= bins <= 100_000:
        raise ValueError(f"bins must be in [2, 100000], got {bins}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows; a reference profile needs training data")
    cats = set(categorical)
    features = [
        profile_column(X[:, j], name, "categorical" if name in cats else "numeric", bins)
        for j, name in enumerate(feature_names)
    ]
    return ReferenceProfile(features=features)


def _parse_cell(cell: str, line: int, column: str, path: Path) -> float:
    if cell.strip().lower() in _MISSING_TOKENS:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}:{line}: column {column!r} holds {cell!r}, expected a number or empty") from None


def _read_csv(path: Path) -> tuple[NDArray[np.float64], list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty CSV; expected a header row of feature names")
        names = [h.strip() for h in header]
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(names):
                raise ValueError(f"{path}:{line}: {len(row)} fields, expected {len(names)} like the header")
            rows.append([_parse_cell(c, line, names[j], path) for j, c in enumerate(row)])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)), names


def load_rows(
    path: str | os.PathLike[str], feature_names: list[str] | None = None
) -> tuple[NDArray[np.floating], list[str]]:
    """Read training rows from CSV (header = names), ``.npy`` (names required) or ``.npz``.

    An ``.npz`` holds ``X`` and ``feature_names`` as the example repository writes them. When
    ``feature_names`` is given for CSV or ``.npz``, those columns are selected in that order.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        X, names = _read_csv(path)
    elif suffix == ".npy":
        X = np.load(path, allow_pickle=False)
        if feature_names is None:
            raise ValueError(f"{path}: a .npy file has no column names; pass feature_names")
        names = list(feature_names)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("X", "feature_names") if k not in npz.files]
            if missing:
                raise ValueError(f"{path}: .npz lacks {missing}; expected keys 'X' and 'feature_names'")
            X, names = npz["X"], [str(n) for n in npz["feature_names"]]
    else:
        raise ValueError(f"{path}: unsupported data file {suffix!r}; expected .csv, .npy or .npz")
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"{path}: data of shape {X.shape} does not match {len(names)} feature names")
    if feature_names is not None and names != list(feature_names):
        absent = [n for n in feature_names if n not in names]
        if absent:
            raise ValueError(f"{path}: features {absent} not in the file's columns {names}")
        X = X[:, [names.index(n) for n in feature_names]]
        names = list(feature_names)
    return X, names


def profile_outputs(model: Path, X: NDArray[np.floating], bins: int = DEFAULT_FINE_BINS) -> list[FeatureProfile]:
    """Run ``X`` through an ONNX model and profile its outputs for prediction drift.

    Float outputs are profiled per column as numeric (``probabilities[1]``); integer outputs
    (class labels) as categorical. Other outputs (maps, strings) are skipped with a log line.
    """
    import onnxruntime as ort  # heavy; only the profile command needs it

    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types; callers expect ValueError
        raise ValueError(f"{model}: cannot load the model with ONNX Runtime: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{model}: expected a model with one input tensor, it has {[i.name for i in inputs]}")
    dtype = np.float64 if inputs[0].type == "tensor(double)" else np.float32
    chunks: dict[str, list[NDArray[Any]]] = {}
    for start in range(0, X.shape[0], _ORT_CHUNK_ROWS):
        batch = np.ascontiguousarray(X[start : start + _ORT_CHUNK_ROWS], dtype=dtype)
        try:
            values = session.run(None, {inputs[0].name: batch})
        except Exception as exc:  # shape/type mismatches surface as ORT exceptions
            raise ValueError(f"{model}: running {batch.shape[1]}-column training rows failed: {exc}") from exc
        for meta, value in zip(session.get_outputs(), values):
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
                chunks.setdefault(meta.name, []).append(value)
            else:
                logger.info("%s: output %s is not a numeric tensor; not profiled", model, meta.name)
    profiles = []
    for name, parts in chunks.items():
        arr = np.concatenate(parts)
        kind: Kind = "numeric" if arr.dtype.kind == "f" else "categorical"
        if arr.ndim == 1:
            profiles.append(_with_source(profile_column(arr, name, kind, bins), name, None))
        elif arr.ndim == 2:
            for j in range(arr.shape[1]):
                profiles.append(_with_source(profile_column(arr[:, j], f"{name}[{j}]", kind, bins), name, j))
        else:
            logger.info("%s: output %s has %s dimensions; not profiled", model, name, arr.ndim)
    return profiles


def _with_source(prof: FeatureProfile, tensor: str, column: int | None) -> FeatureProfile:
    return FeatureProfile(
        prof.name, prof.kind, prof.edges, prof.counts, prof.missing_count, prof.n_rows, tensor, column
    )


def profile_command(
    data: Path, out: Path, categorical: list[str], bins: int, outputs_from_model: Path | None
) -> ReferenceProfile:
    """``driftserve drift profile``: profile a training file (and a model's outputs) into ``out``."""
    X, names = load_rows(data)
    profile = build_profile(X, names, categorical=categorical, bins=bins)
    if outputs_from_model is not None:
        profile = ReferenceProfile(features=profile.features, outputs=profile_outputs(outputs_from_model, X, bins))
    profile.save(out)
    return profile
