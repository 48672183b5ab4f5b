"""Regenerate driftserve/api/ from protos/ (one command: ``python scripts/gen_protos.py``).

The generated modules are committed; ``tests/test_protos_current.py`` fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "driftserve.api"
PACKAGE_DIR = Path(*PACKAGE.split("."))


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/driftserve/api into ``out_dir`` and return the files."""
    sources = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(s.relative_to(PROTO_ROOT)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    for module in (out_dir / PACKAGE_DIR).glob("*_pb2.py"):
        _use_private_pool(module)
    return sorted((out_dir / PACKAGE_DIR).glob("*_pb2*.py*"))


def _use_private_pool(module: Path) -> None:
    """Register descriptors in driftserve.api._pool.POOL instead of protobuf's default pool."""
    text = module.read_text()
    default = "_descriptor_pool.Default().AddSerializedFile("
    if default not in text:
        raise RuntimeError(f"{module}: unexpected generated code; cannot find {default!r}")
    text = text.replace(default, "_POOL.AddSerializedFile(")
    anchor = "from google.protobuf.internal import builder as _builder\n"
    text = text.replace(anchor, anchor + f"from {PACKAGE}._pool import POOL as _POOL\n", 1)
    module.write_text(text)


def main() -> int:
    generated = generate(ROOT)
    init = ROOT / PACKAGE_DIR / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf and gRPC code shared by the server and the sidecar."""\n')
    print("\n".join(str(p.relative_to(ROOT)) for p in generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
