// Split-K flash-decoding, pass 2: merge the per-split partials of pass 1 into the output.
// Body of an mx.fast.cuda_kernel. Inputs: part_o [B, Hq, splits, D] float32, part_ml
// [B, Hq, splits, 2] float32. Output: out [B, Hq, 1, D] (dtype T). Template: T.
// Launch: grid = (B * Hq * D, 1, 1): one thread per output element.
const int Hq = part_o_shape[1];
const int splits = part_o_shape[2];
const int D = part_o_shape[3];
const long long total = static_cast<long long>(part_o_shape[0]) * Hq * D;
const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
if (idx >= total) {
  return;
}
const long long row = idx / D;
const long long d = idx - row * D;
const float* ml = part_ml + row * splits * 2;
float mx_ = mck_neg_inf();
for (int s = 0; s < splits; ++s) {
  mx_ = fmaxf(mx_, ml[2 * s]);
}
float lsum = 0.0f;
float osum = 0.0f;
for (int s = 0; s < splits; ++s) {
  const float ms = ml[2 * s];
  if (ms != mck_neg_inf()) {
    const float wt = exp2f(ms - mx_);
    lsum += ml[2 * s + 1] * wt;
    osum += part_o[(row * splits + s) * D + d] * wt;
  }
}
out[idx] = static_cast<T>(lsum > 0.0f ? osum / lsum : 0.0f);
