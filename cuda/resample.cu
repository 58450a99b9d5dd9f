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
