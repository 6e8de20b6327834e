"""Build hook: compile the codec (``eventbus/_codec.py``) with Cython, when it can.

The codec is the publisher's hot path (every event is walked once). Compiled as it is,
with no source change, it takes about a third fewer instructions per event; the same
``.py`` file stays the pure-Python fallback, so a machine without a C compiler (or with
``EVENTBUS_NO_EXTENSIONS=1``) installs and runs the same code, only slower.

* A wheel gets the extension module next to ``_codec.py`` (``import`` prefers it).
* An editable install (``make install``) builds it in place, in the source tree; it is
  gitignored, and ``eventbus._codec`` warns when ``_codec.py`` is newer than it.
* ``EVENTBUS_PURE_PYTHON=1`` at run time loads ``_codec.py`` even where the extension
  exists (``make test`` runs the codec and equivalence tests that way too).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script (make install), outside a build
    BuildHookInterface = object

MODULE = "eventbus._codec"
SOURCE = "eventbus/_codec.py"

# GCC only (another compiler may refuse the flag, and a failed build means pure Python):
# let GCC inline Cython's dict-iteration helper into the walkers' loops. Its default limit
# left it out of line once the builtin types moved to _builtin_types.py (a smaller
# translation unit, a different clone of the helper): encode +3.4% instructions per token
# event, 38.5k -> 39.8k; with the flag 39.0k (callgrind, see the codec split commit).
GCC_FLAGS = ["--param=max-inline-insns-single=400"]


def _compiler_flags() -> list[str]:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "").split()
    return GCC_FLAGS if cc and "gcc" in os.path.basename(cc[0]) else []


def build_extension(root: Path) -> Path:
    """Compile SOURCE into its extension module in place; return the module's path."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    with tempfile.TemporaryDirectory() as tmp:
        extensions = cythonize(
            [
                Extension(
                    MODULE,
                    [str(root / SOURCE)],
                    # without Python's -g debug info: 3.4 MB -> well under 1 MB
                    extra_link_args=["-s"] if sys.platform.startswith("linux") else [],
                    extra_compile_args=_compiler_flags(),
                )
            ],
            build_dir=tmp,
            quiet=True,
            compiler_directives={
                "language_level": "3",
                # the annotations are for mypy: Cython would reject subclasses (e.g. a
                # pydantic ModelMetaclass where the annotation says type)
                "annotation_typing": False,
            },
        )
        cwd = os.getcwd()
        os.chdir(root)  # (in place means relative to the current directory)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # setuptools' deprecation notices
                dist = Distribution({"ext_modules": extensions, "script_name": "setup.py"})
                cmd = build_ext(dist)
                cmd.inplace = True
                cmd.build_temp = os.path.join(tmp, "temp")
                cmd.build_lib = os.path.join(tmp, "lib")
                cmd.ensure_finalized()
                cmd.run()
                module = root / cmd.get_ext_fullpath(MODULE)
        finally:
            os.chdir(cwd)
    return module


class CythonBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("EVENTBUS_NO_EXTENSIONS") == "1":
            self.app.display_info("eventbus: EVENTBUS_NO_EXTENSIONS=1, the codec stays pure Python")
            return
        root = Path(self.root)
        try:
            module = build_extension(root)
        except Exception as exc:  # no compiler, no headers: the pure-Python codec works
            message = f"eventbus: codec not compiled ({type(exc).__name__}: {exc}); pure Python"
            self.app.display_warning(message)
            warnings.warn(message, stacklevel=1)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        relative = module.relative_to(root).as_posix()
        if version == "editable":
            # the editable wheel points at the source tree, where the module now lies
            self.app.display_info(f"eventbus: compiled {relative} (in place)")
            return
        build_data["force_include"][str(module)] = relative
        self.app.display_info(f"eventbus: compiled {relative}")


def main() -> None:
    """``make install``, after the editable install: rebuild the in-place module when
    ``_codec.py`` (or this file) is newer than it; drop it under
    ``EVENTBUS_NO_EXTENSIONS=1`` or when it cannot be built (the pure-Python codec then
    runs), as the build hook does."""
    root = Path(__file__).resolve().parent
    # this interpreter's build only: another Python's (make test-lowest) may lie beside it
    built = [
        path
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if (path := root / "eventbus" / f"_codec{suffix}").exists()
    ]
    if os.environ.get("EVENTBUS_NO_EXTENSIONS") == "1":
        for path in built:
            path.unlink()
        print("codec: EVENTBUS_NO_EXTENSIONS=1, pure Python")
        return
    # (this file too: its compiler flags are part of the build)
    newest = max((root / SOURCE).stat().st_mtime, Path(__file__).stat().st_mtime)
    if built and built[0].stat().st_mtime >= newest:
        print(f"codec: {built[0].relative_to(root)} is up to date")
        return
    try:
        path = build_extension(root)
    except Exception as exc:
        for path in built:
            path.unlink(missing_ok=True)
        print(f"codec not compiled ({type(exc).__name__}: {exc}); pure Python", file=sys.stderr)
        return
    print(f"codec: compiled {path.relative_to(root)}")


if __name__ == "__main__":
    main()
