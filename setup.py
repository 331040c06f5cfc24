"""The package's two C helpers, built as extensions (everything else about the package is in pyproject.toml).

A file of its own because the GStreamer flags come from ``pkg-config`` at build time, and pyproject.toml cannot
run it: the include paths differ by distribution and architecture (Debian's multiarch glib, Jetson's aarch64).

Both are plain C shared objects loaded with ctypes (:mod:`pyinfer.meta._roi_native`, :mod:`pyinfer.track._native`),
never imported: they have no ``PyInit_*`` function and use no Python C API, and the loaders find them under the
name setuptools gives them (``roi_native.cpython-311-x86_64-linux-gnu.so``). ``pip install -e .`` builds them in
place beside their sources, ``pip wheel .`` into the wheel. Both are optional at run time (the loaders fall back to
the ctypes and NumPy paths), so a build where a compiler or GStreamer's development files are missing warns and
leaves them out rather than failing the install; ``pyinfer doctor`` then says they are not built.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from setuptools import Extension, setup


def _pkg_config(package: str) -> tuple[list[str], list[str]] | None:
    """(compile flags, link flags) of a pkg-config package, or None where pkg-config or the package is missing."""
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", package], capture_output=True, text=True, check=True)
        libs = subprocess.run(["pkg-config", "--libs", package], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        print(f"pyinfer: pkg-config {package} failed ({str(detail).strip()}): roi_native left out", file=sys.stderr)
        return None
    return shlex.split(cflags.stdout), shlex.split(libs.stdout)


def _extensions() -> list[Extension]:
    # -ffp-contract=off: no fused multiply-add, so the C tracker's arithmetic is NumPy's, bit for bit.
    exts = [
        Extension(
            "pyinfer.track.track_native", ["src/pyinfer/track/track_native.c"], libraries=["m"], optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-ffp-contract=off"],
        ),
    ]  # fmt: skip
    gst = _pkg_config("gstreamer-video-1.0")
    if gst is not None:
        cflags, libs = gst
        exts.append(
            Extension(
                "pyinfer.meta.roi_native", ["src/pyinfer/meta/roi_native.c"], optional=True,
                extra_compile_args=["-O2", "-Wall", *cflags], extra_link_args=libs,
            )
        )  # fmt: skip
    return exts


setup(ext_modules=_extensions())
