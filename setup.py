"""The package's C helpers, built as extensions (everything else about the package is in pyproject.toml).

A file of its own because the GStreamer flags come from ``pkg-config`` at build time, and pyproject.toml cannot
run it: the include paths differ by distribution and architecture (Debian's multiarch glib, Jetson's aarch64).

All are plain C shared objects loaded with ctypes (:mod:`pyinfer.meta._roi_native`, :mod:`pyinfer.track._native`,
:mod:`pyinfer.meta._analytics_native`), never imported: they have no ``PyInit_*`` function and use no Python C
API, and the loaders find them under the name setuptools gives them (``roi_native.cpython-311-x86_64-linux-gnu.so``). ``pip install -e .`` builds them in
place beside their sources, ``pip wheel .`` into the wheel. All are optional at run time (the loaders fall back to
the ctypes and NumPy paths), so a build where a compiler or GStreamer's development files are missing warns and
leaves them out rather than failing the install; ``pyinfer doctor`` then says they are not built.
``analytics_native`` is built only where pkg-config knows ``gstreamer-analytics-1.0`` (GStreamer >= 1.24, with
libgstreamer-plugins-bad1.0-dev): elsewhere there is no GstAnalytics to read, and it is left out quietly.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from setuptools import Extension, setup


def _pkg_config(package: str, helper: str, *, quiet: bool = False) -> tuple[list[str], list[str]] | None:
    """(compile flags, link flags) of a pkg-config package, or None where pkg-config or the package is missing
    (said on stderr unless ``quiet``: then ``helper`` is left out)."""
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", package], capture_output=True, text=True, check=True)
        libs = subprocess.run(["pkg-config", "--libs", package], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        if not quiet:
            detail = getattr(exc, "stderr", "") or exc
            print(f"pyinfer: pkg-config {package} failed ({str(detail).strip()}): {helper} left out", file=sys.stderr)
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
    gst = _pkg_config("gstreamer-video-1.0", "roi_native")
    if gst is not None:
        cflags, libs = gst
        exts.append(
            Extension(
                "pyinfer.meta.roi_native", ["src/pyinfer/meta/roi_native.c"], optional=True,
                extra_compile_args=["-O2", "-Wall", *cflags], extra_link_args=libs,
            )
        )  # fmt: skip
    # GStreamer >= 1.24 only; -ffp-contract=off: the oriented boxes' arithmetic is Python's, bit for bit.
    analytics = _pkg_config("gstreamer-analytics-1.0", "analytics_native", quiet=True)
    if analytics is not None:
        cflags, libs = analytics
        exts.append(
            Extension(
                "pyinfer.meta.analytics_native", ["src/pyinfer/meta/analytics_native.c"], optional=True,
                extra_compile_args=["-O2", "-Wall", "-ffp-contract=off", *cflags], extra_link_args=[*libs, "-lm"],
            )
        )  # fmt: skip
    return exts


setup(ext_modules=_extensions())
