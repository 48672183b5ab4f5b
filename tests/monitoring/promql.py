"""Just enough PromQL reading to check a shipped query against what driftserve exports.

Not a parser: it finds the driftserve metric names a query reads, the recording rules it uses,
and the label names it matches or groups by, which is what goes stale when code changes.
"""

from __future__ import annotations

import re

# A driftserve metric name that is not part of a recording rule's name (level:metric:operations).
METRIC = re.compile(r"(?<![\w:])driftserve_[a-z_]+(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_:]+(?![\w:])")
_SELECTOR = re.compile(r"\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:]\w*)\s*,\s*([a-zA-Z_]\w*)\s*\)")


def metrics(expr: str) -> set[str]:
    """The driftserve metric (sample) names ``expr`` reads."""
    return set(METRIC.findall(expr))


def recorded(expr: str) -> set[str]:
    """The recording-rule names ``expr`` reads."""
    return set(RECORDED.findall(_SELECTOR.sub("", expr)))


def labels(expr: str) -> set[str]:
    """Label names ``expr`` matches on in selectors or names in by/without/on/ignoring/group_*."""
    found = {m for selector in _SELECTOR.findall(expr) for m in _MATCHER.findall(selector)}
    for group in _GROUPING.findall(expr):
        found.update(name.strip() for name in group.split(",") if name.strip())
    return found


def label_values(query: str) -> tuple[str, str] | None:
    """(metric, label) of a Grafana ``label_values(metric, label)`` variable query."""
    match = _LABEL_VALUES.search(query)
    return (match.group(1), match.group(2)) if match else None


def unknown_references(expr: str, exported: dict[str, set[str]], extra_labels: set[str] = frozenset()) -> list[str]:
    """What ``expr`` reads that the live scrape lacks: metric names, then label names."""
    names = metrics(expr)
    missing = sorted(n for n in names if n not in exported)
    known = set(extra_labels).union(*(exported.get(n, set()) for n in names)) if names else set(extra_labels)
    missing += sorted(f"label {label!r}" for label in labels(expr) - known) if names else []
    return missing
