#!/usr/bin/env python3
"""Production Rust lines of the services: every line of *.rs under auth-service/src, task-service/src,
shared/src and dev/src (and contract/src with --contract) outside #[cfg(test)] items and test-only
files (tests.rs). Usage: tests/production_lines.py [REPO_ROOT] [-v] [--contract]"""
import sys, pathlib
def count(text):
    lines = text.splitlines(); n = 0; i = 0
    while i < len(lines):
        if lines[i].strip() == '#[cfg(test)]':
            # skip the attributed item: to the end of its brace block (or the `;` of a one-liner)
            depth = 0; started = False; i += 1
            while i < len(lines):
                l = lines[i]; depth += l.count('{') - l.count('}')
                if '{' in l: started = True
                i += 1
                if (started and depth <= 0) or (not started and l.rstrip().endswith(';')):
                    break
            continue
        n += 1; i += 1
    return n
args = [a for a in sys.argv[1:] if not a.startswith('-')]
root = pathlib.Path(args[0] if args else '.'); total = 0; rows = []
dirs = ['auth-service/src', 'task-service/src', 'shared/src', 'dev/src'] + (['contract/src'] if '--contract' in sys.argv else [])
for d in dirs:
    for f in sorted(p for p in (root / d).rglob('*.rs') if p.name != 'tests.rs'):
        c = count(f.read_text()); total += c; rows.append((c, str(f.relative_to(root))))
if '-v' in sys.argv:
    for c, f in sorted(rows): print(f'{c:6} {f}')
print(total)
