"""setup.py - builds pytransformer's C kernels and Cython bindings.

The portable kernels are compiled with the default flags. Every csrc/*_avx2.c file is compiled
separately with -mavx2 -mfma (csrc/*_avx512.c with -mavx512f, csrc/*_vnni.c with -mavx512vnni too)
and selected at run time from
CPUID, so one wheel runs on any x86-64 (and the ISA units are simply left out where the compiler
cannot target them, e.g. on Arm).
OpenMP is detected by compiling a probe; without it the build succeeds serial, with a warning.

Environment switches (build time):
  PYTRANSFORMER_NO_OPENMP=1   build without OpenMP even if the compiler has it
  PYTRANSFORMER_SANITIZE=1    build with AddressSanitizer + UndefinedBehaviorSanitizer, -O1 -g
  PYTRANSFORMER_PORTABLE_ONLY=1  leave out the AVX2/AVX-512 kernels (to test the portable build)
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
AVX512_CFLAGS = ["-mavx512f", "-mavx2", "-mfma"]
# only csrc/*_vnni.c (integer dot products of the output screen), chosen at run time by CPUID
VNNI_CFLAGS = AVX512_CFLAGS + ["-mavx512vnni"]


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

AVX512_PROBE = """
#include <immintrin.h>
int main(void) { __m512 a = _mm512_set1_ps(1.f); a = _mm512_fmadd_ps(a, a, a);
return (int)_mm512_reduce_add_ps(a) == 32 ? 0 : 1; }
"""

VNNI_PROBE = """
#include <immintrin.h>
int main(void) { __m512i a = _mm512_set1_epi32(0x01010101); a = _mm512_dpbusd_epi32(a, a, a);
return _mm_cvtsi128_si32(_mm512_castsi512_si128(a)) == 0x01010105 ? 0 : 1; }
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
        if sys.platform.startswith("linux"):
            # csrc/pt_pool.c: the worker team (pthreads + futex)
            cflags.append("-pthread")
            ldflags.append("-pthread")
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

        have_avx2 = (not _env_flag("PYTRANSFORMER_PORTABLE_ONLY")
                     and _compiler_accepts(compiler, AVX2_CFLAGS, AVX2_PROBE))
        if have_avx2:
            macros.append(("PT_HAVE_AVX2", "1"))
        elif _env_flag("PYTRANSFORMER_PORTABLE_ONLY"):
            print("pytransformer: PYTRANSFORMER_PORTABLE_ONLY set; building the portable path only.")
        else:
            print("pytransformer: compiler cannot target AVX2+FMA; building the portable path only.")

        have_avx512 = have_avx2 and _compiler_accepts(compiler, AVX512_CFLAGS, AVX512_PROBE)
        if have_avx512:
            macros.append(("PT_HAVE_AVX512", "1"))
        have_vnni = have_avx512 and _compiler_accepts(compiler, VNNI_CFLAGS, VNNI_PROBE)
        if have_vnni:
            macros.append(("PT_HAVE_AVX512VNNI", "1"))

        # ISA-specific translation units: built separately with their own flags, linked in, and
        # chosen at run time; everything else is compiled for the baseline of the target.
        isa_units = [("_avx2.c", have_avx2, AVX2_CFLAGS), ("_avx512.c", have_avx512, AVX512_CFLAGS),
                     ("_vnni.c", have_vnni, VNNI_CFLAGS)]
        for ext in self.extensions:
            ext.extra_compile_args = cflags
            ext.extra_link_args = ldflags
            ext.define_macros = list(ext.define_macros or []) + macros
            for suffix, enabled, isa_flags in isa_units:
                if not enabled:
                    continue  # built with the baseline flags: each such file then defines PT_ERR_ISA stubs
                sources = [s for s in ext.sources if s.endswith(suffix)]
                ext.sources = [s for s in ext.sources if not s.endswith(suffix)]
                if sources:
                    objects = compiler.compile(
                        sources, output_dir=self.build_temp, macros=macros,
                        include_dirs=ext.include_dirs, extra_postargs=cflags + isa_flags,
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
