"""Compile flags for every numba kernel in one place."""

# cache=True: a second process loads compiled kernels from NUMBA_CACHE_DIR (or
# __pycache__) instead of compiling again, so replays start in well under 2 s.
JIT_OPTIONS = {"cache": True, "nogil": True}
