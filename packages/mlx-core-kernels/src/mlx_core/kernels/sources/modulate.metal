// Fused LayerNorm-modulate for Metal: out = (1 + scale) * LayerNorm(x) + shift, float32 statistics
// by an exact two-pass mean / variance. Body of an mx.fast.metal_kernel.
// Inputs: x [B, S, D] (T); shift [Bs, Ss, D], scale [Bc, Sc, D] (C), leading sizes 1 or x's;
// eps [1] float32. Output: out [B, S, D] (T). Launch: grid = (B * S * 32, 1, 1), threadgroup a
// multiple of 32: one simdgroup per row.
const uint gid = thread_position_in_grid.x;
const uint lane = gid % 32u;
const uint row = gid / 32u;
const uint S = uint(x_shape[1]);
const uint D = uint(x_shape[2]);
const uint rows = uint(x_shape[0]) * S;
if (row >= rows) {
  return;  // simdgroup-uniform
}
const uint b = row / S;
const uint s = row - b * S;
const uint shift_row = (shift_shape[0] == 1 ? 0u : b) * uint(shift_shape[1]) + (shift_shape[1] == 1 ? 0u : s);
const uint scale_row = (scale_shape[0] == 1 ? 0u : b) * uint(scale_shape[1]) + (scale_shape[1] == 1 ? 0u : s);
const device T* xr = x + size_t(row) * D;
const device C* shr = shift + size_t(shift_row) * D;
const device C* scr = scale + size_t(scale_row) * D;
device T* outr = out + size_t(row) * D;

float sum = 0.0f;
for (uint j = lane; j < D; j += 32u) {
  sum += float(xr[j]);
}
const float mean = simd_sum(sum) / float(D);
float sq = 0.0f;
for (uint j = lane; j < D; j += 32u) {
  const float d = float(xr[j]) - mean;
  sq += d * d;
}
const float var = max(simd_sum(sq) / float(D), 0.0f);
const float rstd = 1.0f / metal::sqrt(var + eps[0]);
for (uint j = lane; j < D; j += 32u) {
  const float y = (float(xr[j]) - mean) * rstd;
  outr[j] = T(y * (1.0f + float(scr[j])) + float(shr[j]));
}
