// Element-wise ends of augengine/ops/geometry.py's resampling on the GPU.
//
// round_clip_u8: a float resampling result back to uint8 grey levels in one pass,
// out = (uint8) clip(rint(x), 0, 255), where CuPy would run rint, clip and astype as three
// kernels (geometry._restore_dtype, the NumPy reference, does those three steps in this order).
// rint rounds half to even, as numpy.rint does, so the results are equal bit for bit.
//
// Launch: 1-D grid-stride, RESAMPLE_THREADS threads per block (geometry._RESAMPLE_THREADS).

#define RESAMPLE_THREADS 256

template <typename T>
__global__ void __launch_bounds__(RESAMPLE_THREADS)
round_clip_u8(const T* __restrict__ x, long long total, unsigned char* __restrict__ out)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        T v = rint(x[i]);
        v = v < T(0) ? T(0) : (v > T(255) ? T(255) : v);
        out[i] = (unsigned char)v;
    }
}

// --- ragged resize ------------------------------------------------------------------------
// resize_rows, resize_cols: geometry.resize_many of a list of images of any shapes in two
// launches for the whole list, one per pass of the separable resampling.
//
// Job j resizes src_j (h_j, w_j) to out_j (H_j, W_j) with band-sparse weights
// (geometry._band_weights: the non-zero band of each row of _resample_matrix's dense weights,
// as its first tap, its tap count and the taps, zero-padded to K per output row or column):
//   resize_rows: tmp_j[o, c] = sum_{k < count_r[o]} Wr_j[o, k] * src_j[first_r[o] + k, c]
//   resize_cols: out_j[o, p] = sum_{k < count_c[p]} Wc_j[p, k] * tmp_j[o, first_c[p] + k]
// in the accumulator type Acc (float for uint8 and float input, double for double), in tap
// order, rows first, as W_rows @ src @ W_cols.T associates. A uint8 result is rounded half to
// even and clipped in resize_cols, as round_clip_u8 does.
//
// Tables (geometry._resize_tables packs them into one host-to-device copy):
//   jobs (J, RESIZE_JOB_FIELDS) long long, one row per job (ResizeJobField);
//   starts (J + 1) long long: prefix sums of the jobs' element counts, H_j w_j for resize_rows
//     (the offsets of tmp_j in tmp), H_j W_j for resize_cols (the offsets of out_j in out);
//   index int: first taps and tap counts of every output row and column;
//   taps Acc: K taps per output row or column.
// Sources are read through the jobs' pointers and row strides [elements], so a crop (a view of
// a bigger image with unit column stride) is read in place.
//
// Launch: 1-D grid-stride over all jobs' elements, RESAMPLE_THREADS threads per block; a thread
// finds its job by binary search over the prefix offsets (log2 J steps; neighbouring threads
// share a job, so a warp rarely diverges). Each output element is one thread's sum over its own
// taps, so an image's bytes do not depend on the other jobs of the launch.

#define RESIZE_JOB_FIELDS 12
enum ResizeJobField {
    RESIZE_SRC = 0,     // source pointer (the bits of its device address)
    RESIZE_ROW_STRIDE,  // source row stride [elements]
    RESIZE_WIDTH_IN,    // w_j: columns of src_j and of tmp_j
    RESIZE_WIDTH_OUT,   // W_j: columns of out_j
    RESIZE_ROW_FIRST,   // offset in index of first_r (H_j ints)
    RESIZE_ROW_COUNT,   // offset in index of count_r (H_j ints)
    RESIZE_ROW_TAPS,    // offset in taps of Wr_j (H_j x K_r)
    RESIZE_ROW_K,       // K_r
    RESIZE_COL_FIRST,   // offset in index of first_c (W_j ints)
    RESIZE_COL_COUNT,   // offset in index of count_c (W_j ints)
    RESIZE_COL_TAPS,    // offset in taps of Wc_j (W_j x K_c)
    RESIZE_COL_K,       // K_c
};

// The job j with starts[j] <= i < starts[j + 1] (starts[0] = 0 <= i < starts[count]).
__device__ __forceinline__ int resize_job(const long long* __restrict__ starts, int count,
                                          long long i)
{
    int lo = 0, hi = count;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (starts[mid] <= i) lo = mid; else hi = mid;
    }
    return lo;
}

template <typename Acc, typename Out> struct ResizeStore {
    __device__ static Out cast(Acc v) { return static_cast<Out>(v); }
};
template <typename Acc> struct ResizeStore<Acc, unsigned char> {
    __device__ static unsigned char cast(Acc v)
    {
        v = rint(v);
        v = v < Acc(0) ? Acc(0) : (v > Acc(255) ? Acc(255) : v);
        return (unsigned char)v;
    }
};

template <typename Src, typename Acc>
__global__ void __launch_bounds__(RESAMPLE_THREADS)
resize_rows(const long long* __restrict__ jobs, const long long* __restrict__ starts, int count,
            const int* __restrict__ index, const Acc* __restrict__ taps, Acc* __restrict__ tmp)
{
    const long long total = starts[count];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int j = resize_job(starts, count, i);
        const long long* job = jobs + (long long)RESIZE_JOB_FIELDS * j;
        const long long e = i - starts[j];
        const long long o = e / job[RESIZE_WIDTH_IN];
        const long long c = e - o * job[RESIZE_WIDTH_IN];
        const long long row_stride = job[RESIZE_ROW_STRIDE];
        const Src* src = reinterpret_cast<const Src*>(
            static_cast<unsigned long long>(job[RESIZE_SRC]));
        const Src* column = src + (long long)index[job[RESIZE_ROW_FIRST] + o] * row_stride + c;
        const int n = index[job[RESIZE_ROW_COUNT] + o];
        const Acc* w = taps + job[RESIZE_ROW_TAPS] + o * job[RESIZE_ROW_K];
        Acc sum = Acc(0);
        for (int k = 0; k < n; ++k) sum += w[k] * static_cast<Acc>(column[k * row_stride]);
        tmp[i] = sum;
    }
}

template <typename Acc, typename Out>
__global__ void __launch_bounds__(RESAMPLE_THREADS)
resize_cols(const long long* __restrict__ jobs, const long long* __restrict__ starts_rows,
            const long long* __restrict__ starts, int count, const int* __restrict__ index,
            const Acc* __restrict__ taps, const Acc* __restrict__ tmp, Out* __restrict__ out)
{
    const long long total = starts[count];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int j = resize_job(starts, count, i);
        const long long* job = jobs + (long long)RESIZE_JOB_FIELDS * j;
        const long long e = i - starts[j];
        const long long o = e / job[RESIZE_WIDTH_OUT];
        const long long p = e - o * job[RESIZE_WIDTH_OUT];
        const Acc* row = tmp + starts_rows[j] + o * job[RESIZE_WIDTH_IN]
                         + index[job[RESIZE_COL_FIRST] + p];
        const int n = index[job[RESIZE_COL_COUNT] + p];
        const Acc* w = taps + job[RESIZE_COL_TAPS] + p * job[RESIZE_COL_K];
        Acc sum = Acc(0);
        for (int k = 0; k < n; ++k) sum += w[k] * row[k];
        out[i] = ResizeStore<Acc, Out>::cast(sum);
    }
}

// --- end of ragged resize -----------------------------------------------------------------

// warp_affine: geometry.affine_batch's resampling of a stack and its masks in one pass.
//
// Per output pixel (b, row, col) of a (count, H, W) stack, the sampling position in image b is,
// in double as scipy.ndimage evaluates it (ni_interpolation.c; cupyx.scipy.ndimage weighs
// and sums in another order and, for float output, in float, so it may differ in the last bit):
//   general (zoom_shift == 0):  r = (t0 + row a00) + col a01,  c = (t1 + row a10) + col a11
//     (NI_GeometricTransform's affine branch: affine_transform with a 2-D matrix);
//   diagonal (zoom_shift != 0): r = (row + s0) a00,  c = (col + s1) a11, s = t / diag(A)
//     computed on the host (NI_ZoomShift: affine_transform with a 1-D matrix).
// maps (count, 6) double: a00 a01 a10 a11 t0 t1 (t0 t1 hold s0 s1 when zoom_shift).
//
// mode "constant" (scipy >= 1.6): a position with r outside [0, H-1] or c outside [0, W-1]
// (NaN included) gives fill; no tap outside the image is ever weighed. Inside:
//   order 1: r0 = floor(r), x = r - r0, weights w0 = 1 - x and w1 = 1 - w0 (spline weights of
//     ni_splines.c: the last weight is 1 minus the others, not x), tap r0 + 1 mirrored to
//     H - 2 when r0 = H - 1 (its weight is then 0); the same along c; t = sum over the taps
//     (r0, c0), (r0, c1), (r1, c0), (r1, c1) in that order of ((double)pixel * wr) * wc,
//     accumulated from 0.0 in double;
//   order 0: t = pixel (floor(r + 0.5), floor(c + 0.5)).
// The input is read as its own type (no float copy); t is stored as the per-image op stores
// its float32/float64 result: float and double as is, uint8 as rint((float)t) clipped to
// [0, 255] (geometry's restore_dtype, as round_clip_u8 above), bool as (float)t > 0.5f.
// masks (count, H, W) of bool or uint8 bytes, when has_masks: nearest with fill 0, which copies
// the byte at (floor(r + 0.5), floor(c + 0.5)) or writes 0, as order 0 then restore_dtype do.
//
// Compiled with --fmad=false (augengine.ops._cuda.OPTIONS), so each product and sum is rounded
// as in scipy's C. Launch: 1-D grid-stride over count * H * W pixels, RESAMPLE_THREADS threads.

template <typename T> __device__ __forceinline__ T warp_store(double t);
template <> __device__ __forceinline__ float warp_store<float>(double t) { return (float)t; }
template <> __device__ __forceinline__ double warp_store<double>(double t) { return t; }
template <> __device__ __forceinline__ bool warp_store<bool>(double t) { return (float)t > 0.5f; }
template <> __device__ __forceinline__ unsigned char warp_store<unsigned char>(double t)
{
    float v = rint((float)t);
    v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    return (unsigned char)v;
}

template <typename T>
__global__ void __launch_bounds__(RESAMPLE_THREADS)
warp_affine(const T* __restrict__ images, const double* __restrict__ maps, int zoom_shift,
            int count, int H, int W, int order, double fill, T* __restrict__ out,
            int has_masks, const unsigned char* __restrict__ masks,
            unsigned char* __restrict__ masks_out)
{
    const long long plane = (long long)H * W;
    const long long total = plane * count;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int b = (int)(i / plane);
        const long long p = i - b * plane;
        const double row = (double)(p / W);
        const double col = (double)(p - (p / W) * W);
        const double* m = maps + 6LL * b;
        double r, c;
        if (zoom_shift) {
            r = (row + m[4]) * m[0];
            c = (col + m[5]) * m[3];
        } else {
            r = (m[4] + row * m[0]) + col * m[1];
            c = (m[5] + row * m[2]) + col * m[3];
        }
        const bool inside = r >= 0.0 && r <= (double)(H - 1) && c >= 0.0 && c <= (double)(W - 1);
        const long long base = b * plane;
        const long long nearest = inside
            ? (long long)floor(r + 0.5) * W + (long long)floor(c + 0.5) : 0;
        double t = fill;
        if (inside && order == 0) {
            t = 0.0;
            t += (double)images[base + nearest];
        } else if (inside) {
            const double fr = floor(r), fc = floor(c);
            const long long r0 = (long long)fr, c0 = (long long)fc;
            const long long r1 = r0 + 1 < H ? r0 + 1 : (H > 1 ? H - 2 : 0);
            const long long c1 = c0 + 1 < W ? c0 + 1 : (W > 1 ? W - 2 : 0);
            const double wr0 = 1.0 - (r - fr), wr1 = 1.0 - wr0;
            const double wc0 = 1.0 - (c - fc), wc1 = 1.0 - wc0;
            const T* image = images + base;
            double v;
            t = 0.0;
            v = (double)image[r0 * W + c0]; v *= wr0; v *= wc0; t += v;
            v = (double)image[r0 * W + c1]; v *= wr0; v *= wc1; t += v;
            v = (double)image[r1 * W + c0]; v *= wr1; v *= wc0; t += v;
            v = (double)image[r1 * W + c1]; v *= wr1; v *= wc1; t += v;
        }
        out[i] = warp_store<T>(t);
        if (has_masks) {
            masks_out[i] = inside ? masks[base + nearest] : (unsigned char)0;
        }
    }
}
