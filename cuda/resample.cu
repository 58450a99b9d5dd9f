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

// affine_coordinates: the sampling positions of geometry.affine_batch for a chunk of B images,
// out (3, B, H, W) double: (b, t_b0 + A_b00 row + A_b01 col, t_b1 + A_b10 row + A_b11 col),
// evaluated in that order (as the NumPy expression of the reference, and as scipy.ndimage's
// affine_transform does), where CuPy would run some fourteen element-wise kernels.
// matrices (B, 2, 2) and offsets (B, 2) double. Launch as round_clip_u8.
extern "C" __global__ void __launch_bounds__(RESAMPLE_THREADS)
affine_coordinates(const double* __restrict__ matrices, const double* __restrict__ offsets,
                   int count, int H, int W, double* __restrict__ out)
{
    const long long plane = (long long)H * W;
    const long long total = plane * count;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int b = (int)(i / plane);
        const long long p = i - b * plane;
        const double row = (double)(p / W);
        const double col = (double)(p - (p / W) * W);
        const double* a = matrices + 4LL * b;
        const double* t = offsets + 2LL * b;
        out[i] = (double)b;
        out[total + i] = (t[0] + a[0] * row) + a[1] * col;
        out[2 * total + i] = (t[1] + a[2] * row) + a[3] * col;
    }
}
