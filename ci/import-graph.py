#!/usr/bin/env python3
"""Prints the file-level import graph of src/ and fails on a cycle.

Each file's edges are the `crate::...` paths it names (in `use` lines and
inline paths), resolved to the file that defines that module. A file's
`mod` declarations are not edges. Run: python3 ci/import-graph.py [--dot]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            files["::".join(parts)] = rel
    return files


def strip_tests(text):
    # Unit tests may import anything; the graph is of the code itself.
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]


def edges(files):
    graph = {}
    for module, rel in files.items():
        text = strip_tests(open(os.path.join(ROOT, rel)).read())
        text = re.sub(r"//.*", "", text)
        found = set()
        paths = re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)
        # `use crate::x::{a, b::c}` groups
        for group in re.findall(r"crate::((?:[a-z_]+::)*)\{([^}]*)\}", text):
            prefix, inner = group
            for item in inner.split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    paths.append(prefix + item)
                elif item == "self":
                    paths.append(prefix.rstrip(":"))
        parent = module.rsplit("::", 1)[0] if "::" in module else ""
        is_dir_module = rel.endswith("mod.rs") or rel == "lib.rs"
        here = module if is_dir_module else parent
        for rel_path in re.findall(r"\bsuper::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
            up = parent  # `super` is the parent of this module, file or directory
            paths.append((up + "::" if up else "") + rel_path)
        # `use child::...` in a mod.rs names a submodule of this directory.
        for child in re.findall(r"^\s*(?:pub )?use ([a-z_][a-z0-9_]*)::", text, flags=re.M):
            if child not in ("crate", "super", "self", "std", "core") and f"{here}::{child}" in files:
                paths.append(f"{here}::{child}")
        for path in paths:
            parts = path.split("::")
            while parts and "::".join(parts) not in files:
                parts = parts[:-1]
            target = "::".join(parts)
            if parts and target != module:
                found.add(target)
        graph[module] = sorted(found)
    return graph


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def main():
    graph = edges(module_files())
    if "--dot" in sys.argv:
        print("digraph imports {")
        for a, bs in sorted(graph.items()):
            for b in bs:
                print(f'  "{a}" -> "{b}";')
        print("}")
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    print(f"no import cycle among {len(graph)} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
