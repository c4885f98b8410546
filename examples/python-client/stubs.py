"""The generated stubs, importable from anywhere in this folder.

protoc writes modules that import each other by proto package (`task_pb2_grpc.py` does
`from todo.task.v1 import task_pb2`), so the folder they were generated into must be on
sys.path. This module puts it there, in one explicit place, and re-exports the modules:

    from stubs import auth_pb2, auth_pb2_grpc, task_pb2, task_pb2_grpc
"""

import sys
from pathlib import Path

GENERATED = Path(__file__).resolve().parent / "generated"

if not (GENERATED / "todo").is_dir():
    raise ModuleNotFoundError(f"no generated stubs in {GENERATED}: run `python generate.py` first")
if str(GENERATED) not in sys.path:
    sys.path.insert(0, str(GENERATED))

from todo.auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
from todo.task.v1 import task_pb2, task_pb2_grpc  # noqa: E402

__all__ = ["auth_pb2", "auth_pb2_grpc", "task_pb2", "task_pb2_grpc"]
