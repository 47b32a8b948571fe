"""The layout a newcomer relies on: the course's files and the commands at the top, every
imported module in a package, no module importing a script, no import cycle, no
``sys.path`` edit."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRADED = {"mlp", "utils", "mobileNet", "unet"}
SCRIPTS = {"main_classification", "main_segmentation", "convolution", "experiments", "test"}
PACKAGES = ("medimg", "report", "tools")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """The project modules ``path`` imports (absolute imports only: the code uses no others)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_modules():
    files = [*ROOT.glob("*.py"), *(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))]
    return {module_name(p): p for p in files}


def test_the_top_level_holds_the_course_files_and_the_commands():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == GRADED | SCRIPTS, f"unexpected top-level files: {sorted(top - GRADED - SCRIPTS)}"
    assert len(top) <= 10


def test_no_module_imports_a_script_and_no_sys_path_edit():
    modules = project_modules()
    for name, path in modules.items():
        if name in SCRIPTS:
            continue
        imported = imports(path) & (SCRIPTS - {"test"})
        assert not imported, f"{path.relative_to(ROOT)} imports the script(s) {sorted(imported)}"
    for path in [*modules.values(), *(ROOT / "tests").glob("*.py")]:
        edits = [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
                 and node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"]
        assert not edits, f"{path.relative_to(ROOT)} uses sys.path (lines {edits}); pytest.ini sets the root"


def test_the_graded_files_import_only_torch_and_numpy():
    for name in GRADED:
        roots = {n.split(".")[0] for n in imports(ROOT / f"{name}.py")}
        assert roots <= {"torch", "numpy", "math", "typing"}, (name, roots)


def test_no_import_cycle():
    modules = project_modules()
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    done, on_path = set(), []

    def visit(name):
        if name in on_path:
            raise AssertionError("import cycle: " + " -> ".join(on_path[on_path.index(name):] + [name]))
        if name in done:
            return
        on_path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        on_path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
