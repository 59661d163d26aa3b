"""Build script: maps the repository folders onto the ``eap`` namespace and builds ``_core``.

The folders ``node/``, ``plugins/``, ``_core/`` and ``proto/eap/v1/`` become the import
packages ``eap.node``, ``eap.plugins``, ``eap._core`` and ``eap.v1``.  Cython kernels in
``_core/`` are compiled when Cython and a C compiler are present; set ``EAP_NO_EXT=1`` to
skip them (the package then runs on the pure-Python twins).  ``EAP_CYTHON_TRACE=1`` builds
with line tracing and writes annotated HTML beside the sources.
"""

import os
from pathlib import Path

from setuptools import setup

ROOTS = {
    "eap.node": "node",
    "eap.plugins": "plugins",
    "eap._core": "_core",
    "eap.v1": "proto/eap/v1",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in ROOTS.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            rel = init.parent.relative_to(folder)
            if rel.parts[:1] == ("examples",):  # example plugins are distributions of their own
                continue
            pkg = ".".join([name, *rel.parts]) if rel.parts else name
            packages.append(pkg)
            package_dir[pkg] = str(init.parent)
    return packages, package_dir


def _extensions() -> list:
    if os.environ.get("EAP_NO_EXT") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    from setuptools import Extension

    trace = os.environ.get("EAP_CYTHON_TRACE") == "1"
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    # Bundled C (the SHA-256 header) lives in _core/csrc; every kernel may include it.
    csrc = Path("_core") / "csrc"
    headers = [str(h) for h in sorted(csrc.glob("*.h"))]
    exts = [
        Extension(
            f"eap._core.{pyx.stem}",
            [str(pyx)],
            include_dirs=[str(csrc)],
            # the .pyx too: cythonize swaps it for the generated .c in sources, and an sdist
            # must still carry it (setuptools packs sources and depends)
            depends=[str(pyx), *headers, *(str(p) for p in sorted(Path("_core").glob("*.pxd")))],
            define_macros=macros,
            extra_compile_args=["-O3"],
        )
        for pyx in sorted(Path("_core").glob("*.pyx"))
    ]
    return cythonize(
        exts,
        language_level=3,
        include_path=["_core"],  # .pxd files are cimported by bare name (``from _radix cimport``)
        annotate=trace,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "linetrace": trace,
        },
    )


packages, package_dir = _packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "eap.v1": ["*.proto", "*.pyi"],
        "eap._core": ["*.pyi", "*.pxd"],
        "eap.plugins": ["contracts/*.vy", "contracts/*.json"],
        "eap.node": ["migrations/*.ini", "migrations/*.mako", "data/*"],
    },
    # Generated C, annotation pages and the bundled header are build inputs, not package data.
    exclude_package_data={"eap._core": ["*.c", "*.html", "csrc/*"]},
    ext_modules=_extensions(),
)
