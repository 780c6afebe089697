"""The ragstack backend (FastAPI)."""

import os
import sys

# One BLAS thread, set before numpy loads. Embedded Qdrant computes distances with numpy while
# the event loop spawns parser processes; under uvloop a spawn is a fork(), and OpenBLAS's fork
# handler tears down its thread pool even while another thread is inside a multi-threaded
# gemv, which then never returns (found by benchmarks/soak.py: the backend hung for good
# holding the store lock). Single-threaded BLAS has no pool to tear down; the backend gains
# nothing from BLAS threads anyway (its vector math is small, and it runs beside the ml-api).
# Only OpenBLAS's own variable (numpy's wheels bundle OpenBLAS): processes this one starts
# inherit it, and OMP_NUM_THREADS would also shrink torch's thread pool in an ml-api that
# `ragctl up` starts.
if "numpy" not in sys.modules:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
