"""Finding the user's Manager from ``MODULE:ATTR``, the way uvicorn finds an app.

``MODULE`` is a dotted module path (importable from the working directory) or a ``.py`` file
path. Owns the import and its failure messages; runs nothing of the manager.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ctrltrace.manager import Manager


class AppError(Exception):
    """MODULE:ATTR does not name a Manager (bad form, import failure, wrong type)."""


class AppSpecError(AppError):
    """The argument is not of the form MODULE:ATTR."""


def load_manager(spec: str) -> Manager:
    module_part, sep, attr = spec.partition(":")
    if not sep or not module_part or not attr:
        raise AppSpecError(f"expected MODULE:ATTR (like app:mgr or ./app.py:mgr), got {spec!r}")
    module = _import(module_part)
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise AppError(f"module {module_part!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if callable(target) and not isinstance(target, Manager):
        try:
            target = target()  # a factory function, like uvicorn's --factory
        except Exception as error:
            raise AppError(
                f"{spec} failed as a factory: {type(error).__name__}: {error}"
            ) from error
    if not isinstance(target, Manager):
        raise AppError(f"{spec} is a {type(target).__name__}, not a ctrltrace.Manager")
    return target


def _import(module_part: str) -> ModuleType:
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise AppError(f"no such file: {module_part}")
        name = path.stem
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise AppError(f"cannot import {module_part}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            loader_spec.loader.exec_module(module)
        except Exception as error:
            raise AppError(
                f"importing {module_part} failed: {type(error).__name__}: {error}"
            ) from error
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the working directory is importable
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as error:
        if error.name and module_part.startswith(error.name):
            raise AppError(f"no module named {module_part!r} (from {Path.cwd()})") from error
        raise AppError(f"importing {module_part} failed: {error}") from error
    except Exception as error:
        raise AppError(
            f"importing {module_part} failed: {type(error).__name__}: {error}"
        ) from error
