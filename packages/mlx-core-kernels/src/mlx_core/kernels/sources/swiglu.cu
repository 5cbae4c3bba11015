// Fused SwiGLU: out[i] = silu(gate[i]) * x[i], computed in float32.
// Body of an mx.fast.cuda_kernel. Inputs: x, gate (1-D, n elements, dtype T); output: out.
// Template: T (element type), N (elements per 16-byte vector: 16 / sizeof(T)).
// Launch: grid = (ceil(n / N), 1, 1) threads; each thread owns one N-element chunk.
const long long n = static_cast<long long>(x_shape[0]);
const long long chunk = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
const long long start = chunk * N;
if (start >= n) {
  return;
}
if (start + N <= n && mck_aligned16(x) && mck_aligned16(gate) && mck_aligned16(out)) {
  // Whole chunk in bounds and every base pointer 16-byte aligned: one vector load per input.
  const mck_vec<T, N> xv = reinterpret_cast<const mck_vec<T, N>*>(x)[chunk];
  const mck_vec<T, N> gv = reinterpret_cast<const mck_vec<T, N>*>(gate)[chunk];
  mck_vec<T, N> ov;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    ov.v[i] = mck_from_float<T>(mck_swiglu(mck_to_float<T>(xv.v[i]), mck_to_float<T>(gv.v[i])));
  }
  reinterpret_cast<mck_vec<T, N>*>(out)[chunk] = ov;
} else {
  // Scalar tail (last partial chunk) or misaligned views: element by element, bound-checked.
  const long long stop = (start + N < n) ? (start + N) : n;
  for (long long i = start; i < stop; ++i) {
    out[i] = mck_from_float<T>(mck_swiglu(mck_to_float<T>(x[i]), mck_to_float<T>(gate[i])));
  }
}
