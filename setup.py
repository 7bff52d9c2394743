"""setup.py - builds pytransformer's C kernels and Cython bindings.

The portable kernels are compiled with the default flags. Every csrc/*_avx2.c file is compiled
separately with -mavx2 -mfma and selected at run time from CPUID, so one wheel runs on any x86-64
(and the AVX2 units are simply left out where the compiler cannot target them, e.g. on Arm).
OpenMP is detected by compiling a probe; without it the build succeeds serial, with a warning.

Environment switches (build time):
  PYTRANSFORMER_NO_OPENMP=1   build without OpenMP even if the compiler has it
  PYTRANSFORMER_SANITIZE=1    build with AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g
"""
import os
import sys
import tempfile
import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"

# IEEE-exact by default: no fast-math, no FMA contraction of a*b+c behind our back (the kernels
# choose where to fuse, and the determinism contract in csrc/pt_gemm.h depends on it).
BASE_CFLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
AVX2_CFLAGS = ["-mavx2", "-mfma"]


def _env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def _compiler_accepts(compiler, flags, source, link=False):
    """True if `source` compiles (and links, if asked) with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            if link:
                compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:
            return False
    return True


OPENMP_PROBE = """
#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
n += 1;
return n > 0 ? 0 : 1; }
"""

AVX2_PROBE = """
#include <immintrin.h>
int main(void) { __m256 a = _mm256_set1_ps(1.f); a = _mm256_fmadd_ps(a, a, a);
return (int)_mm256_cvtss_f32(a) == 2 ? 0 : 1; }
"""


class BuildExt(build_ext):
    def build_extensions(self):
        compiler = self.compiler
        cflags = list(BASE_CFLAGS)
        ldflags = []
        macros = []
        if _env_flag("PYTRANSFORMER_SANITIZE"):
            cflags = [f for f in cflags if f != "-O3"] + ["-O1", "-g", "-fno-omit-frame-pointer",
                                                          "-fsanitize=address,undefined",
                                                          "-fno-sanitize-recover=undefined"]
            ldflags += ["-fsanitize=address,undefined"]

        if _env_flag("PYTRANSFORMER_NO_OPENMP"):
            print("pytransformer: OpenMP disabled by PYTRANSFORMER_NO_OPENMP; building serial kernels.")
        elif _compiler_accepts(compiler, ["-fopenmp"], OPENMP_PROBE, link=True):
            cflags.append("-fopenmp")
            ldflags.append("-fopenmp")
        else:
            sys.stderr.write(
                "\n" + "=" * 72 + "\n"
                "WARNING: pytransformer could not find OpenMP for this compiler.\n"
                "Building SERIAL kernels: everything works, but only one core is used.\n"
                "Install an OpenMP runtime (e.g. libgomp / libomp) and rebuild for threads.\n"
                + "=" * 72 + "\n\n")

        have_avx2 = _compiler_accepts(compiler, AVX2_CFLAGS, AVX2_PROBE)
        if have_avx2:
            macros.append(("PT_HAVE_AVX2", "1"))
        else:
            print("pytransformer: compiler cannot target AVX2+FMA; building the portable path only.")

        for ext in self.extensions:
            avx2_sources = [s for s in ext.sources if s.endswith("_avx2.c")]
            ext.sources = [s for s in ext.sources if not s.endswith("_avx2.c")]
            ext.extra_compile_args = cflags
            ext.extra_link_args = ldflags
            ext.define_macros = list(ext.define_macros or []) + macros
            if have_avx2 and avx2_sources:
                objects = compiler.compile(
                    avx2_sources, output_dir=self.build_temp, macros=macros,
                    include_dirs=ext.include_dirs, extra_postargs=cflags + AVX2_CFLAGS,
                    depends=ext.depends)
                ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extensions()


c_sources = sorted(glob.glob(os.path.join(CSRC, "*.c")))
headers = sorted(glob.glob(os.path.join(CSRC, "*.h")))

extensions = [
    Extension(
        "pytransformer._kernels",
        sources=["pytransformer/_kernels.pyx"] + c_sources,
        include_dirs=[CSRC, np.get_include()],
        depends=headers + ["pytransformer/_kernels.pxd"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
    cmdclass={"build_ext": BuildExt},
)
