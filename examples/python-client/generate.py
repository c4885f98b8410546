#!/usr/bin/env python3
"""Generate the Python gRPC stubs from the repository's proto/ folder into ./generated.

Runs `python -m grpc_tools.protoc` (which adds the well-known types such as
google/protobuf/timestamp.proto to the include path). The output folder is wiped first, so
stubs of removed .proto files do not linger. It is gitignored: the stubs are build output.
"""

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
OUT = HERE / "generated"


def main() -> int:
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        print(f"no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",  # type stubs, for editors and type checkers
            f"--grpc_python_out={OUT}",
            *map(str, protos),
        ],
        check=True,
    )
    names = ", ".join(str(p.relative_to(PROTO_ROOT)) for p in protos)
    print(f"generated stubs for {names} into {OUT.relative_to(HERE)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
