"""Builds the optional C kernels (actstats/_kernels.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the install goes on and actstats uses its NumPy code
for the same passes (the same numbers up to the last bits of the sums, and slower).
"""
import sys

from setuptools import Extension, setup

# -fno-trapping-math lets the compiler vectorize loops that select between computed values; the
# kernels never rely on floating-point traps (NumPy's own loops run with them ignored here too)
args = [] if sys.platform == "win32" else ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fvisibility=hidden"]
setup(ext_modules=[Extension("actstats._kernels", ["actstats/_kernels.c"], extra_compile_args=args,
                             optional=True)])
