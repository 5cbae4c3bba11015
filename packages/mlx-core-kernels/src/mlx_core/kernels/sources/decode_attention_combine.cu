// Split-K flash-decoding, pass 2: merge the per-split partials of pass 1 into the output.
// Body of an mx.fast.cuda_kernel. Inputs: part_o [B, Hq, splits, D] float32, part_ml
// [B, Hq, splits, 2] float32. Output: out [B, Hq, 1, D] (dtype T). Template: T.
// Launch: grid = (B * Hq * D, 1, 1), threadgroup = (D, 1, 1): one block per (batch, query head) row,
// one thread per output element. The first warp turns the splits' (max, sum) pairs into weights in
// shared memory (a warp reduction, not a serial loop per thread); then every thread sums its column.
const int Hq = part_o_shape[1];
const int splits = part_o_shape[2];
const int D = part_o_shape[3];
const long long row = blockIdx.x;
const int d = threadIdx.x;
const float* ml = part_ml + row * splits * 2;
__shared__ float weight[MAX_SPLITS];
__shared__ float inv_sum;
if (threadIdx.x < 32) {
  float mx_ = mck_neg_inf();
  for (int s = threadIdx.x; s < splits; s += 32) {
    mx_ = fmaxf(mx_, ml[2 * s]);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    mx_ = fmaxf(mx_, __shfl_xor_sync(0xffffffffu, mx_, off));
  }
  float lsum = 0.0f;
  for (int s = threadIdx.x; s < splits; s += 32) {
    const float ms = ml[2 * s];
    const float wt = (ms == mck_neg_inf()) ? 0.0f : exp2f(ms - mx_);
    weight[s] = wt;
    lsum += ml[2 * s + 1] * wt;
  }
  lsum = mck_warp_sum(lsum);
  if (threadIdx.x == 0) {
    inv_sum = lsum > 0.0f ? 1.0f / lsum : 0.0f;
  }
}
__syncthreads();
if (d >= D) {
  return;
}
const float* po = part_o + row * splits * D + d;
float o0 = 0.0f, o1 = 0.0f, o2 = 0.0f, o3 = 0.0f;
int s = 0;
for (; s + 4 <= splits; s += 4) {
  o0 += weight[s] * po[static_cast<long long>(s) * D];
  o1 += weight[s + 1] * po[static_cast<long long>(s + 1) * D];
  o2 += weight[s + 2] * po[static_cast<long long>(s + 2) * D];
  o3 += weight[s + 3] * po[static_cast<long long>(s + 3) * D];
}
for (; s < splits; ++s) {
  o0 += weight[s] * po[static_cast<long long>(s) * D];
}
out[row * D + d] = static_cast<T>(((o0 + o1) + (o2 + o3)) * inv_sum);
