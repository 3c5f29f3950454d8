"""Regenerate the Python gRPC code of every .proto under protos/ (run after editing a .proto).

Usage: python protos/generate.py [OUTPUT_DIR]   (default: next to the .proto files)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def generate(output: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc for every proto file; returns the proto files compiled."""
    protos = sorted(PROTO_ROOT.glob("aelstm/**/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    for proto in protos:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={output}",
            f"--pyi_out={output}",
            f"--grpc_python_out={output}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    return protos


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT
    for proto in generate(out):
        print(f"generated {proto.relative_to(PROTO_ROOT)} -> {out}")
