#!/usr/bin/env bash
# The release build of both services: the Dockerfile runs this script and CI runs it too
# (deploy/check), so the image's build cannot break without CI failing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p auth-service -p task-service
