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
