"""Run the CUDA kernels on the CPU, for tests on machines without a GPU.

The ``.cu`` sources are compiled as C++20 with g++ against a small shim: every CUDA thread of a block
is an OS thread, blocks run one after another (so ``__shared__`` is a function-static), barriers and
warp intrinsics (ballot, match_any, shuffles) exchange values through per-warp slots, and global
atomics are ``std::atomic_ref``. :class:`EmulatedBackend` plugs into :class:`~.launcher.CudaSteps` in
place of pycuda, so the real launch sequences run on CPU tensors (``data_ptr()`` is a host address).

What this checks: the kernels' logic, indexing, barriers placed where every thread reaches them
(a divergent ``__syncthreads`` times out with an error), and the launcher. What it cannot: races
between blocks (they never overlap here), warp-lockstep assumptions, memory-model subtleties, speed.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from magnet_triton.kernels.build import KERNEL_SOURCES, source_dir
from magnet_triton.kernels.launcher import KERNEL_SIGNATURES, Grid

SHIM = r"""
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct float4 { float x, y, z, w; };
struct uchar4 { unsigned char x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace emu {
struct Timeout : std::runtime_error { using std::runtime_error::runtime_error; };

// A reusable barrier that gives up after 10 s, so a barrier not every thread reaches fails, not hangs.
class Barrier {
  public:
    explicit Barrier(unsigned n) : n_(n) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        const unsigned long long gen = gen_;
        if (++count_ == n_) { count_ = 0; ++gen_; cv_.notify_all(); return; }
        if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return gen_ != gen; }))
            throw Timeout("barrier timeout: __syncthreads or a warp intrinsic not reached by every thread");
    }
  private:
    std::mutex m_; std::condition_variable cv_; unsigned n_, count_ = 0; unsigned long long gen_ = 0;
};

struct Warp { Barrier bar{32}; unsigned long long slot[32]; };
struct Launch {
    dim3 grid, block;
    std::vector<std::unique_ptr<Warp>> warps;
    std::unique_ptr<Barrier> block_bar;
    std::vector<unsigned char> dyn_shared;
};
inline Launch* current = nullptr;
inline thread_local dim3 tid, bid;
inline thread_local unsigned linear = 0;
inline std::string last_error;

inline int run(dim3 grid, dim3 block, unsigned long long shared, const std::function<void()>& body) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n % 32 != 0 || grid.x * grid.y * grid.z == 0) { last_error = "bad launch shape"; return 1; }
    Launch L; L.grid = grid; L.block = block;
    for (unsigned w = 0; w < n / 32; ++w) L.warps.emplace_back(new Warp());
    L.block_bar.reset(new Barrier(n));
    L.dyn_shared.assign(shared, 0xAB);  // poisoned, as uninitialised shared memory may be
    current = &L;
    std::mutex err_m; std::string err;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n; ++t) threads.emplace_back([&, t] {
        linear = t; tid = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        try {
            for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y)
                for (unsigned x = 0; x < grid.x; ++x) { bid = {x, y, z}; body(); L.block_bar->wait(); }
        } catch (const std::exception& e) { std::lock_guard<std::mutex> g(err_m); if (err.empty()) err = e.what(); }
    });
    for (auto& th : threads) th.join();
    current = nullptr;
    if (!err.empty()) { last_error = err; return 1; }
    return 0;
}

struct Arg {
    unsigned long long v;
    template <class T> operator T*() const { return reinterpret_cast<T*>(v); }
    operator int() const { return (int)(unsigned)v; }
};

inline Warp& warp() { return *current->warps[linear / 32]; }
template <class F> inline unsigned long long exchange(unsigned long long mine, F combine) {
    Warp& w = warp(); w.slot[linear & 31] = mine; w.bar.wait();
    const unsigned long long r = combine(w.slot); w.bar.wait(); return r;
}
}  // namespace emu

#define threadIdx (emu::tid)
#define blockIdx (emu::bid)
#define blockDim (emu::current->block)
#define gridDim (emu::current->grid)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __syncthreads() { emu::current->block_bar->wait(); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return mask & (unsigned)emu::exchange(pred != 0, [](const unsigned long long* s) {
        unsigned r = 0; for (int i = 0; i < 32; ++i) if (s[i]) r |= 1u << i; return (unsigned long long)r; });
}
inline unsigned __match_any_sync(unsigned mask, unsigned v) {
    return mask & (unsigned)emu::exchange(v, [v](const unsigned long long* s) {
        unsigned r = 0; for (int i = 0; i < 32; ++i) if (s[i] == v) r |= 1u << i; return (unsigned long long)r; });
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 64 bits");
    unsigned long long bits = 0; std::memcpy(&bits, &v, sizeof(T));
    const unsigned lane = emu::linear & 31, src = lane >= delta ? lane - delta : lane;
    bits = emu::exchange(bits, [src](const unsigned long long* s) { return s[src]; });
    T out; std::memcpy(&out, &bits, sizeof(T)); return out;
}
"""

_KERNEL_RE = re.compile(r'extern "C" __global__ void (\w+)\(')
_DYN_SHARED_RE = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")


def emulator_source(name: str) -> str:
    """One translation unit: the shim, the ``.cu`` source adapted, and a C launcher per kernel (and,
    with the first source, the error accessor)."""
    text = (source_dir() / name).read_text()
    text = _DYN_SHARED_RE.sub(r"\1* \2 = reinterpret_cast<\1*>(emu::current->dyn_shared.data());", text)
    lines = ['#include "shim.hpp"', text]
    if name == KERNEL_SOURCES[0]:
        lines.append('extern "C" const char* emu_last_error() { return emu::last_error.c_str(); }')
    for kernel in _KERNEL_RE.findall(text):
        args = ", ".join(f"emu::Arg{{a[{i}]}}" for i in range(len(KERNEL_SIGNATURES[kernel])))
        lines.append(
            f'extern "C" int emu_launch_{kernel}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,'
            f" unsigned bz, unsigned long long shared, const unsigned long long* a) {{\n"
            f"    return emu::run({{gx, gy, gz}}, {{bx, by, bz}}, shared, [&] {{ {kernel}({args}); }});\n}}"
        )
    return "\n".join(lines) + "\n"


def find_cxx() -> str | None:
    """A C++20 compiler with ``<atomic_ref>`` support (g++ 10 or newer), or None."""
    return os.environ.get("CXX") or shutil.which("g++")


def build_emulator(out_dir: str | os.PathLike[str], cxx: str = "g++") -> Path:
    """Compile the kernels for the CPU into ``out_dir/libmagnet_kernels_emu.so``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shim.hpp").write_text(SHIM)
    units = []
    for name in KERNEL_SOURCES:
        unit = out / (Path(name).stem + "_emu.cpp")
        unit.write_text(emulator_source(name))
        units.append(str(unit))
    library = out / "libmagnet_kernels_emu.so"
    # -ffp-contract=off: no FMA, like the GPU build's -fmad=false, so the values are the twins' bits.
    command = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-ffp-contract=off",
               "-Wno-unknown-pragmas", "-o", str(library), *units]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building the kernel emulator failed:\n{result.stderr}")
    return library


class EmulatedBackend:
    """A :class:`~.launcher.KernelBackend` that runs the kernels in the emulator library, on CPU tensors."""

    def __init__(self, library: str | os.PathLike[str], sm_count: int = 2) -> None:
        self._lib = ctypes.CDLL(str(library))
        self._lib.emu_last_error.restype = ctypes.c_char_p
        self.sm_count = sm_count
        self.launches: list[tuple[str, Grid, Grid]] = []  # for tests that check launch plans

    @contextmanager
    def session(self) -> Iterator[object]:
        yield None

    def launch(
        self,
        name: str,
        grid: Grid,
        block: Grid,
        args: Sequence[int | float],
        stream: object,
        shared_bytes: int = 0,
    ) -> None:
        fmt = KERNEL_SIGNATURES[name]
        if len(fmt) != len(args):
            raise TypeError(f"{name} takes {len(fmt)} arguments, got {len(args)}")
        packed = (ctypes.c_ulonglong * len(args))(*[int(a) & (2**64 - 1) for a in args])
        function = getattr(self._lib, f"emu_launch_{name}")
        self.launches.append((name, tuple(grid), tuple(block)))
        if (
            function(*(ctypes.c_uint(v) for v in (*grid, *block)), ctypes.c_ulonglong(shared_bytes), packed)
            != 0
        ):
            raise RuntimeError(f"{name}: {self._lib.emu_last_error().decode()}")
