// B-mode reconstruction on the GPU: envelope (FFT Hilbert transform) and log compression.
//
// The host side (augengine/ops/_reconstruction_cuda.py) views the RF as (P, n, Q): P leading
// positions, n samples along the time axis, Q trailing positions (Q = 1 when time is the last
// axis). Pipeline, with cuFFT doing both transforms through CuPy:
//   rf_to_lines          int16/float RF -> float lines (P*Q, n), converted and transposed in one
//                        pass so every FFT runs over contiguous samples (skipped when Q == 1)
//   cuFFT R2C            X = RFFT(x), unscaled
//   hilbert_spectrum     X <- -j X / n, DC and Nyquist bins zeroed, in place (one pass)
//   cuFFT C2R            H{x} = IRFFT(X), unscaled (the 1/n is already applied)
//   analytic_magnitude_* A = sqrt(x^2 + H{x}^2), transposed back to the RF layout, with an
//                        optional per-frame maximum (block reduction + one atomicMax per block)
//   log_compress_u8      g = rint(clip(255 + (20*255/DR) (log10 A - log10 A_max), 0, 255))
//   compress_envelope_u8 the same mapping for P outputs at once, each a (frame, DR) pair read
//                        from a table, log10 A_max taken in the kernel from the frame's peak
//
// The module is compiled with --fmad=false and evaluates each expression in the same order as
// augengine/ops/reconstruction.py, so only the FFT and log10 implementations differ from NumPy.
//
// Transposing kernels: block (32, 8), a 32x32 tile per block, grid (ceil(Q/32), ceil(n/32),
// min(P, 65535)) with a loop over P. Elementwise kernels: 1-D grid of 256-thread blocks;
// compress_envelope_u8: 256-thread blocks, grid (blocks over one frame, min(outputs, 65535)).

#define TILE 32
#define TILE_ROWS 8
#define ITEMS 8  // elements per thread per pass in analytic_magnitude_lines

template <typename T> struct Complex;
template <> struct Complex<float> { typedef float2 type; };
template <> struct Complex<double> { typedef double2 type; };

// Non-negative IEEE floats order like their bit patterns read as unsigned integers, so a
// per-frame maximum of A >= 0 is an integer atomicMax. NaN patterns sort above +Inf, so a NaN
// envelope shows up as a non-finite maximum on the host.
template <typename T> struct Bits;
template <> struct Bits<float> {
    typedef unsigned int type;
    static __device__ __forceinline__ type of(float v) { return __float_as_uint(v); }
};
template <> struct Bits<double> {
    typedef unsigned long long type;
    static __device__ __forceinline__ type of(double v)
    {
        return (unsigned long long)__double_as_longlong(v);
    }
};

// Merge (value, frame) of every thread of the block into frame_max[frame]; frame < 0 marks a
// thread with nothing to contribute. Warps whose threads all hold the same frame reduce with
// shuffles; thread 0 then issues one atomic per run of equal frames. Every thread of the block
// must call this (it synchronises).
template <typename B>
__device__ void frame_max_reduce(B value, long long frame, B* __restrict__ frame_max)
{
    __shared__ B warp_value[32];
    __shared__ long long warp_frame[32];
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warps = (blockDim.x * blockDim.y + 31) >> 5;
    const long long first = __shfl_sync(0xffffffffu, frame, 0);
    if (__all_sync(0xffffffffu, frame == first)) {
        for (int offset = 16; offset > 0; offset >>= 1) {
            value = max(value, __shfl_down_sync(0xffffffffu, value, offset));
        }
        if (lane == 0) {
            warp_value[warp] = value;
            warp_frame[warp] = first;
        }
    } else {
        if (frame >= 0) atomicMax(frame_max + frame, value);
        if (lane == 0) warp_frame[warp] = -1;
    }
    __syncthreads();
    if (tid == 0) {
        long long current = -1;
        B best = 0;
        for (int w = 0; w < warps; ++w) {
            if (warp_frame[w] == current) {
                best = max(best, warp_value[w]);
                continue;
            }
            if (current >= 0) atomicMax(frame_max + current, best);
            current = warp_frame[w];
            best = warp_value[w];
        }
        if (current >= 0) atomicMax(frame_max + current, best);
    }
    __syncthreads();  // warp_value/warp_frame are reused by the caller's next pass
}

// Fold one element into a thread's running (value, frame); an element of another frame (only
// where a thread's elements straddle a frame boundary) goes straight to global memory.
template <typename B>
__device__ __forceinline__ void fold_max(B bits, long long frame, B& value, long long& mine,
                                         B* __restrict__ frame_max)
{
    if (mine < 0) {
        mine = frame;
        value = bits;
    } else if (frame == mine) {
        value = max(value, bits);
    } else {
        atomicMax(frame_max + frame, bits);
    }
}

// (P, n, Q) RF -> (P, Q, n) lines, converted to T.
template <typename TIn, typename T>
__global__ void rf_to_lines(const TIn* __restrict__ rf, T* __restrict__ lines,
                            long long P, int n, int Q)
{
    __shared__ T tile[TILE][TILE + 1];
    const int q0 = blockIdx.x * TILE;
    const int t0 = blockIdx.y * TILE;
    for (long long p = blockIdx.z; p < P; p += gridDim.z) {
        const TIn* src = rf + p * n * Q;
        T* dst = lines + p * n * Q;
        for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
            const int t = t0 + r;
            const int q = q0 + threadIdx.x;
            if (t < n && q < Q) tile[r][threadIdx.x] = (T)src[(long long)t * Q + q];
        }
        __syncthreads();
        for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
            const int q = q0 + r;
            const int t = t0 + threadIdx.x;
            if (q < Q && t < n) dst[(long long)q * n + t] = tile[threadIdx.x][r];
        }
        __syncthreads();
    }
}

// In place on the one-sided spectra (lines, nfreq = n/2 + 1): X <- -j X / n, with the DC and
// (even n) Nyquist bins set to zero, so that the C2R transform yields the Hilbert transform.
// Also zeroes frame_max[0 .. frames) for analytic_magnitude_*'s atomicMax, which runs after it
// on the stream: one launch fewer than a separate memset.
template <typename T>
__global__ void hilbert_spectrum(typename Complex<T>::type* __restrict__ spectrum,
                                 long long total, int nfreq, int n, T inv_n,
                                 typename Bits<T>::type* __restrict__ frame_max, long long frames)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < frames; i += stride)
        frame_max[i] = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int k = (int)(i % nfreq);
        typename Complex<T>::type v = spectrum[i];
        if (k == 0 || 2 * k == n) {
            v.x = T(0);
            v.y = T(0);
        } else {
            const T re = v.x;
            v.x = v.y * inv_n;
            v.y = -re * inv_n;
        }
        spectrum[i] = v;
    }
}

// Q == 1: env = sqrt(x^2 + h^2) elementwise (lines already have the RF layout).
// with_max != 0: fold env into frame_max[i / frame_size].
template <typename T>
__global__ void analytic_magnitude_lines(const T* __restrict__ x, const T* __restrict__ h,
                                         T* __restrict__ env, long long total,
                                         long long frame_size, int with_max,
                                         typename Bits<T>::type* __restrict__ frame_max)
{
    typedef typename Bits<T>::type B;
    const long long span = (long long)blockDim.x * ITEMS;
    for (long long base = (long long)blockIdx.x * span; base < total;
         base += (long long)gridDim.x * span) {
        B value = 0;
        long long mine = -1;
        for (int item = 0; item < ITEMS; ++item) {
            const long long i = base + item * blockDim.x + threadIdx.x;
            if (i < total) {
                const T a = sqrt(h[i] * h[i] + x[i] * x[i]);
                env[i] = a;
                if (with_max) fold_max(Bits<T>::of(a), i / frame_size, value, mine, frame_max);
            }
        }
        if (with_max) frame_max_reduce(value, mine, frame_max);
    }
}

// Q > 1: lines (P, Q, n) -> env (P, n, Q), env = sqrt(x^2 + h^2), same tiling as rf_to_lines.
template <typename T>
__global__ void analytic_magnitude_transposed(const T* __restrict__ x, const T* __restrict__ h,
                                              T* __restrict__ env, long long P, int n, int Q,
                                              long long frame_size, int with_max,
                                              typename Bits<T>::type* __restrict__ frame_max)
{
    typedef typename Bits<T>::type B;
    __shared__ T tile[TILE][TILE + 1];
    const int t0 = blockIdx.y * TILE;
    const int q0 = blockIdx.x * TILE;
    for (long long p = blockIdx.z; p < P; p += gridDim.z) {
        const long long offset = p * n * Q;
        for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
            const int q = q0 + r;
            const int t = t0 + threadIdx.x;
            if (q < Q && t < n) {
                const long long i = offset + (long long)q * n + t;
                tile[r][threadIdx.x] = sqrt(h[i] * h[i] + x[i] * x[i]);
            }
        }
        __syncthreads();
        B value = 0;
        long long mine = -1;
        for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
            const int t = t0 + r;
            const int q = q0 + threadIdx.x;
            if (t < n && q < Q) {
                const long long o = offset + (long long)t * Q + q;
                const T a = tile[threadIdx.x][r];
                env[o] = a;
                if (with_max) fold_max(Bits<T>::of(a), o / frame_size, value, mine, frame_max);
            }
        }
        if (with_max) {
            frame_max_reduce(value, mine, frame_max);
        } else {
            __syncthreads();
        }
    }
}

// g = rint(clip(255 + scale (log10 A - log_max[frame]), 0, 255)) as uint8, scale = 20*255/DR.
// A = 0 gives -inf and maps to 0.
template <typename T>
__global__ void log_compress_u8(const T* __restrict__ env, long long total, long long frame_size,
                                const T* __restrict__ log_max, T scale,
                                unsigned char* __restrict__ out)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        T g = log10(env[i]);
        g = g - log_max[i / frame_size];
        g = g * scale;
        g = g + T(255);
        g = g < T(0) ? T(0) : (g > T(255) ? T(255) : g);
        out[i] = (unsigned char)rint(g);
    }
}

// One output of compress_envelope_u8: the frame it maps and its scale 20*255/DR in double (the
// host's float64 value; the kernel rounds it to T, as the host rounds a scalar argument).
struct CompressEntry {
    long long frame;
    double scale;
};

// out[p] = log_compress_u8 of env[table[p].frame] against log10(peaks[table[p].frame]) with
// scale table[p].scale, for the P outputs p of a (P, frame_size) uint8 array. env is
// (frames, frame_size), peaks (frames,). Thread 0 of a block takes the log10 of the peak once per
// output, in T, as cupy.log10(peaks) did before the mapping launch (one log10 per block and
// output, not one more per pixel: the per-pixel log10 is most of this kernel's time); the
// expression order is log_compress_u8's, so an output equals log_compress_u8 with that log_max
// bit for bit. Every thread of a block runs the same outputs, so the barriers are uniform.
template <typename T>
__global__ void compress_envelope_u8(const T* __restrict__ env, const T* __restrict__ peaks,
                                     long long frame_size, const CompressEntry* __restrict__ table,
                                     long long P, unsigned char* __restrict__ out)
{
    __shared__ T shared_log_max;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long p = blockIdx.y; p < P; p += gridDim.y) {
        const long long frame = table[p].frame;
        const T scale = (T)table[p].scale;
        if (threadIdx.x == 0) shared_log_max = log10(peaks[frame]);
        __syncthreads();
        const T log_max = shared_log_max;
        __syncthreads();  // read by all before thread 0 writes the next output's
        const T* src = env + frame * frame_size;
        unsigned char* dst = out + p * frame_size;
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < frame_size;
             i += stride) {
            T g = log10(src[i]);
            g = g - log_max;
            g = g * scale;
            g = g + T(255);
            g = g < T(0) ? T(0) : (g > T(255) ? T(255) : g);
            dst[i] = (unsigned char)rint(g);
        }
    }
}
