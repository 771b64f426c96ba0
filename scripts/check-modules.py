#!/usr/bin/env python3
"""Checks the library's module graph: no circles, and no library file over the line limit.

    python3 scripts/check-modules.py [crates/procpool/src]

A module is a top-level file or folder under src/ (`supervisor/` is one module with all its
files). An edge A -> B is any `crate::B` path in A's code, tests excluded (`#[cfg(test)] mod
tests` to the end of the file is not read). The crate root (lib.rs) may use every module. It
prints the graph, fails on a circle, and fails on a file whose code (comments, blank lines and
tests left out) is over MAX_CODE_LINES. Standard library only.
"""

import pathlib
import re
import sys

MAX_CODE_LINES = 800


def code_of(text):
    """The text before the first `#[cfg(test)]` module."""
    at = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    return text[: at.start()] if at else text


def code_lines(text):
    lines = 0
    for line in code_of(text).splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("//"):
            lines += 1
    return lines


def main():
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crates/procpool/src")
    modules = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.parts == ("lib.rs",):
            continue
        name = rel.parts[0].removesuffix(".rs")
        modules.setdefault(name, []).append(path)
    graph = {}
    too_long = []
    for name, paths in modules.items():
        uses = set()
        for path in paths:
            text = path.read_text()
            n = code_lines(text)
            if n > MAX_CODE_LINES:
                too_long.append(f"{path}: {n} lines of code, over {MAX_CODE_LINES}")
            for other in re.findall(r"crate::(\w+)", code_of(text)):
                if other in modules and other != name:
                    uses.add(other)
        graph[name] = sorted(uses)
    for name in sorted(graph):
        print(f"{name:14s} -> {', '.join(graph[name]) or '(leaf)'}")
    # A circle is a path back to where it started.
    circles = set()

    def walk(node, path):
        for nxt in graph[node]:
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                circles.add(" -> ".join(cycle))
            else:
                walk(nxt, path + [nxt])

    for name in graph:
        walk(name, [name])
    failed = False
    for circle in sorted(circles):
        print(f"circle: {circle}")
        failed = True
    for line in too_long:
        print(line)
        failed = True
    if failed:
        sys.exit(1)
    print("no circles; every file within the limit")


if __name__ == "__main__":
    main()
