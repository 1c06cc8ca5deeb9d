"""Layers point down: every project import (module level and deferred, inside
functions) goes from a layer to itself or to a layer below it (DESIGN.md §2).

`LAYERS` is the one written table of allowed directions; docs/CONTRACTS.md
("Layers") explains it. A layer is a top-level folder, except `pix2seq/`, which is
two layers by module: the guard (`GUARD_MODULES`: Keras 3 guard, console, progress),
which every folder imports first, and the command-line layer (every other module in
`pix2seq/`, e.g. `cli.py`, `*_cli.py`), which may import everything and which nothing
imports. Imports inside one layer are free (a folder's own modules).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# layer -> the layers it may import besides itself. Siblings (components, serving)
# do not import each other: what both need lives below them, in model/.
LAYERS = {
    "guard": set(),
    "data": {"guard"},
    "model": {"guard", "data"},
    "components": {"guard", "data", "model"},
    "serving": {"guard", "data", "model"},
    "pipeline": {"guard", "data", "model", "components", "serving"},
    "cli": {"guard", "data", "model", "components", "serving", "pipeline"},
}
FOLDERS = ("data", "model", "components", "serving", "pipeline")
GUARD_MODULES = {"pix2seq", "pix2seq.console", "pix2seq.stderr_filter", "pix2seq.progress"}


def layer_of(module: str):
    """The layer of a dotted project module name, None for third-party modules."""
    top = module.split(".")[0]
    if top == "pix2seq":
        return "guard" if module in GUARD_MODULES else "cli"
    return top if top in FOLDERS else None


def project_files():
    for folder in ("pix2seq",) + FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str) -> str:
    """The longest prefix of `name` that is a project module or package:
    `from pix2seq import __version__` imports the module `pix2seq`."""
    parts = name.split(".")
    while len(parts) > 1:
        path = ROOT.joinpath(*parts)
        if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
            break
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool):
    """(line, dotted name) of every import in `source` (the text of `module`), at any
    depth: deferred imports inside functions count. `from X import Y` yields X.Y as
    well as X; relative imports are resolved against the module's package."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def file_imports(path: pathlib.Path):
    return imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")


def violations():
    found = []
    for path in project_files():
        source = layer_of(module_name(path))
        for line, name in file_imports(path):
            target = layer_of(resolve(name))
            if target is not None and target != source and target not in LAYERS[source]:
                found.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {name} ({target})")
    return found


def test_layer_table_is_acyclic_and_complete():
    assert set(LAYERS) == {"guard", "cli"} | set(FOLDERS)
    order = []
    remaining = dict(LAYERS)
    while remaining:  # topological sort; a cycle leaves layers that never become ready
        ready = [n for n, below in remaining.items() if below <= set(order)]
        assert ready, f"cycle in LAYERS among {sorted(remaining)}"
        order += sorted(ready)
        for n in ready:
            del remaining[n]
    assert order[0] == "guard" and order[-1] == "cli"


def test_every_import_points_down():
    assert not violations(), "upward or sideways imports:\n" + "\n".join(violations())


def test_library_folders_hold_no_cli_code():
    offenders = []
    for path in project_files():
        if layer_of(module_name(path)) in ("guard", "cli"):
            continue
        names = {name for _, name in file_imports(path)}
        text = path.read_text()
        if "argparse" in names or "def add_arguments(" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"command-line code in library folders (move it to pix2seq/): {offenders}"


@pytest.mark.parametrize("source, name, expected", [
    ("data/augment.py", "model.tasks", False),
    ("model/input_pipelines.py", "model.tasks", True),
    ("model/decoder.py", "data.features", True),
    ("serving/client.py", "components.coco_metrics", False),
    ("pix2seq/cli.py", "pipeline.report", True),
    ("data/coco.py", "pix2seq.train_cli", False),
    ("components/x.py", "pix2seq.progress", True),
])
def test_checker_decides_directions(source, name, expected):
    """The checker itself: known allowed and forbidden edges are classified as such."""
    src = layer_of(module_name(ROOT / source))
    dst = layer_of(name)
    assert (dst == src or dst in LAYERS[src]) is expected


def test_checker_sees_deferred_relative_and_attribute_imports():
    """An import inside a function and a relative import are both found; an imported
    attribute resolves to its module."""
    names = {name for _, name in imported_modules(
        "def f():\n    from model import tasks\n    from . import coco\n", "data.probe", False)}
    assert {"model", "model.tasks", "data", "data.coco"} <= names
    assert resolve("pix2seq.__version__") == "pix2seq"
    assert resolve("model.tasks.task_names") == "model.tasks"
    assert layer_of(resolve("pix2seq.cli.main")) == "cli"


# --- one home per task: generic code names no task ------------------------------------------
# A module outside model/tasks/ that compares a task variable with a task name, lists task
# names, or picks a task by a literal name holds a second home of that task's logic. Module
# -> why its literals stay (keep this short; the recipe is docs/CONTRACTS.md "Adding a task").
TASK_NAME_ALLOWED = {
    # configuration data, not logic: named presets set weights, batch sizes and thresholds per task
    "pipeline.presets": "presets set weights, batch sizes and thresholds per built-in task",
}


def task_name_literals():
    """The built-in task names, read statically from model/tasks/*.py (`name = "..."`)."""
    names = set()
    for path in (ROOT / "model" / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["name"]
                            and isinstance(stmt.value, ast.Constant) and stmt.value.value):
                        names.add(stmt.value.value)
    return names


def task_name_uses(source: str, names):
    """(line, what) of each place `source` names a task: a comparison of a task-ish operand
    (its text mentions `task`) with a task name, a tuple/list/set or dict keys holding two
    task names or more, a call with a task name first (`get_task("detection", ...)`; not a
    field read such as `ann.get("segmentation")`). A lone name elsewhere (e.g. the
    `keypoints` field `obj["keypoints"]`) is not a task."""
    def is_name(node):
        return isinstance(node, ast.Constant) and node.value in names

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left] + node.comparators
            others = " ".join(ast.unparse(o) for o in operands if not is_name(o))
            if any(map(is_name, operands)) and "task" in others.lower():
                found.append((node.lineno, f"compares {ast.unparse(node)}"))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            listed = {i.value for i in items if is_name(i)}
            if len(listed) >= 2:
                found.append((node.lineno, f"lists {sorted(listed)}"))
        elif isinstance(node, ast.Call) and node.args and is_name(node.args[0]):
            if ast.unparse(node.func).split(".")[-1] not in ("get", "pop", "setdefault"):
                found.append((node.lineno, f"calls {ast.unparse(node)}"))
    return found


def test_no_module_outside_model_tasks_names_a_task():
    names = task_name_literals()
    assert {"detection", "segmentation", "keypoints", "captioning"} <= names
    offenders = []
    for path in project_files():
        module = module_name(path)
        if module.startswith("model.tasks") or module in TASK_NAME_ALLOWED:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line} {what}" for line, what in task_name_uses(path.read_text(), names)]
    assert not offenders, ("task logic outside model/tasks/ (ask the task class or loop over "
                           "model.tasks.task_names()):\n" + "\n".join(offenders))


def test_task_name_check_sees_branches_lists_and_lookups():
    """The checker itself: task branching is found, a field of the same name is not."""
    names = {"detection", "keypoints", "captioning"}
    uses = task_name_uses(
        'if task.name == "detection": pass\n'
        'if "captioning" in tasks: pass\n'
        'TASKS = ("detection", "keypoints")\n'
        'W = {"detection": 1, "captioning": 2}\n'
        'codec = get_task("keypoints", tc)\n'
        'if "keypoints" in obj: pass\n'
        'points = outputs["keypoints"]\n'
        'rle = ann.get("segmentation")\n', names)
    assert [line for line, _ in uses] == [1, 2, 3, 4, 5]
    assert set(TASK_NAME_ALLOWED) <= {module_name(p) for p in project_files()}
