"""Curation code location.

Importing it first points faiss's bundled OpenBLAS at this CPU's fastest safe kernels
(resources.blas): OpenBLAS reads that choice only when faiss is first loaded, so it must happen
before any module here imports faiss.
"""

from resources.blas import prepare_faiss_blas as _prepare_faiss_blas

_prepare_faiss_blas()
