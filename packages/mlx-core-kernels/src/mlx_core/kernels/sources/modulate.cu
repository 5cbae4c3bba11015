// Fused LayerNorm-modulate: out = (1 + scale) * LayerNorm(x) + shift, LayerNorm without affine
// parameters over the last axis, statistics in float32 (Chan/Welford merge: no E[x^2] - mean^2).
// Body of an mx.fast.cuda_kernel.
// Inputs: x [B, S, D] (dtype T); shift [Bs, Ss, D] and scale [Bc, Sc, D] (dtype C) where each
// leading size is 1 (broadcast) or equal to x's; eps [1] float32. Output: out [B, S, D] (dtype T).
// Template: T, C, N (elements of T per 16-byte vector: 16 / sizeof(T)).
// Launch: grid = (B * S * 32, 1, 1), threadgroup a multiple of 32: one warp per row.
const int S = x_shape[1];
const int D = x_shape[2];
const long long rows = static_cast<long long>(x_shape[0]) * S;
const long long tid = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
const long long row = tid / 32;
const int lane = static_cast<int>(threadIdx.x & 31u);
if (row >= rows) {
  return;  // warp-uniform: all 32 lanes of a warp share one row
}
const long long b = row / S;
const long long s = row - b * S;
const long long shift_row =
    (shift_shape[0] == 1 ? 0LL : b) * shift_shape[1] + (shift_shape[1] == 1 ? 0LL : s);
const long long scale_row =
    (scale_shape[0] == 1 ? 0LL : b) * scale_shape[1] + (scale_shape[1] == 1 ? 0LL : s);
const T* xr = x + row * D;
const C* shr = shift + shift_row * D;
const C* scr = scale + scale_row * D;
T* outr = out + row * D;

// Vector path only when every row pointer is 16-byte aligned (row-uniform, so warp-uniform).
const bool vec = mck_aligned16(xr) && mck_aligned16(outr) && mck_aligned16(shr) && mck_aligned16(scr);
const int nvec = vec ? D / N : 0;
const int tail = nvec * N;

// Pass 1: per-lane (count, mean, M2), merged chunk by chunk.
float cnt = 0.0f;
float mean = 0.0f;
float m2 = 0.0f;
for (int v = lane; v < nvec; v += 32) {
  const mck_vec<T, N> xv = reinterpret_cast<const mck_vec<T, N>*>(xr)[v];
  float vals[N];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    vals[i] = mck_to_float<T>(xv.v[i]);
    sum += vals[i];
  }
  const float mb = sum / static_cast<float>(N);
  float m2b = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float d = vals[i] - mb;
    m2b += d * d;
  }
  mck_merge(cnt, mean, m2, static_cast<float>(N), mb, m2b);
}
for (int j = tail + lane; j < D; j += 32) {
  mck_merge(cnt, mean, m2, 1.0f, mck_to_float<T>(xr[j]), 0.0f);
}

// Warp reduction of the partial statistics, then lane 0's result for everyone (bitwise uniform).
#pragma unroll
for (int off = 16; off > 0; off >>= 1) {
  const float cb = __shfl_xor_sync(0xffffffffu, cnt, off);
  const float mb = __shfl_xor_sync(0xffffffffu, mean, off);
  const float m2b = __shfl_xor_sync(0xffffffffu, m2, off);
  mck_merge(cnt, mean, m2, cb, mb, m2b);
}
mean = __shfl_sync(0xffffffffu, mean, 0);
m2 = __shfl_sync(0xffffffffu, m2, 0);
const float var = fmaxf(m2 / static_cast<float>(D), 0.0f);
const float rstd = 1.0f / sqrtf(var + eps[0]);

// Pass 2: normalise and modulate (the row was just read, so these loads mostly hit L1/L2).
for (int v = lane; v < nvec; v += 32) {
  const mck_vec<T, N> xv = reinterpret_cast<const mck_vec<T, N>*>(xr)[v];
  const mck_vec<C, N> shv = reinterpret_cast<const mck_vec<C, N>*>(shr)[v];
  const mck_vec<C, N> scv = reinterpret_cast<const mck_vec<C, N>*>(scr)[v];
  mck_vec<T, N> ov;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float y = (mck_to_float<T>(xv.v[i]) - mean) * rstd;
    ov.v[i] = mck_from_float<T>(y * (1.0f + mck_to_float<C>(scv.v[i])) + mck_to_float<C>(shv.v[i]));
  }
  reinterpret_cast<mck_vec<T, N>*>(outr)[v] = ov;
}
for (int j = tail + lane; j < D; j += 32) {
  const float y = (mck_to_float<T>(xr[j]) - mean) * rstd;
  outr[j] = mck_from_float<T>(y * (1.0f + mck_to_float<C>(scr[j])) + mck_to_float<C>(shr[j]));
}
