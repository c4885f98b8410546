#!/usr/bin/env python3
"""Runs the walkthrough (docs/walkthrough.md) against a running pair and checks every answer.

Every fenced `sh` block between the `examples:begin` and `examples:end`
markers runs, in order, in one bash session (so `TOKEN=...` carries over). A `json` block
right after an `sh` block is the answer that block must print, compared by shape:

- objects need the same keys, arrays the same length, numbers and booleans the same value;
- a string equal to the page's is always fine; otherwise the page's string may stand
  for a value that differs per run: a UUID, an RFC 3339 time, or text ending in `...`
  (the actual value must start with what comes before the `...`);
- an answer with a `code` key is an error, and the command must fail.

A `text` block right after an `sh` block is the exact output, line for line; one whose
first line is `ERROR:` (grpcurl's error report) also means the command must fail.

A `json` block holding several documents is a stream: the command must print that many, each
compared as above, in order. A `text` block starting with `ERROR:` right after it is how the
stream ends (grpcurl's `-max-time`): the command must fail with exactly that report.

Usage: AUTH_ADDR=127.0.0.1:PORT TASK_ADDR=127.0.0.1:PORT BUF=/path/to/buf walkthrough.py [PAGE.md]
The page's addresses (127.0.0.1:50051 and :50052) are replaced by the given ones, and
`npx --yes @bufbuild/buf` by `$BUF` (the version CI pins); `grpcurl` must be on PATH.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "walkthrough.md"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def blocks(page: str):
    """The fenced blocks of the marked section, as (language, text)."""
    begin = page.index("<!-- examples:begin -->")
    end = page.index("<!-- examples:end -->")
    return re.findall(r"^```(\w*)\n(.*?)^```$", page[begin:end], flags=re.S | re.M)


def commands(script: str):
    """Logical command lines (backslash continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def json_documents(text: str):
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        start = text.find("{", i)
        if start < 0:
            break
        try:
            doc, i = decoder.raw_decode(text, start)
            docs.append(doc)
        except json.JSONDecodeError:
            i = start + 1
    return docs


def matches(expected, actual, path="$"):
    """None if `actual` has the shape of `expected`, else why not."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            return f"{path}: keys {sorted(actual) if isinstance(actual, dict) else actual!r}, the page shows {sorted(expected)}"
        for key in expected:
            why = matches(expected[key], actual[key], f"{path}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return f"{path}: {actual!r}, the page shows {len(expected)} item(s)"
        for n, (e, a) in enumerate(zip(expected, actual)):
            why = matches(e, a, f"{path}[{n}]")
            if why:
                return why
        return None
    if isinstance(expected, str) and isinstance(actual, str):
        if expected == actual:
            return None
        if UUID.match(expected) and UUID.match(actual):
            return None
        if TIME.match(expected) and TIME.match(actual):
            return None
        if expected.endswith("...") and actual.startswith(expected[:-3]) and actual:
            return None
        return f"{path}: {actual!r}, the page shows {expected!r}"
    return None if expected == actual else f"{path}: {actual!r}, the page shows {expected!r}"


class Stream:
    """A `json` block of several documents: a server stream's messages, then how it ended."""

    def __init__(self, documents: list, ending: list | None):
        self.documents = documents
        self.ending = ending


def main() -> int:
    auth, tasks, buf = os.environ["AUTH_ADDR"], os.environ["TASK_ADDR"], os.environ["BUF"]
    page = (Path(sys.argv[1]) if len(sys.argv) > 1 else PAGE).read_text()
    pairs = []  # (sh text, expected: one JSON document, a Stream, lines of text, or None)
    found = blocks(page)
    for n, (lang, text) in enumerate(found):
        if lang != "sh":
            continue
        following = found[n + 1] if n + 1 < len(found) else None
        expected = None
        if following and following[0] == "json":
            documents = json_documents(following[1])
            if len(documents) == 1:
                expected = documents[0]
            else:
                after = found[n + 2] if n + 2 < len(found) else None
                ending = after[1].splitlines() if after and after[0] == "text" and after[1].startswith("ERROR:") else None
                expected = Stream(documents, ending)
        elif following and following[0] == "text":
            expected = following[1].splitlines()
        pairs.append((text, expected))
    if not pairs:
        print("no examples found between the page's markers", file=sys.stderr)
        return 1

    # One bash session; each command's output and exit status marked so they can be told apart.
    script = ["set -uo pipefail"]
    for n, (text, _) in enumerate(pairs):
        script.append(f"echo '@@block {n}'")
        for command in commands(text):
            command = command.replace("npx --yes @bufbuild/buf", buf)
            command = command.replace("127.0.0.1:50051", auth).replace("127.0.0.1:50052", tasks)
            script.append(f"{{ {command} ; }} 2>&1 || echo \"@@failed $?\"")
    result = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=300)
    outputs = re.split(r"^@@block \d+\n", result.stdout, flags=re.M)[1:]
    if len(outputs) != len(pairs):
        print(f"expected {len(pairs)} blocks of output, got {len(outputs)}:\n{result.stdout}\n{result.stderr}")
        return 1

    failures = 0
    for n, ((text, expected), output) in enumerate(zip(pairs, outputs)):
        first = commands(text)[0][:100]
        failed = "@@failed" in output
        wants_error = (
            (isinstance(expected, dict) and "code" in expected)
            or (isinstance(expected, list) and expected[:1] == ["ERROR:"])
            or (isinstance(expected, Stream) and expected.ending is not None)
        )
        problem = None
        if failed and not wants_error:
            problem = "the command failed"
        elif wants_error and not failed:
            problem = "the the page shows an error but the command succeeded"
        elif isinstance(expected, Stream):
            docs = json_documents(output)
            if len(docs) != len(expected.documents):
                problem = f"printed {len(docs)} JSON documents, the page shows {len(expected.documents)}"
            for want, got in zip(expected.documents, docs):
                problem = problem or matches(want, got)
            if problem is None and expected.ending is not None:
                lines = [line for line in output.splitlines() if not line.startswith("@@failed")]
                tail = lines[lines.index("ERROR:"):] if "ERROR:" in lines else []
                if tail != expected.ending:
                    problem = f"the stream ended with {tail}, the page shows {expected.ending}"
        elif isinstance(expected, list):
            lines = [line for line in output.splitlines() if line.strip() and not line.startswith("@@failed")]
            if lines != expected:
                problem = f"printed {lines}, the page shows {expected}"
        elif expected is not None:
            docs = json_documents(output)
            if not docs:
                problem = "no JSON answer"
            for doc in docs:
                problem = problem or matches(expected, doc)
        print(f"{'ok  ' if problem is None else 'FAIL'} block {n}: {first}")
        if problem:
            failures += 1
            print(f"     {problem}\n     output:\n" + "\n".join("       " + line for line in output.splitlines()))
    print(f"{len(pairs) - failures} of {len(pairs)} example blocks behave as shown")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
