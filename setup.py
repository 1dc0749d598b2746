"""setuptools glue: the cffi extension (pyproject: cffi_modules) plus the
generated CRI stubs and the helper executables, built into the package."""

import pathlib
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import build as pycrio_build  # noqa: E402


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            pycrio_build.generate_cri_stubs(pathlib.Path(self.build_lib) / "pycrio" / "cri")
        else:
            pycrio_build.generate_cri_stubs(pycrio_build.HERE / "pycrio" / "cri")


class BuildExtWithExecutables(build_ext):
    def run(self):
        super().run()
        base = pycrio_build.HERE if (self.inplace or self.editable_mode) else pathlib.Path(self.build_lib)
        pycrio_build.build_executables(base / "pycrio" / "bin")


setup(
    cffi_modules=["build.py:ffibuilder"],  # setuptools refuses this key in pyproject.toml
    cmdclass={"build_py": BuildPyWithStubs, "build_ext": BuildExtWithExecutables},
)
