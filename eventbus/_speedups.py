"""Which codec runs: the one compiled from ``_codec.py`` by ``hatch_build.py``, or the
pure-Python source itself (no compiler at install, or ``EVENTBUS_PURE_PYTHON=1``).

``eventbus._codec`` calls :func:`settle` as the last step of its import: that is where the
switch happens, whoever imports the codec first."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("_codec.py")


def _is_compiled(path: str) -> bool:
    return not path.endswith(".py")


def codec_is_compiled(module: ModuleType) -> bool:
    """True when ``module`` (``eventbus._codec``) was loaded from the extension module."""
    return _is_compiled(str(module.__file__))


def settle(module_name: str, module_file: str) -> bool:
    """The end of the codec's import: under ``EVENTBUS_PURE_PYTHON=1`` a compiled codec
    gives its place in ``sys.modules`` to one loaded from ``_codec.py`` (the import then
    returns that one) and False is returned: it must register nothing. Otherwise True
    (and a warning when the compiled codec is stale)."""
    if not _is_compiled(module_file):
        return True
    if os.environ.get("EVENTBUS_PURE_PYTHON") != "1":
        warn_if_stale(module_file)
        return True
    spec = importlib.util.spec_from_file_location(module_name, _SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return False


def warn_if_stale(compiled_file: str) -> None:
    """Warn when ``_codec.py`` changed after it was compiled: the stale build would run.
    (Nothing to compare when the codec runs from its source.)"""
    if not _is_compiled(compiled_file):
        return
    try:
        stale = _SOURCE.stat().st_mtime > Path(compiled_file).stat().st_mtime
    except OSError:  # an installed wheel may carry no source: nothing to compare
        return
    if stale:
        warnings.warn(
            f"{compiled_file} is older than {_SOURCE}: the old codec runs. Rebuild it "
            "(make install) or set EVENTBUS_PURE_PYTHON=1",
            RuntimeWarning,
            stacklevel=2,
        )
