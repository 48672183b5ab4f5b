"""Strict model configuration: unknown keys and bad values name the file, the key, what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftserve.core.config import VersionPolicy, load_model_config
from driftserve.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text(text)
    return model_dir


def test_defaults_when_config_is_absent(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    config = load_model_config(tmp_path / "m")
    assert config.max_batch_size is None and config.instances == 1
    assert config.batching.enabled and config.batching.max_queue_delay_us == 500
    assert config.version_policy.latest is not None and config.version_policy.latest.num_versions == 1


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    model_dir = write(tmp_path, "batching:\n  max_queue_delay: 100\n")
    with pytest.raises(ConfigError) as info:
        load_model_config(model_dir)
    message = info.value.message
    assert str(model_dir / "config.yaml") in message
    assert "unknown key 'batching.max_queue_delay'" in message
    assert "max_queue_delay_us" in message and "preferred_batch_sizes" in message


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("max_batch_size: -1\n", "key 'max_batch_size'"),
        ("instances: 0\n", "key 'instances'"),
        ("platform: tensorflow\n", "key 'platform'"),
        ("batching: {max_queue_size: 0}\n", "key 'batching.max_queue_size'"),
        ("batching: {preferred_batch_sizes: [0]}\n", "preferred_batch_sizes must all be >= 1"),
        ("batching: {priority_levels: 2, default_priority_level: 3}\n", "exceeds priority_levels"),
        ("version_policy: {latest: {num_versions: 1}, all: {}}\n", "exactly one of latest, all, specific"),
        ("runtime: {graph_optimization_level: turbo}\n", "key 'runtime.graph_optimization_level'"),
        ("deployment: {canary: {2: 0.7, 3: 0.6}}\n", "canary weights sum to 1.3"),
        ("inputs: [{name: x, datatype: FLOAT, dims: [3]}]\n", "key 'inputs.0.datatype'"),
        ("name: other\n", "key 'name' is 'other' but the directory is 'm'"),
        ("[1, 2]\n", "top level must be a mapping"),
        ("batching: {enabled: true\n", "not valid YAML"),
    ],
)
def test_bad_values_are_precise(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, text))
    assert fragment in info.value.message


def test_version_policy_selection() -> None:
    assert VersionPolicy.model_validate({"latest": {"num_versions": 2}}).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy.model_validate({"all": {}}).select([3, 1]) == [1, 3]
    assert VersionPolicy.model_validate({"specific": {"versions": [1, 5]}}).select([1, 2, 3]) == [1]


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda path: path.write_bytes(b"max_batch_size: 8\n# \xff\xfe not UTF-8\n"), "not UTF-8 text (byte 20"),
        (lambda path: path.mkdir(), "not a regular file"),
    ],
)
def test_unreadable_config_is_a_config_error_naming_the_file(tmp_path: Path, make: Any, fragment: str) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    make(model_dir / "config.yaml")
    with pytest.raises(ConfigError) as info:
        load_model_config(model_dir)
    assert info.value.message.startswith(f"{model_dir / 'config.yaml'}: ") and fragment in info.value.message


def test_slo_p99_ms_is_validated(tmp_path: Path) -> None:
    load = load_model_config
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.yaml").write_text("batching: {slo_p99_ms: 20}\n")
    config = load(model).batching
    assert config.slo_p99_ms == 20 and config.delay_bound_us == 20_000
    (model / "config.yaml").write_text("batching: {slo_p99_ms: 20, max_queue_delay_us: 700}\n")
    assert load(model).batching.delay_bound_us == 700
    for text, expected in (
        ("batching: {slo_p99_ms: 0}\n", "batching.slo_p99_ms"),
        ("batching: {slo_p99_ms: -3}\n", "batching.slo_p99_ms"),
        ("batching: {slo_p99_ms: fast}\n", "batching.slo_p99_ms"),
        ("batching: {slo_p99_ms: 20, enabled: false}\n", "slo_p99_ms needs batching enabled"),
        ("batching: {slo_p99: 20}\n", "unknown key 'batching.slo_p99'"),
    ):
        (model / "config.yaml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load(model)
        assert expected in str(info.value), (text, str(info.value))
