"""The ragstack backend (FastAPI)."""

import os
import sys

# One BLAS thread, set before numpy loads. Embedded Qdrant computes distances with numpy while
# the event loop spawns parser processes; under uvloop a spawn is a fork(), and OpenBLAS's fork
# handler tears down its thread pool even while another thread is inside a multi-threaded
# gemv, which then never returns (found by benchmarks/soak.py: the backend hung for good
# holding the store lock). Single-threaded BLAS has no pool to tear down; the backend gains
# nothing from BLAS threads anyway (its vector math is small, and it runs beside the ml-api).
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
