"""Cap the OpenMP threads that one thread's model calls start, leaving the process alone.

`threadpoolctl` sets the calling thread's OpenMP count, but torch undoes it twice: on a
thread's first call it re-applies its process-wide count (the last `torch.set_num_threads`,
e.g. from a training in the same process), and its statically linked MKL (vector math such
as `exp` and `sigmoid`) keeps a count of its own that `threadpoolctl` cannot see. Either way
a request thread started a second OpenMP team, and once a process holds more OpenMP
threads than cores, libgomp stops spinning between parallel regions in every thread: torch
on the main thread then ran about 1.5x slower (measured on 2 cores).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from pathlib import Path


def limit_this_thread(threads: int) -> None:
    """At most `threads` OpenMP threads for the work this thread starts, torch's included."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.get_num_threads()  # torch's per-thread first-call setup, before the limit
        set_mkl = _mkl_local_setter(str(Path(torch.__file__).parent / "lib"))
        if set_mkl is not None:
            set_mkl(threads)
    threadpool_limits(limits=threads, user_api="openmp")


@functools.cache
def _mkl_local_setter(torch_lib: str) -> Callable[..., int] | None:
    """MKL's per-thread thread count setter inside torch's CPU library, where torch was built
    with MKL (x86 wheels); None elsewhere. `MKL_Set_Num_Threads_Local` is the C function
    (an int by value) that `mkl_set_num_threads_local` names in MKL's header; the lower-case
    symbol torch exports is the Fortran one, which takes a pointer."""
    library = Path(torch_lib) / "libtorch_cpu.so"
    if not library.exists():
        return None
    try:
        setter = getattr(ctypes.CDLL(str(library)), "MKL_Set_Num_Threads_Local", None)
    except OSError:
        return None
    if setter is not None:
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
    return setter
