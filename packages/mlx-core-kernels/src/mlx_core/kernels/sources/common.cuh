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

// Whether every row of a [B, H, L, D] tensor (element strides `strides`) starts `bytes`-aligned with unit
// stride along D, so a lane may load `bytes` of a row at once.
template <typename U, typename S>
__device__ __forceinline__ bool mck_rows_aligned(const U* p, const S& strides, int bytes) {
  const long long a = bytes / static_cast<int>(sizeof(U));  // the alignment in elements
  return strides[3] == 1 && (reinterpret_cast<unsigned long long>(p) % bytes) == 0 && strides[0] % a == 0 &&
      strides[1] % a == 0 && strides[2] % a == 0;
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

// Tensor-core helpers (mma.sync, sm_80 and later). MCK_HAS_MMA is 0 when compiling for older GPUs, where
// kernels keep their SIMT path.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MCK_HAS_MMA 0
#else
#define MCK_HAS_MMA 1
#endif

template <typename U>
constexpr bool mck_is_bf16 = false;
template <>
constexpr bool mck_is_bf16<__nv_bfloat16> = true;
template <typename U>
constexpr bool mck_is_half = false;
template <>
constexpr bool mck_is_half<__half> = true;

// d (+)= A(16x16, row-major) * B(16x8, column-major) in float32 with 16-bit inputs (PTX m16n8k16), for U
// bf16 or fp16. Each uint32 holds two elements, low half first; see the PTX ISA's fragment layouts for
// which lane holds what. With float32 (no 16-bit mma) both members do nothing: that only lets kernels
// whose mma path is off for float32 compile.
template <typename U>
struct mck_mma_op {
  __device__ __forceinline__ static void run(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
#if MCK_HAS_MMA
    if constexpr (mck_is_bf16<U>) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else if constexpr (mck_is_half<U>) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
#endif
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    uint32_t bits = 0u;
    if constexpr (mck_is_bf16<U>) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
      bits = *reinterpret_cast<const uint32_t*>(&h);
    } else if constexpr (mck_is_half<U>) {
      const __half2 h = __floats2half2_rn(lo, hi);
      bits = *reinterpret_cast<const uint32_t*>(&h);
    }
    return bits;
  }
};

// N (even) consecutive 16-bit elements as N / 2 packed words, for a caller that checked the row is 16-byte
// aligned with unit stride: one 16- or 8-byte load for N = 8 or 4, element by element for other N (shapes
// whose mma path is compiled but never runs). `valid` false: zeros, nothing read.
template <typename U, int N>
__device__ __forceinline__ void mck_load_words(const U* p, bool valid, uint32_t* w) {
  if (!valid) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      w[i] = 0u;
    }
  } else if constexpr (N == 8) {
    const uint4 r = *reinterpret_cast<const uint4*>(p);
    w[0] = r.x;
    w[1] = r.y;
    w[2] = r.z;
    w[3] = r.w;
  } else if constexpr (N == 4) {
    const uint2 r = *reinterpret_cast<const uint2*>(p);
    w[0] = r.x;
    w[1] = r.y;
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const U lo = p[2 * i];
      const U hi = p[2 * i + 1];
      w[i] = static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&lo)) |
          (static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&hi)) << 16);
    }
  }
}

// Log-sum-exp partials: (m, s) stands for s * exp(m); fold in w * exp(v). Equal maxima (also both
// infinite) add weights, so no inf - inf is ever formed; -inf entries contribute nothing.
__device__ __forceinline__ void mck_lse_push(float& m, float& s, float v, float w) {
  if (v > m) {
    s = s * expf(m - v) + w;
    m = v;
  } else if (v == m) {
    s += w;
  } else {
    s += w * expf(v - m);
  }
}

// Reduce the pair (a, b) over the NT threads of the block with `push(a, b, a2, b2)` (which folds the pair
// (a2, b2) into (a, b)); (a_none, b_none) is the empty pair. Every thread gets the result; call it from all
// threads. The per-warp partials meet in shared memory, then in warp 0.
template <int NT, typename B, typename Push>
__device__ __forceinline__ void mck_block_reduce_pair(float& a, B& b, float a_none, B b_none, Push push) {
  __shared__ float as[NT / 32];
  __shared__ B bs[NT / 32];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  auto warp_reduce = [&]() {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float a2 = __shfl_xor_sync(0xffffffffu, a, off);
      const B b2 = __shfl_xor_sync(0xffffffffu, b, off);
      push(a, b, a2, b2);
    }
  };
  warp_reduce();
  __syncthreads();  // a previous use of the shared slots is over
  if (lane == 0) {
    as[warp] = a;
    bs[warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    a = lane < NT / 32 ? as[lane] : a_none;
    b = lane < NT / 32 ? bs[lane] : b_none;
    warp_reduce();
    if (lane == 0) {
      as[0] = a;
      bs[0] = b;
    }
  }
  __syncthreads();
  a = as[0];
  b = bs[0];
}

// (m, s) over the NT threads of the block, returned to every thread. Call it from all threads.
template <int NT>
__device__ __forceinline__ void mck_block_lse(float& m, float& s) {
  mck_block_reduce_pair<NT>(m, s, mck_neg_inf(), 0.0f, mck_lse_push);
}

// Up to N consecutive values as floats: one 16-byte load when `fast` (aligned, n == N), else n scalar
// loads; entries n..N-1 are `fill`.
template <typename U, int N>
__device__ __forceinline__ void mck_load_floats(const U* p, int n, bool fast, float fill, float* out) {
  if (fast && n == N) {
    const mck_vec<U, N> r = *reinterpret_cast<const mck_vec<U, N>*>(p);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      out[k] = static_cast<float>(r.v[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      out[k] = k < n ? static_cast<float>(p[k]) : fill;
    }
  }
}

// Running argmax with mx.argmax's tie-break (the first index wins); NaN values never win.
__device__ __forceinline__ void mck_argmax_push(float& best, int& index, float v, int i) {
  if (v > best || (v == best && i < index)) {
    best = v;
    index = i;
  }
}

// (best, index) over the NT threads of the block, returned to every thread. Call it from all threads.
template <int NT>
__device__ __forceinline__ void mck_block_argmax(float& best, int& index) {
  mck_block_reduce_pair<NT>(best, index, mck_neg_inf(), 0x7fffffff, mck_argmax_push);
}

// Work tickets (kernels whose later blocks consume what earlier blocks of the same launch write): a block's
// ticket is the order in which it started, so a block that waits only on lower tickets waits only on
// blocks that are already running, whatever the GPU's size.
__device__ __forceinline__ int mck_block_ticket(int* counter) {
  __shared__ int ticket;
  if (threadIdx.x == 0) {
    ticket = atomicAdd(counter, 1);
  }
  __syncthreads();
  return ticket;
}

// Counts the block as done in *counter once every thread's writes are visible (each thread fences, then
// the block syncs, then one thread adds). Call it from all threads.
__device__ __forceinline__ void mck_block_signal(int* counter) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(counter, 1);
  }
}

// End of a block of the last phase of a two-phase launch whose counters are ctr[0] (tickets), ctr[1] (first
// phase done) and ctr[2] (last phase done): the last of its `blocks` blocks resets all three, when every
// block has taken its ticket and no block waits any more. Call it from all threads.
__device__ __forceinline__ void mck_block_finish(int* ctr, int blocks) {
  __syncthreads();
  if (threadIdx.x == 0 && atomicAdd(ctr + 2, 1) == blocks - 1) {
    atomicExch(ctr, 0);
    atomicExch(ctr + 1, 0);
    atomicExch(ctr + 2, 0);
  }
}

// Block-wide wait until *counter >= target, for a counter that other blocks increment after their writes
// and a __threadfence(); thread 0 polls, then fences, so the block's later reads see those writes.
__device__ __forceinline__ void mck_block_wait_for(const int* counter, int target) {
  if (threadIdx.x == 0) {
    while (*static_cast<const volatile int*>(counter) < target) {
      __nanosleep(64);
    }
    __threadfence();
  }
  __syncthreads();
}
