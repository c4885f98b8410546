#!/usr/bin/env bash
# CI for the Python example client, against an auth-service / task-service pair that is
# already running (this script never starts them):
#
#   AUTH_ADDR=127.0.0.1:50051 TASK_ADDR=127.0.0.1:50052 bash examples/python-client/ci.sh
#
# The virtualenv lives at $VENV (default: <repo>/target/python-client-venv) and is reused.
set -euo pipefail

: "${AUTH_ADDR:?set AUTH_ADDR to the auth-service address, host:port}"
: "${TASK_ADDR:?set TASK_ADDR to the task-service address, host:port}"
export AUTH_ADDR TASK_ADDR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-$REPO_ROOT/target/python-client-venv}
cd "$HERE"

if [[ ! -x $VENV/bin/python ]]; then
  echo "creating virtualenv $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY=$VENV/bin/python
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt

echo "== generate stubs"
"$PY" generate.py

echo "== unit tests against $AUTH_ADDR and $TASK_ADDR"
"$PY" -m unittest -v test_client

echo "== todo_client.py"
"$PY" todo_client.py --auth "$AUTH_ADDR" --tasks "$TASK_ADDR"
