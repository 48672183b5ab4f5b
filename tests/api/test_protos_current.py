"""The committed generated code in driftserve/api/ is what protos/ compiles to today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    generated = gen.generate(tmp_path)
    assert generated, "no generated files"
    stale = [p.name for p in generated if p.read_bytes() != (ROOT / "driftserve" / "api" / p.name).read_bytes()]
    assert not stale, f"driftserve/api/ is stale for {stale}: run `python scripts/gen_protos.py`"
    committed = {p.name for p in (ROOT / "driftserve" / "api").glob("*_pb2*.py*")}
    assert committed == {p.name for p in generated}
