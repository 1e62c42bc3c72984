"""Every public name of the package has a docstring (issue 9): each public class and function
defined in a module of `nbchat`, and each public method or property of those classes, unless it
inherits a documented one from a base class. A dataclass's generated `Name(field, ...)` text is
not a docstring."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from types import ModuleType

import nbchat


def all_modules() -> list[ModuleType]:
    found = [nbchat]
    for info in pkgutil.walk_packages(nbchat.__path__, "nbchat."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        found.append(importlib.import_module(info.name))
    return found


def own_doc(obj: object) -> str:
    """The docstring written for `obj` itself ("" when there is none)."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""  # dataclasses fill a missing docstring with the signature
        return doc.strip()
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, functools.cached_property):
        obj = obj.func
    return (getattr(obj, "__doc__", None) or "").strip()


def is_member(value: object) -> bool:
    return inspect.isfunction(value) or isinstance(
        value, (property, functools.cached_property, staticmethod, classmethod))


def inherits_doc(cls: type, name: str) -> bool:
    return any(name in vars(base) and own_doc(vars(base)[name]) for base in cls.__mro__[1:])


def undocumented() -> list[str]:
    missing: list[str] = []
    for mod in all_modules():
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not own_doc(obj):
                missing.append(f"{mod.__name__}.{name}")
            if not inspect.isclass(obj):
                continue
            for member, value in vars(obj).items():
                if member.startswith("_") or not is_member(value):
                    continue
                if not own_doc(value) and not inherits_doc(obj, member):
                    missing.append(f"{mod.__name__}.{name}.{member}")
    return missing


def test_every_public_name_has_a_docstring():
    missing = undocumented()
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_docstring():
    """The walk itself works: a bare class, a dataclass and a method are each caught."""

    @dataclasses.dataclass
    class Bare:
        x: int = 0

        def method(self) -> None:
            pass

    class Documented:
        """Documented."""

        def method(self) -> None:
            """Documented."""

    class Child(Documented):
        """Child."""

        def method(self) -> None:
            pass

    assert own_doc(Bare) == "" and own_doc(vars(Bare)["method"]) == ""
    assert own_doc(Documented) == "Documented."
    assert inherits_doc(Child, "method") and not inherits_doc(Bare, "method")
