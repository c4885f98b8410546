#!/usr/bin/env bash
# Builds the web client and runs its browser test against an already running service pair.
#
#   AUTH_URL=http://127.0.0.1:50051 TASK_URL=http://127.0.0.1:50052 bash examples/web-client/ci.sh
#
# Starts no Rust service. Needs Node.js 20+, npm and chromium at /usr/bin/chromium (or
# CHROMIUM_PATH). The screenshot goes to $SCREENSHOT_DIR (default: <repo>/target/client-tests).
set -euo pipefail

: "${AUTH_URL:?set AUTH_URL to the auth-service base URL, e.g. http://127.0.0.1:50051}"
: "${TASK_URL:?set TASK_URL to the task-service base URL, e.g. http://127.0.0.1:50052}"
export AUTH_URL TASK_URL

# A relative SCREENSHOT_DIR is relative to where we were called from, not to this folder.
if [[ -n "${SCREENSHOT_DIR:-}" ]]; then
  SCREENSHOT_DIR="$(realpath -m -- "$SCREENSHOT_DIR")"
  export SCREENSHOT_DIR
fi

chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium_path" ]]; then
  echo "ci.sh: no chromium at $chromium_path (apt-get install -y --no-install-recommends chromium, or set CHROMIUM_PATH)" >&2
  exit 1
fi

cd "$(dirname -- "${BASH_SOURCE[0]}")"

echo "== npm ci"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

echo "== npm run build"
npm run --silent build

echo "== browser test (auth $AUTH_URL, tasks $TASK_URL)"
node --test e2e/browser.test.mjs e2e/sessions.test.mjs e2e/live.test.mjs
