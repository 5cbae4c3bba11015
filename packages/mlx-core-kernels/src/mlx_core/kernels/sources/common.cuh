// Helpers shared by the mlx-core CUDA kernels. This text is passed as the `header` of
// mx.fast.cuda_kernel, so it sits at global scope, before `namespace mlx::core::cu`, after
// mlx/backend/cuda/device/utils.cuh (which includes cuda_bf16.h and cuda_fp16.h).
// Every name carries the `mck_` prefix so it cannot collide with MLX's own helpers.

// N elements of U loaded or stored as one (or two) 16-byte transactions; the caller checks
// that the address is 16-byte aligned.
template <typename U, int M>
struct alignas(16) mck_vec {
  U v[M];
};

__device__ __forceinline__ bool mck_aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ULL) == 0ULL;
}

template <typename U>
__device__ __forceinline__ float mck_to_float(U x) {
  return static_cast<float>(x);
}

template <typename U>
__device__ __forceinline__ U mck_from_float(float x) {
  return static_cast<U>(x);
}

// silu(g) * x in float32. expf(-g) overflows to +inf for g < -88, giving -0, which is the limit.
__device__ __forceinline__ float mck_swiglu(float x, float g) {
  return x * (g / (1.0f + expf(-g)));
}

// Chan et al. merge of two (count, mean, M2) partial statistics; stable in float32.
__device__ __forceinline__ void mck_merge(float& n, float& mean, float& m2, float nb, float mb, float m2b) {
  float nt = n + nb;
  if (nt == 0.0f) {
    return;
  }
  float delta = mb - mean;
  float wb = nb / nt;
  mean = mean + delta * wb;
  m2 = m2 + m2b + delta * delta * n * wb;
  n = nt;
}

// -infinity without relying on host macros (NVRTC has no math.h INFINITY).
__device__ __forceinline__ float mck_neg_inf() {
  return __int_as_float(0xff800000);
}

// Sum over the 32 lanes of a warp; every lane gets the same bits (IEEE addition commutes).
__device__ __forceinline__ float mck_warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, off);
  }
  return v;
}

// Largest power of two dividing `bytes`, capped at 16: the alignment of an M-element register row.
__host__ __device__ constexpr int mck_row_align(int bytes) {
  return (bytes % 16 == 0) ? 16 : (bytes % 8 == 0) ? 8 : (bytes % 4 == 0) ? 4 : (bytes % 2 == 0) ? 2 : 1;
}

template <typename U, int M>
struct alignas(mck_row_align(M * static_cast<int>(sizeof(U)))) mck_row {
  U v[M];
};

// Load M consecutive elements starting at row[lane * M] (fast: contiguous and aligned) or with
// element stride `stride` (any layout), converted to float.
template <typename U, int M>
__device__ __forceinline__ void mck_load_lane(const U* row, long long stride, bool fast, int lane, float* out) {
  if (fast) {
    const mck_row<U, M> r = reinterpret_cast<const mck_row<U, M>*>(row)[lane];
#pragma unroll
    for (int i = 0; i < M; ++i) {
      out[i] = static_cast<float>(r.v[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      out[i] = static_cast<float>(row[static_cast<long long>(lane * M + i) * stride]);
    }
  }
}
