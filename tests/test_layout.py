"""The package layout is the architecture: core <- providers (with their shared protocol
modules) and core <- notebook, with no sideways imports and one owner of `nbchat.last`."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parent.parent / "nbchat"


def modules(folder: str) -> list[Path]:
    return sorted((PKG / folder).glob("*.py"))


def imported(path: Path) -> set[str]:
    """Absolute names of the nbchat modules (and third-party roots) that a file imports."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None:  # "from . import x": x is a module of that package
                out |= {f"{mod}.{a.name}" for a in node.names}
            else:
                out.add(mod)
    return out


def nbchat_imports(path: Path) -> set[str]:
    return {m for m in imported(path) if m == "nbchat" or m.startswith("nbchat.")}


def test_folders_show_the_layers():
    names = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert {"core", "providers", "notebook", "static"} <= names
    assert (PKG / "providers" / "protocols").is_dir()
    protocols = {p.stem for p in modules("providers/protocols")} - {"__init__"}
    assert {"openai_wire", "openai_compat", "cog_prediction", "nvcf"} <= protocols


def test_core_knows_nothing_of_notebooks_or_providers():
    for path in modules("core"):
        for mod in imported(path):
            root = mod.split(".")[0]
            assert root not in ("IPython", "ipywidgets", "anywidget", "traitlets"), (path, mod)
            assert not mod.startswith(("nbchat.providers", "nbchat.notebook")), (path, mod)


def test_providers_import_only_core_and_protocols():
    for path in modules("providers"):
        for mod in nbchat_imports(path):
            ok = mod.startswith(("nbchat.core", "nbchat.providers.protocols"))
            assert ok, f"{path.name} imports {mod} sideways"
    for path in modules("providers/protocols"):
        for mod in nbchat_imports(path):
            assert mod.startswith(("nbchat.core", "nbchat.providers.protocols")), (path, mod)


def test_a_provider_package_imports_only_core_protocols_and_itself():
    packages = [p for p in (PKG / "providers").iterdir()
                if p.is_dir() and p.name not in ("protocols", "__pycache__")]
    assert packages  # llamacpp: provider, options, cache
    for folder in packages:
        own = f"nbchat.providers.{folder.name}"
        for path in sorted(folder.glob("*.py")):
            for mod in nbchat_imports(path):
                ok = mod.startswith(("nbchat.core", "nbchat.providers.protocols", own))
                assert ok, f"{folder.name}/{path.name} imports {mod} sideways"


def test_notebook_layer_talks_only_to_the_core():
    for path in modules("notebook"):
        for mod in nbchat_imports(path):
            assert mod.startswith(("nbchat.core", "nbchat.notebook")), (path.name, mod)


def test_one_owner_assigns_nbchat_last():
    owners = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "last":
                    owners.append(path)
            if isinstance(node, ast.Global) and "_last" in node.names:
                owners.append(path)
    assert [p.relative_to(PKG).as_posix() for p in owners] == ["notebook/last_result.py"]


def test_nbchat_last_reads_its_owner():
    import nbchat
    from nbchat.notebook import last_result

    before = last_result.get()
    try:
        sentinel = object()
        last_result.remember(sentinel)
        assert nbchat.last is sentinel
    finally:
        last_result.remember(before)
