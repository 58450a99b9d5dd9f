// A CPU emulation of the parts of the CUDA execution model that augengine's kernels use, so the
// kernels in cuda/*.cu can be run and checked against the NumPy references on machines without a
// GPU (CI). Not a general CUDA runtime: no streams, no dynamic shared memory, one device.
//
// Why hand-written: no maintained CUDA-C-on-CPU runtime is installable from the package registries
// (HIP-CPU is header-only but not packaged; Numba's simulator runs Python kernels, not CUDA C).
//
// Model. Each CUDA thread of a block is a fiber with its own stack; one OS thread runs them.
// makecontext starts a fiber on its stack; later switches use _setjmp/_longjmp, which unlike
// swapcontext make no signal-mask system call (build with -U_FORTIFY_SOURCE: the fortified
// longjmp refuses to jump between stacks). A fiber runs until it reaches a barrier (__syncthreads, or a warp collective for the fibers
// of one warp), then the scheduler picks the next runnable fiber. Fibers are resumed in a seeded
// random order and blocks run in a seeded random order, so a missing __syncthreads or an
// inter-block dependency changes the result between seeds instead of hiding behind a fixed order.
// Blocks run one at a time, so `__shared__` is plain static storage reused block after block.
// Errors CUDA leaves undefined (a barrier some threads never reach, a warp collective with a
// partial mask or an exited lane, a launch beyond the hardware limits) stop the launch with a
// message instead.
//
// Floating point: compile with -ffp-contract=off, which matches the kernels' --fmad=false; sqrt
// and division are correctly rounded on both sides; log10 may differ by an ulp (the parity tests'
// tolerances allow for that). EMU_FTZ=1 (CuPy compiles every kernel with -ftz=true) flushes
// float denormals to zero, inputs and results, through the x86 MXCSR FTZ and DAZ bits; those
// flush double denormals as well, which CUDA keeps, so a double below 2.2e-308 differs.
#pragma once

#ifndef EMU_FTZ
#define EMU_FTZ 0
#endif

#include <setjmp.h>
#include <ucontext.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct float2 {
    float x, y;
};
struct double2 {
    double x, y;
};

using std::fmax;
using std::log10;
using std::max;
using std::min;
using std::rint;
using std::sqrt;

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

enum class Wait { running, block, warp, done };

struct Fiber {
    ucontext_t context;
    jmp_buf resume;
    bool started = false;
    std::vector<char> stack;
    Wait wait = Wait::running;
    dim3 index;
    int linear = 0;
};

struct State {
    ucontext_t scheduler;
    jmp_buf back;
    std::vector<Fiber> fibers;
    int current = -1;
    void (*body)(void*) = nullptr;
    void* closure = nullptr;
    // Two 8-byte slots per thread for warp collectives, used alternately: a lane can only
    // rewrite a slot after the whole warp has passed the collective that follows its reads.
    std::vector<std::uint64_t> lanes[2];
    std::vector<unsigned> collectives;  // per thread, count of collectives it has entered
    std::string error;
};

inline State state;

inline void fail(const std::string& message)
{
    if (state.error.empty()) state.error = message;
}

// Park the running fiber at a barrier of kind `wait` and return to the scheduler.
inline void park(Wait wait)
{
    Fiber& fiber = state.fibers[state.current];
    fiber.wait = wait;
    if (!_setjmp(fiber.resume)) _longjmp(state.back, 1);
}

inline void fiber_entry()
{
    state.body(state.closure);
    state.fibers[state.current].wait = Wait::done;
    _longjmp(state.back, 1);
}

// Run one block to completion: every fiber from the top of the kernel, barriers honoured.
inline bool run_block(std::mt19937_64& rng, std::size_t stack_bytes)
{
    const int threads = static_cast<int>(state.fibers.size());
    for (Fiber& fiber : state.fibers) {
        fiber.wait = Wait::running;
        fiber.started = false;
        getcontext(&fiber.context);
        fiber.stack.resize(stack_bytes);
        fiber.context.uc_stack.ss_sp = fiber.stack.data();
        fiber.context.uc_stack.ss_size = fiber.stack.size();
        makecontext(&fiber.context, fiber_entry, 0);
    }
    std::vector<int> order(threads);
    for (int i = 0; i < threads; ++i) order[i] = i;
    const int warps = (threads + 31) / 32;
    while (true) {
        std::shuffle(order.begin(), order.end(), rng);
        for (int i : order) {
            if (state.fibers[i].wait != Wait::running) continue;
            state.current = i;
            threadIdx = state.fibers[i].index;
            Fiber& fiber = state.fibers[i];
            if (!_setjmp(state.back)) {
                if (fiber.started) _longjmp(fiber.resume, 1);
                fiber.started = true;
                swapcontext(&state.scheduler, &fiber.context);
            }
            if (!state.error.empty()) return false;
        }
        // Every fiber is parked or done: release a warp whose lanes all wait at a collective,
        // else the block if every thread waits at __syncthreads.
        bool released = false;
        int at_block = 0, done = 0;
        for (int w = 0; w < warps; ++w) {
            const int first = w * 32, last = std::min(threads, first + 32);
            int at_warp = 0;
            for (int i = first; i < last; ++i) at_warp += state.fibers[i].wait == Wait::warp;
            if (at_warp == 0) continue;
            if (at_warp != last - first) {
                for (int i = first; i < last; ++i) {
                    if (state.fibers[i].wait == Wait::done) {
                        fail("warp collective with an exited lane in warp " + std::to_string(w));
                        return false;
                    }
                }
                continue;  // some lanes are still at __syncthreads: not a deadlock yet
            }
            for (int i = first; i < last; ++i) state.fibers[i].wait = Wait::running;
            released = true;
        }
        if (released) continue;
        for (const Fiber& fiber : state.fibers) {
            at_block += fiber.wait == Wait::block;
            done += fiber.wait == Wait::done;
        }
        if (done == threads) return true;
        if (at_block == threads) {
            for (Fiber& fiber : state.fibers) fiber.wait = Wait::running;
            continue;
        }
        fail("deadlock: " + std::to_string(at_block) + " of " + std::to_string(threads) +
             " threads wait at __syncthreads, " + std::to_string(done) +
             " have exited (a barrier not reached by every thread of the block)");
        return false;
    }
}

template <typename F>
void call_closure(void* closure)
{
    (*static_cast<F*>(closure))();
}

// MXCSR for the launch. Set before run_block's getcontext, so every fiber's saved context carries
// it; restored when the launch ends, so the host code (NumPy) keeps its denormals.
struct Denormals {
    unsigned saved = _mm_getcsr();
    Denormals() { if (EMU_FTZ) _mm_setcsr(saved | 0x8040u); }  // FTZ | DAZ
    ~Denormals() { _mm_setcsr(saved); }
};

// What a launch returns: the driver refuses the configuration at the launch call (CUDA reports
// that synchronously), or the kernel fails while running (CUDA reports that asynchronously).
enum Status { ok = 0, invalid_launch = 1, kernel_fault = 2 };

// Launch `kernel` over grid x block; a Status, with state.error saying why when not ok.
template <typename F>
int run_grid(F body, const unsigned* grid, const unsigned* block, unsigned long long seed)
{
    state.error.clear();
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64) {
        fail("invalid block (" + std::to_string(block[0]) + ", " + std::to_string(block[1]) +
             ", " + std::to_string(block[2]) + "): at most 1024 threads, z <= 64");
        return invalid_launch;
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 2147483647u ||
        grid[1] > 65535 || grid[2] > 65535) {
        fail("invalid grid (" + std::to_string(grid[0]) + ", " + std::to_string(grid[1]) + ", " +
             std::to_string(grid[2]) + "): x <= 2^31 - 1, y and z <= 65535, none 0");
        return invalid_launch;
    }
    state.fibers.assign(threads, Fiber{});
    state.lanes[0].assign(threads, 0);
    state.lanes[1].assign(threads, 0);
    state.collectives.assign(threads, 0);
    for (unsigned z = 0, i = 0; z < block[2]; ++z)
        for (unsigned y = 0; y < block[1]; ++y)
            for (unsigned x = 0; x < block[0]; ++x, ++i) {
                state.fibers[i].index = {x, y, z};
                state.fibers[i].linear = static_cast<int>(i);
            }
    state.body = &call_closure<F>;
    state.closure = &body;

    const Denormals denormals;
    std::mt19937_64 rng(seed);
    const unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    std::vector<unsigned long long> order(blocks);
    for (unsigned long long b = 0; b < blocks; ++b) order[b] = b;
    std::shuffle(order.begin(), order.end(), rng);
    for (unsigned long long b : order) {
        blockIdx = {unsigned(b % grid[0]), unsigned(b / grid[0] % grid[1]),
                    unsigned(b / grid[0] / grid[1])};
        if (!run_block(rng, 64 * 1024)) return kernel_fault;
    }
    return ok;
}

template <typename... A, std::size_t... I>
int launch_unpacked(void (*kernel)(A...), const unsigned* grid, const unsigned* block,
                    void** args, unsigned long long seed, std::index_sequence<I...>)
{
    std::tuple<std::decay_t<A>...> values{*static_cast<std::decay_t<A>*>(args[I])...};
    return run_grid([&] { std::apply(kernel, values); }, grid, block, seed);
}

// CUDA's launch convention: args[i] points at the value of the kernel's i-th parameter.
template <typename... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** args,
           unsigned long long seed)
{
    return launch_unpacked(kernel, grid, block, args, seed, std::index_sequence_for<A...>{});
}

inline int lane() { return state.fibers[state.current].linear % 32; }

inline void check_full_mask(unsigned mask, const char* what)
{
    const int threads = static_cast<int>(state.fibers.size());
    const int first = state.fibers[state.current].linear / 32 * 32;
    if (mask != 0xffffffffu || threads - first < 32)
        fail(std::string(what) + ": only full warps with mask 0xffffffff are emulated");
}

// Warp collective: every lane publishes `value` and waits for the warp; then `read` sees the 32
// slots the warp published.
template <typename T, typename R>
auto collective(T value, const char* what, unsigned mask, R read)
{
    static_assert(sizeof(T) <= 8, "warp collectives on at most 8-byte values");
    check_full_mask(mask, what);
    const int me = state.fibers[state.current].linear;
    std::vector<std::uint64_t>& slots = state.lanes[state.collectives[me]++ & 1];
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    slots[me] = bits;
    park(Wait::warp);
    return read(&slots[me - lane()]);
}

template <typename T>
T lane_value(const std::uint64_t* slots, int source)
{
    T value;
    std::memcpy(&value, &slots[source], sizeof(T));
    return value;
}

}  // namespace emu

inline void __syncthreads() { emu::park(emu::Wait::block); }

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned offset)
{
    const int source = emu::lane() + (int)offset;  // beyond the warp: the lane keeps its value
    return emu::collective(value, "__shfl_down_sync", mask, [&](const std::uint64_t* slots) {
        return source < 32 ? emu::lane_value<T>(slots, source) : value;
    });
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int source)
{
    return emu::collective(value, "__shfl_sync", mask, [&](const std::uint64_t* slots) {
        return emu::lane_value<T>(slots, source & 31);
    });
}

inline int __all_sync(unsigned mask, int predicate)
{
    return emu::collective(predicate != 0, "__all_sync", mask, [](const std::uint64_t* slots) {
        int all = 1;
        for (int l = 0; l < 32; ++l) all &= emu::lane_value<bool>(slots, l) ? 1 : 0;
        return all;
    });
}

// Single OS thread: a plain read-modify-write is atomic.
template <typename T>
T atomicMax(T* address, T value)
{
    const T old = *address;
    if (value > old) *address = value;
    return old;
}

inline unsigned int __float_as_uint(float value)
{
    unsigned int bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline long long __double_as_longlong(double value)
{
    long long bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}
