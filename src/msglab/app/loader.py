"""Finds the App that ``msglab worker MODULE:APP`` names.

``MODULE`` is imported as Python imports it, with the current directory first on the path
(as ``python -m`` would); ``APP`` is an attribute of it (``app`` when left out). Everything
that can go wrong is a ``UsageError`` with a one-line reason: a module that does not import
(its error named), no such attribute, not an App, an App without handlers. A ``MsglabError``
raised while the module registers its handlers (an unknown transport or profile) keeps its
own message.
"""

from __future__ import annotations

import importlib
import os
import sys

from msglab.app.application import App
from msglab.errors import MsglabError, UsageError


def load_app(target: str) -> App:
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise UsageError(f"{target!r}: name an App as MODULE:APP, e.g. myservice.worker:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except MsglabError:
        raise
    except Exception as exc:  # the user's module: any error it raises is a reason to show
        raise UsageError(
            f"cannot import {module_name}: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    found = getattr(module, attr, None)
    if found is None:
        raise UsageError(f"module {module_name} has no {attr!r}")
    if not isinstance(found, App):
        raise UsageError(f"{module_name}:{attr} is a {type(found).__name__}, not a msglab App")
    if not found.consumers:
        raise UsageError(f"app {found.name} ({target}) has no handlers")
    return found


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"
