#!/usr/bin/env python3
"""Checks the import graph of src/: the layers by folder, and no cycle.

Each file's edges are the `crate::...` paths it names (in `use` lines and
inline paths), resolved to the file that defines that module. A file's
`mod` declarations are not edges. Two checks, each failing the run:

- layers: a folder (or top-level file) of src/ imports only folders in
  lower layers of LAYERS below, and its own files;
- files: no import cycle among the files.

Run: python3 ci/import-graph.py [--dot] [--folders] [--root SRC]
     python3 ci/import-graph.py --self-test   (shows that both checks fail)
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# The dependency direction, written once: each folder of src/ (or top-level
# file, without `.rs`) in its layer, lowest first. A folder may import a
# folder of a lower layer, never one of its own layer or above: `resource`
# and `operator` are two faces that share what is below them and never each
# other. `lib.rs` (the crate root, `""`) only declares them.
LAYERS = [
    ["error"],
    ["protocol", "process"],
    ["model"],
    ["config"],
    ["store"],
    ["resource", "operator"],
]


def module_files(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            files["::".join(parts)] = rel
    return files


def strip_tests(text):
    # Unit tests may import anything; the graph is of the code itself.
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]


def edges(root, files):
    graph = {}
    for module, rel in files.items():
        text = strip_tests(open(os.path.join(root, rel)).read())
        text = re.sub(r"//.*", "", text)
        found = set()
        paths = re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)
        # `crate::Error` and `crate::Result` are lib.rs's re-exports of error's.
        if re.search(r"\bcrate::(?:Error|Result)\b", text):
            paths.append("error")
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
        for rel_path in re.findall(r"\bsuper::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
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


def folder(module):
    """The folder (or top-level file) of src/ a module is in; "" for lib.rs."""
    return module.split("::")[0]


def layer_errors(graph):
    """Every edge against LAYERS, and every folder missing from it."""
    rank = {name: i for i, names in enumerate(LAYERS) for name in names}
    errors = []
    for name in sorted({folder(m) for m in graph} - set(rank) - {""}):
        errors.append(f"src/{name} is in no layer: add it to LAYERS in ci/import-graph.py")
    for a, bs in sorted(graph.items()):
        fa = folder(a)
        for b in bs:
            fb = folder(b)
            if fa in ("", fb) or fa not in rank or fb not in rank:
                continue
            if rank[fb] >= rank[fa]:
                where = "above" if rank[fb] > rank[fa] else "beside"
                errors.append(
                    f"layer violation: {a} imports {b} ({fb} is {where} {fa} in LAYERS)"
                )
    return errors


def folder_graph(graph):
    out = {}
    for a, bs in graph.items():
        for b in bs:
            if folder(a) not in ("", folder(b)):
                out.setdefault(folder(a), set()).add(folder(b))
    return {a: sorted(bs) for a, bs in out.items()}


def main(argv):
    root = ROOT
    if "--root" in argv:
        root = argv[argv.index("--root") + 1]
    graph = edges(root, module_files(root))
    shown = folder_graph(graph) if "--folders" in argv else graph
    if "--dot" in argv or "--folders" in argv:
        print("digraph imports {")
        for a, bs in sorted(shown.items()):
            for b in bs:
                print(f'  "{a}" -> "{b}";')
        print("}")
    status = 0
    for error in layer_errors(graph):
        print(error, file=sys.stderr)
        status = 1
    if status == 0:
        print(f"every import follows the {len(LAYERS)} layers", file=sys.stderr)
    cycle = find_cycle(graph)
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    print(f"no import cycle among {len(graph)} files", file=sys.stderr)
    return status


def self_test():
    """Runs the checks on small trees: a sound one passes; an edge against
    the layers, a folder in no layer and a cycle each fail, naming it."""
    sound = {
        "lib.rs": "pub mod error;\npub mod model;\npub mod store;\npub use error::Error;\n",
        "error.rs": "pub struct Error;\n",
        "model/mod.rs": "pub mod pool;\n",
        "model/pool.rs": "use crate::Error;\n",
        "store/mod.rs": "use crate::model::pool;\n",
    }
    cases = [
        ("sound", {}, 0, "no import cycle"),
        (
            "an edge up",
            {"model/pool.rs": "use crate::store;\n"},
            1,
            "layer violation: model::pool imports store (store is above model",
        ),
        (
            "an edge up in a group",
            {"model/pool.rs": "use crate::{error::Error, store::{self}};\n"},
            1,
            "layer violation: model::pool imports store",
        ),
        (
            "an edge beside",
            {"lib.rs": sound["lib.rs"] + "pub mod resource;\npub mod operator;\n",
             "resource.rs": "use crate::operator::Page;\n",
             "operator.rs": "pub struct Page;\n"},
            1,
            "layer violation: resource imports operator (operator is beside resource",
        ),
        ("a folder in no layer", {"extra/mod.rs": "use crate::model;\n"}, 1, "src/extra is in no layer"),
        (
            "a file cycle",
            {"model/mod.rs": "pub mod pool;\nuse crate::model::pool::X;\n", "model/pool.rs": "use super::Y;\n"},
            1,
            "import cycle: model",
        ),
    ]
    failed = 0
    for name, changes, want_status, want_text in cases:
        with tempfile.TemporaryDirectory() as tmp:
            for rel, text in {**sound, **changes}.items():
                path = os.path.join(tmp, "src", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
            run = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--root", os.path.join(tmp, "src")],
                capture_output=True,
                text=True,
            )
        ok = run.returncode == want_status and want_text in run.stderr
        print(f"self-test {name}: {'ok' if ok else 'FAILED'} (exit {run.returncode})", file=sys.stderr)
        if not ok:
            print(f"  wanted exit {want_status} and {want_text!r}; stderr:\n{run.stderr}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(self_test() if "--self-test" in sys.argv else main(sys.argv[1:]))
