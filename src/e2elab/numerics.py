"""The numeric settings every run trains under, whichever command or API trains it.

A run id promises that one spec gives one result. On a CPU that holds bit for bit only
if nothing outside the spec changes the order of floating-point operations. Such things
are process-wide settings, not spec fields:

- the intra-op thread count (torch's, and BLAS/OpenMP's for numpy and scikit-learn): a
  convolution or a matrix product splits its sums by thread. On end-to-end line-parity
  at k = 2 that alone decides whether a run learns (0.922 with two threads, 0.496 with
  one);
- the default dtype, the float32 precision of matmuls and convolutions (TF32 on GPUs,
  bf16 in oneDNN), oneDNN's and cuDNN's
  algorithm choices, deterministic-algorithm mode, and flushing denormals to zero.

``fixed_numerics`` sets all of them to one value while a run trains and restores them
afterwards, so ``e2elab run``, ``reproduce`` with any executor, ``diagnose snr``, the
Python API and the benchmarks train a spec identically. What cannot be fixed from
inside the process (the CPU's instruction set, the BLAS build, environment variables that
steer kernel choice, library versions) is recorded with every result by ``describe``.
Parallelism comes from running several runs at once (the process pool, Ray), never from
threads inside a run.

The memory layout of convolutions is part of them too (it changes the order of a
convolution's sums): ``conv_layout`` puts every module that trains or is probed on the
CPU in the same layout, channels-last wherever it has 2-d convolutions.

The allocator setting (``allocator.keep_freed_memory``) changes speed only: torch aligns
every CPU tensor to 64 bytes whatever malloc does, so kernels see the same layout.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

# cuBLAS is deterministic only with a fixed workspace; read when cuBLAS first starts.
_CUBLAS_WORKSPACE = ":4096:8"
# Environment variables that change which kernels run, so results can depend on them.
_KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)


@contextmanager
def fixed_numerics() -> Iterator[None]:
    """Train under e2elab's numeric settings; restore the caller's afterwards.

    One intra-op thread for torch and for every BLAS/OpenMP pool, float32 as default
    dtype, full float32 precision (no TF32, no bf16) in every backend, deterministic
    algorithms (warn-only, for the few ops that have none) without their debugging aid of
    filling new memory with NaN (``torch.utils.deterministic.fill_uninitialized_memory``:
    it changes no result of a correct kernel, and cost a quarter of a line-parity step),
    oneDNN on and deterministic, cuDNN deterministic without benchmarking, denormals kept.
    Nested use is fine.
    """
    saved = _current()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    with ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=1))
        try:
            _apply(
                threads=1,
                dtype=torch.float32,
                fp32_precision=("ieee",) * len(_fp32_backends()),
                deterministic=(True, True),
                fill_uninitialized=False,
                mkldnn=(True, True),
                cudnn=(True, False),
            )
            torch.set_flush_denormal(False)
            yield
        finally:
            _apply(**saved)
            # torch has no getter for flush-denormal; off is its default, and it stays off


def _fp32_backends() -> list[Any]:
    """The backends whose float32 precision torch lets trade for speed (TF32 on NVIDIA
    GPUs, bf16 in oneDNN on the CPU: ``set_float32_matmul_precision("medium")`` turns on
    both). Read and set through torch's per-backend API only: mixing it with the legacy
    getters makes torch raise."""
    b = torch.backends
    return [b.mkldnn.matmul, b.mkldnn.conv, b.mkldnn.rnn, b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn]


def _current() -> dict[str, Any]:
    return {
        "threads": torch.get_num_threads(),
        "dtype": torch.get_default_dtype(),
        "fp32_precision": tuple(b.fp32_precision for b in _fp32_backends()),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "fill_uninitialized": torch.utils.deterministic.fill_uninitialized_memory,
        "mkldnn": (torch.backends.mkldnn.enabled, torch.backends.mkldnn.deterministic),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
    }


def _apply(
    threads: int,
    dtype: torch.dtype,
    fp32_precision: tuple[str, ...],
    deterministic: tuple[bool, bool],
    fill_uninitialized: bool,
    mkldnn: tuple[bool, bool],
    cudnn: tuple[bool, bool],
) -> None:
    # always: torch's getter reads OpenMP's count, which threadpoolctl has already set,
    # but only torch's setter also sets MKL's thread-local count (its sgemm splits by it)
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    for backend, precision in zip(_fp32_backends(), fp32_precision, strict=True):
        backend.fp32_precision = precision
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized  # type: ignore[attr-defined]
    torch.backends.mkldnn.enabled, torch.backends.mkldnn.deterministic = mkldnn
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@functools.lru_cache(maxsize=8)
def describe(device: str = "cpu") -> dict[str, Any]:
    """What a result's numbers depend on beyond its spec and ``fixed_numerics``: library
    versions, the CPU's instruction set as torch dispatches it, the BLAS libraries in
    use, and the environment variables that steer kernel choice. Stored with every
    result, never part of its id: the same spec is promised the same result only where
    these agree. Cached per process: none of it changes while the process runs."""
    import numpy
    import scipy
    import sklearn

    from e2elab import __version__

    info: dict[str, Any] = {
        "e2elab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": 1,
        "blas": sorted({f"{p.get('internal_api')} {p.get('version')}" for p in threadpool_info()}),
        "env": {k: os.environ[k] for k in _KERNEL_ENV if k in os.environ},
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def conv_layout(module: nn.Module, device: str | torch.device) -> nn.Module:
    """On the CPU, a module with 2-d convolutions gets its 4-d weights (and buffers)
    channels-last, in place, and is returned. oneDNN then runs the convolutions, and the
    pooling and ReLU kernels after them, on channels-last activations: on line-parity's
    scorer a training step is about 1.3x faster (``benchmarks/throughput.py``). On other
    devices, or without a ``Conv2d``, the module is left as it is. Every path that trains
    or probes a system calls this, so one spec keeps one layout, hence one result."""
    if torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in module.modules()
    ):
        module.to(memory_format=torch.channels_last)
    return module
