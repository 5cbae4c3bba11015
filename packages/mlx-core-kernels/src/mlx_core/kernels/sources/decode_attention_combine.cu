// Split-K flash-decoding, pass 2: merge the per-split partials of pass 1 into the output.
// Body of an mx.fast.cuda_kernel. Inputs: part_o [B, Hq, splits, D] float32, part_ml
// [B, Hq, splits, 2] float32. Output: out [B, Hq, 1, D] (dtype T). Template: T, MAX_SPLITS, SG.
// Launch: grid = (B * Hq * SG * DT, 1, 1), threadgroup = (SG * DT, 1, 1) with DT = max(D, 32): one block per
// (batch, query head) row. The first warp turns the splits' (max, sum) pairs into weights in shared memory
// (a warp reduction, not a serial loop per thread); then SG groups of DT threads each sum every SG-th
// split of their column with four loads in flight (the merge is latency-bound: few blocks, dependent
// loads), and the first group adds the groups' sums.
const int splits = part_o_shape[2];
const int D = part_o_shape[3];
const int DT = static_cast<int>(blockDim.x) / SG;
const long long row = blockIdx.x;
const int d = static_cast<int>(threadIdx.x) % DT;
const int group = static_cast<int>(threadIdx.x) / DT;
const float* ml = part_ml + row * splits * 2;
__shared__ float weight[MAX_SPLITS];
__shared__ float inv_sum;
__shared__ float group_sum[SG][1024 / SG];
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
float o0 = 0.0f, o1 = 0.0f, o2 = 0.0f, o3 = 0.0f;
if (d < D) {
  const float* po = part_o + row * splits * D + d;
  int s = group;
  for (; s + 3 * SG < splits; s += 4 * SG) {
    const float p0 = po[static_cast<long long>(s) * D];
    const float p1 = po[static_cast<long long>(s + SG) * D];
    const float p2 = po[static_cast<long long>(s + 2 * SG) * D];
    const float p3 = po[static_cast<long long>(s + 3 * SG) * D];
    o0 += weight[s] * p0;
    o1 += weight[s + SG] * p1;
    o2 += weight[s + 2 * SG] * p2;
    o3 += weight[s + 3 * SG] * p3;
  }
  for (; s < splits; s += SG) {
    o0 += weight[s] * po[static_cast<long long>(s) * D];
  }
}
group_sum[group][d] = (o0 + o1) + (o2 + o3);
__syncthreads();
if (group == 0 && d < D) {
  float total = 0.0f;
#pragma unroll
  for (int g = 0; g < SG; ++g) {
    total += group_sum[g][d];
  }
  out[row * D + d] = static_cast<T>(total * inv_sum);
}
