// Greedy sampling, pass 1 of 2: per-block log-sum-exp partials of each logits row.
// Body of an mx.fast.cuda_kernel (inputs row-contiguous).
// Inputs: logits [B, V] T.
// Outputs: parts [B, NBLK, 2] float32: (max, sum of exp(x - max)) over block j's slice of the row;
//          state [>= B] int32: zeroed here (pass 2 counts its finished blocks per row in it).
// Template: T, V, NBLK (blocks per row), NT (threads per block, a multiple of 32, at most 1024).
// Launch: grid = (NBLK * NT, B, 1), threadgroup = (NT, 1, 1).
constexpr int VEC = 16 / static_cast<int>(sizeof(T));            // values per 16-byte load
constexpr int CHUNK = ((V + NBLK - 1) / NBLK + VEC - 1) / VEC * VEC;  // block slice, whole loads
const int tid = static_cast<int>(threadIdx.x);
const int blk = static_cast<int>(blockIdx.x);
const int row = static_cast<int>(blockIdx.y);
const T* x = logits + static_cast<long long>(row) * V;
const bool fast = V % VEC == 0 && mck_aligned16(logits);  // then every row and slice is aligned
const int begin = blk * CHUNK;
const int end = begin + CHUNK < V ? begin + CHUNK : V;

float m = mck_neg_inf();
float s = 0.0f;
for (int i = begin + tid * VEC; i < end; i += NT * VEC) {
  float v[VEC];
  mck_load_floats<T, VEC>(x + i, end - i < VEC ? end - i : VEC, fast, mck_neg_inf(), v);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    mck_lse_push(m, s, v[k], v[k] == mck_neg_inf() ? 0.0f : 1.0f);
  }
}
mck_block_lse<NT>(m, s);
if (tid == 0) {
  float* out = parts + (static_cast<long long>(row) * NBLK + blk) * 2;
  out[0] = m;
  out[1] = s;
  if (blk == 0) {
    state[row] = 0;
  }
}
