// SRAD (Yu & Acton 2002) for a batch of images (N, H, W), float or double, row-major.
//
// One fused kernel per iteration (srad_step): a block loads a 32x32 output tile plus its halo
// into shared memory (rows y0-1 .. y0+33, cols x0-1 .. x0+33; clamped indices give the
// replicated border), computes the diffusion coefficient c for the tile and its south/east
// neighbours (33x33), then writes J + D to a second buffer. DRAM traffic is one read and one
// write of J per iteration; halos come from L2.
//
// The arithmetic mirrors augengine/ops/despeckle.py operation by operation, and the module is
// compiled with --fmad=false, so with a fixed q0 the GPU result is bitwise equal to NumPy's.
//
// The q0 estimate (var/mean^2 over a region of interest) stays on the device: srad_step (or
// srad_roi_sums before the first iteration) writes one (sum, sum of squares) pair per block in
// double, and srad_q0sq reduces them per image in a fixed order (deterministic, no atomics).
//
// Launch: grid (ceil(W/32) * N, ceil(H/32)), block (32, 8): blockIdx.x enumerates the column
// tiles of image 0, then of image 1, ... (gridDim.x allows 2^31 - 1 blocks; gridDim.z would cap
// a batch at 65535 images). These sizes are mirrored in augengine/ops/despeckle.py (_TILE,
// _BLOCK); tests/test_cuda_compile.py checks that they agree.

#define SRAD_TILE_X 32
#define SRAD_TILE_Y 32
#define SRAD_BLOCK_X 32
#define SRAD_BLOCK_Y 8
#define SRAD_THREADS (SRAD_BLOCK_X * SRAD_BLOCK_Y)
#define SRAD_Q0SQ_FLOOR 1e-12  // same as despeckle._Q0SQ_FLOOR

template <typename T>
__device__ __forceinline__ T load_clamped(const T* __restrict__ img, int H, int W, int i, int j)
{
    i = min(max(i, 0), H - 1);
    j = min(max(j, 0), W - 1);
    return img[(long long)i * W + j];
}

// Block-wide sums of (s1, s2) over THREADS threads (tid: the thread's index in the block),
// returned to every thread: warp shuffles, then the warps' sums in warp order.
template <int THREADS>
__device__ __forceinline__ void block_sums2(double& s1, double& s2, int tid)
{
    __shared__ double sums[2][THREADS / 32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        s1 += __shfl_down_sync(0xffffffffu, s1, offset);
        s2 += __shfl_down_sync(0xffffffffu, s2, offset);
    }
    if ((tid & 31) == 0) {
        sums[0][tid >> 5] = s1;
        sums[1][tid >> 5] = s2;
    }
    __syncthreads();
    double a = 0.0, b = 0.0;
    for (int w = 0; w < THREADS / 32; ++w) {
        a += sums[0][w];
        b += sums[1][w];
    }
    __syncthreads();  // sums is reused by the next call
    s1 = a;
    s2 = b;
}

// Block-wide sum of (s1, s2) over SRAD_THREADS threads; thread 0 stores them at out[0], out[1].
__device__ __forceinline__ void block_sum2(double s1, double s2, double* __restrict__ out)
{
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    block_sums2<SRAD_THREADS>(s1, s2, tid);
    if (tid == 0) {
        out[0] = s1;
        out[1] = s2;
    }
}

// Differences of pixel (i, j), value j0, to its north, south, west and east neighbours; the
// border is clamped, so across it the difference is exactly zero.
template <typename T>
__device__ __forceinline__ void neighbour_diffs(const T* __restrict__ img, int H, int W, int i,
                                                int j, T j0, T& dn, T& ds, T& dw, T& de)
{
    dn = load_clamped(img, H, W, i - 1, j) - j0;
    ds = load_clamped(img, H, W, i + 1, j) - j0;
    dw = load_clamped(img, H, W, i, j - 1) - j0;
    de = load_clamped(img, H, W, i, j + 1) - j0;
}

__device__ __forceinline__ bool in_roi(int i, int j, int r0, int r1, int c0, int c1)
{
    return i >= r0 && i < r1 && j >= c0 && j < c1;
}

// Position of this block: image n, tile (tx, ty), and its slot among the image's partial sums.
struct TileIndex {
    int n, tx, ty;
    long long slot;  // index of this block's (sum, sum of squares) pair in partials
};

__device__ __forceinline__ TileIndex tile_index(int W)
{
    TileIndex t;
    const int tiles_x = (W + SRAD_TILE_X - 1) / SRAD_TILE_X;
    t.n = blockIdx.x / tiles_x;
    t.tx = blockIdx.x - t.n * tiles_x;
    t.ty = blockIdx.y;
    t.slot = ((long long)t.n * gridDim.y + t.ty) * tiles_x + t.tx;
    return t;
}

// Per-block (sum, sum of squares) of img over the region rows [r0, r1) x cols [c0, c1).
// partials: (N, tiles_y * tiles_x, 2).
template <typename T>
__global__ void __launch_bounds__(SRAD_THREADS)
srad_roi_sums(const T* __restrict__ src, int H, int W, int r0, int r1, int c0, int c1,
              double* __restrict__ partials)
{
    const TileIndex t = tile_index(W);
    const T* img = src + (long long)t.n * H * W;
    const int j = t.tx * SRAD_TILE_X + threadIdx.x;
    double s1 = 0.0, s2 = 0.0;
    for (int r = threadIdx.y; r < SRAD_TILE_Y; r += SRAD_BLOCK_Y) {
        const int i = t.ty * SRAD_TILE_Y + r;
        if (i < H && j < W && in_roi(i, j, r0, r1, c0, c1)) {
            const double v = (double)img[(long long)i * W + j];
            s1 += v;
            s2 += v * v;
        }
    }
    block_sum2(s1, s2, partials + 2 * t.slot);
}

// q0sq[n] = var / mean^2 of image n from its partial sums (count pixels in the region).
extern "C" __global__ void srad_q0sq(const double* __restrict__ partials, int parts,
                                     double count, double* __restrict__ q0sq)
{
    const int n = blockIdx.x;
    const double* p = partials + 2LL * n * parts;
    double s1 = 0.0, s2 = 0.0;
    for (int b = threadIdx.x; b < parts; b += blockDim.x) {
        s1 += p[2 * b];
        s2 += p[2 * b + 1];
    }
    // block_sum2 assumes SRAD_THREADS threads: launch with block (SRAD_THREADS, 1, 1).
    double total[2];
    block_sum2(s1, s2, total);
    if (threadIdx.x == 0) {
        const double mean = total[0] / count;
        const double var = fmax(total[1] / count - mean * mean, 0.0);
        q0sq[n] = var / (mean * mean);
    }
}

// Diffusion coefficient times k at shared-memory position (r, c):
// q^2 = (8 S - L^2) / P^2 with S = sum of squared neighbour differences, L = their sum,
// P = 4 J + L (the neighbour sum); c = min(k a / (q^2 + b), k) with a = q0^2 (1 + q0^2),
// b = q0^4 (the rational form of 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2)))).
template <typename T>
__device__ __forceinline__ T srad_coefficient(const T (*sj)[SRAD_TILE_X + 3], int r, int c,
                                              T ka, T b, T k)
{
    const T j0 = sj[r][c];
    const T dn = sj[r - 1][c] - j0;
    const T ds = sj[r + 1][c] - j0;
    const T dw = sj[r][c - 1] - j0;
    const T de = sj[r][c + 1] - j0;
    const T s = ((ds * ds + dn * dn) + de * de) + dw * dw;
    const T l = ((ds + dn) + de) + dw;
    const T p = T(4) * j0 + l;
    const T q2 = (T(8) * s - l * l) / (p * p);
    const T c_k = ka / (q2 + b);
    return c_k < k ? c_k : k;
}

// One explicit SRAD iteration: dst = src + k * (c (dN + dW) + c_S dS + c_E dE).
// q0sq: (N,) q0^2 per image; decay multiplies it (exp(-2 rho t), 1 without decay).
// k = time_step / 4. with_stats != 0: write ROI partial sums of dst (see srad_roi_sums).
template <typename T>
__global__ void __launch_bounds__(SRAD_THREADS)
srad_step(const T* __restrict__ src, T* __restrict__ dst, int H, int W,
          const double* __restrict__ q0sq, double decay, double k,
          int with_stats, int r0, int r1, int c0, int c1, double* __restrict__ partials)
{
    __shared__ T sj[SRAD_TILE_Y + 3][SRAD_TILE_X + 3];
    __shared__ T sc[SRAD_TILE_Y + 1][SRAD_TILE_X + 1];

    const TileIndex t = tile_index(W);
    const int n = t.n;
    const long long plane = (long long)H * W;
    const T* img = src + n * plane;
    T* out = dst + n * plane;
    const int y0 = t.ty * SRAD_TILE_Y;
    const int x0 = t.tx * SRAD_TILE_X;
    const int tid = threadIdx.y * SRAD_BLOCK_X + threadIdx.x;

    for (int idx = tid; idx < (SRAD_TILE_Y + 3) * (SRAD_TILE_X + 3); idx += SRAD_THREADS) {
        const int r = idx / (SRAD_TILE_X + 3);
        const int c = idx - r * (SRAD_TILE_X + 3);
        sj[r][c] = load_clamped(img, H, W, y0 - 1 + r, x0 - 1 + c);
    }

    // Same double-precision steps as despeckle._coefficient_params, then one rounding to T.
    const double q = fmax(q0sq[n] * decay, SRAD_Q0SQ_FLOOR);
    const T ka = (T)(k * (q * (1.0 + q)));
    const T b = (T)(q * q);
    const T kt = (T)k;
    __syncthreads();

    // Coefficients outside the image come from clamped values and are finite; they only ever
    // multiply a border difference, which is exactly zero.
    for (int idx = tid; idx < (SRAD_TILE_Y + 1) * (SRAD_TILE_X + 1); idx += SRAD_THREADS) {
        const int i = idx / (SRAD_TILE_X + 1);
        const int j = idx - i * (SRAD_TILE_X + 1);
        sc[i][j] = srad_coefficient<T>(sj, i + 1, j + 1, ka, b, kt);
    }
    __syncthreads();

    double s1 = 0.0, s2 = 0.0;
    const int j = threadIdx.x;
    const int gj = x0 + j;
    for (int i = threadIdx.y; i < SRAD_TILE_Y; i += SRAD_BLOCK_Y) {
        const int gi = y0 + i;
        if (gi < H && gj < W) {
            const T j0 = sj[i + 1][j + 1];
            const T dn = sj[i][j + 1] - j0;
            const T ds = sj[i + 2][j + 1] - j0;
            const T dw = sj[i + 1][j] - j0;
            const T de = sj[i + 1][j + 2] - j0;
            const T c = sc[i][j];
            const T d = ((sc[i + 1][j] * ds + c * dn) + sc[i][j + 1] * de) + c * dw;
            const T value = j0 + d;
            out[(long long)gi * W + gj] = value;
            if (with_stats && in_roi(gi, gj, r0, r1, c0, c1)) {
                s1 += (double)value;
                s2 += (double)value * (double)value;
            }
        }
    }
    if (with_stats) block_sum2(s1, s2, partials + 2 * t.slot);
}

// --- the whole series of small uint8 B-mode images in one launch ------------------------------
//
// srad_series_u8 runs despeckle.srad_series_bmode for a batch of images whose planes fit one
// block's loop (augengine/ops/despeckle.py, _SERIES_BLOCK_MAX_PIXELS): block n owns image n for
// the whole series, so the per-iteration q0 estimate, the coefficient pass and the update are
// separated by __syncthreads instead of by kernel launches: one launch for every iteration, the
// expansion of the grey levels to intensity and each snapshot's compression back to uint8.
// Each step is the arithmetic of the NumPy reference, in its order (despeckle._bmode_intensity,
// _prepare, _step, srad_series' snapshot, and log_compress_u8 of bmode.cu for the compression,
// which the tiled path uses too). Scratch: work, other and coef, (N, H, W) each.
//
// Snapshot k of image n is written to every output row r in the list first[n * scales + k],
// next[r], next[next[r]], ... (-1 ends it), so the rows a batch asks for are written in place
// and no other snapshot is stored.

#define SRAD_SERIES_THREADS 512
#define SRAD_INTENSITY_FLOOR 1e-12  // same as despeckle._INTENSITY_FLOOR

__device__ __forceinline__ float srad_exp(float x) { return expf(x); }
__device__ __forceinline__ double srad_exp(double x) { return exp(x); }

// Block-wide maximum of v (values >= 0), returned to every thread.
template <typename T>
__device__ __forceinline__ T series_max(T v)
{
    __shared__ T peaks[SRAD_SERIES_THREADS / 32];
    const int tid = threadIdx.x;
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_down_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    if ((tid & 31) == 0) peaks[tid >> 5] = v;
    __syncthreads();
    T peak = peaks[0];
    for (int w = 1; w < SRAD_SERIES_THREADS / 32; ++w) peak = peaks[w] > peak ? peaks[w] : peak;
    __syncthreads();
    return peak;
}

// q0^2 = var / mean^2 from the region's (sum, sum of squares), as srad_q0sq computes it.
__device__ __forceinline__ double series_q0sq(double s1, double s2, double count)
{
    const double mean = s1 / count;
    const double var = fmax(s2 / count - mean * mean, 0.0);
    return var / (mean * mean);
}

// grey: (N, H, W) uint8 levels compressed with DR dB. expand_scale = DR/255 ln(10)/10 and
// expand_offset = DR ln(10)/10 in T, as despeckle._bmode_intensity rounds them; fixed_q0sq < 0:
// estimate q0 over rows [r0, r1) x cols [c0, c1) (count pixels) before the first iteration and,
// with reestimate, after every one; decay: (iterations,) factors on q0^2; k = time_step / 4;
// log_scale = 20*255/DR. out: (rows, H, W) uint8.
template <typename T>
__global__ void __launch_bounds__(SRAD_SERIES_THREADS)
srad_series_u8(const unsigned char* __restrict__ grey, int H, int W, T expand_scale,
               T expand_offset, T* __restrict__ work_all, T* __restrict__ other_all,
               T* __restrict__ coef_all, double fixed_q0sq, int reestimate,
               const double* __restrict__ decay, double k, int iterations, int every,
               int r0, int r1, int c0, int c1, double count, T log_scale,
               const int* __restrict__ first, const int* __restrict__ next, int scales,
               unsigned char* __restrict__ out)
{
    const int n = blockIdx.x;
    const long long plane = (long long)H * W;
    const unsigned char* g = grey + n * plane;
    T* work = work_all + n * plane;
    T* other = other_all + n * plane;
    T* coef = coef_all + n * plane;
    const int tid = threadIdx.x;

    // Intensity I = exp(g * scale - offset) and its maximum.
    T local = T(0);
    for (long long p = tid; p < plane; p += SRAD_SERIES_THREADS) {
        T v = (T)g[p];
        v = v * expand_scale;
        v = v - expand_offset;
        v = srad_exp(v);
        work[p] = v;
        local = v > local ? v : local;
    }
    const T peak = series_max(local);

    // Divided by the peak and floored; the region's sums for the first q0 estimate.
    double s1 = 0.0, s2 = 0.0;
    for (long long p = tid; p < plane; p += SRAD_SERIES_THREADS) {
        T v = work[p] / peak;
        v = v > T(SRAD_INTENSITY_FLOOR) ? v : T(SRAD_INTENSITY_FLOOR);
        work[p] = v;
        const int i = (int)(p / W), j = (int)(p - (long long)i * W);
        if (in_roi(i, j, r0, r1, c0, c1)) {
            s1 += (double)v;
            s2 += (double)v * (double)v;
        }
    }
    double q0sq = fixed_q0sq;
    if (fixed_q0sq < 0.0) {
        block_sums2<SRAD_SERIES_THREADS>(s1, s2, threadIdx.x);
        q0sq = series_q0sq(s1, s2, count);
    } else {
        __syncthreads();
    }

    const T kt = (T)k;
    for (int iteration = 0; iteration < iterations; ++iteration) {
        const double q = fmax(q0sq * decay[iteration], SRAD_Q0SQ_FLOOR);
        const T ka = (T)(k * (q * (1.0 + q)));
        const T b = (T)(q * q);
        for (long long p = tid; p < plane; p += SRAD_SERIES_THREADS) {
            const int i = (int)(p / W), j = (int)(p - (long long)i * W);
            const T j0 = work[p];
            T dn, ds, dw, de;
            neighbour_diffs(work, H, W, i, j, j0, dn, ds, dw, de);
            const T s = ((ds * ds + dn * dn) + de * de) + dw * dw;
            const T l = ((ds + dn) + de) + dw;
            const T pn = T(4) * j0 + l;
            const T q2 = (T(8) * s - l * l) / (pn * pn);
            const T c_k = ka / (q2 + b);
            coef[p] = c_k < kt ? c_k : kt;
        }
        __syncthreads();
        const bool with_stats = reestimate && iteration + 1 < iterations;
        s1 = 0.0;
        s2 = 0.0;
        for (long long p = tid; p < plane; p += SRAD_SERIES_THREADS) {
            const int i = (int)(p / W), j = (int)(p - (long long)i * W);
            const T j0 = work[p];
            T dn, ds, dw, de;
            neighbour_diffs(work, H, W, i, j, j0, dn, ds, dw, de);
            const T c = coef[p];
            // Across the border the difference is exactly zero, so the clamped coefficient
            // only ever multiplies zero (as in srad_step).
            const T c_s = load_clamped(coef, H, W, i + 1, j);
            const T c_e = load_clamped(coef, H, W, i, j + 1);
            const T d = ((c_s * ds + c * dn) + c_e * de) + c * dw;
            const T value = j0 + d;
            other[p] = value;
            if (with_stats && in_roi(i, j, r0, r1, c0, c1)) {
                s1 += (double)value;
                s2 += (double)value * (double)value;
            }
        }
        if (with_stats) {
            // block_sums2's barriers also end this pass.
            block_sums2<SRAD_SERIES_THREADS>(s1, s2, threadIdx.x);
            q0sq = series_q0sq(s1, s2, count);
        } else {
            __syncthreads();
        }
        T* swap = work;
        work = other;
        other = swap;
        if ((iteration + 1) % every == 0) {
            const int scale = (iteration + 1) / every - 1;
            for (int row = first[n * scales + scale]; row >= 0; row = next[row]) {
                unsigned char* target = out + row * plane;
                for (long long p = tid; p < plane; p += SRAD_SERIES_THREADS) {
                    T v = work[p] * peak;
                    v = sqrt(v);
                    T level = log10(v);
                    level = level * log_scale;
                    level = level + T(255);
                    level = level < T(0) ? T(0) : (level > T(255) ? T(255) : level);
                    target[p] = (unsigned char)rint(level);
                }
            }
        }
    }
}
