// Greedy sampling, pass 2 of 2: token = argmax over the row of T(x - T(logsumexp(x))), the first index
// among equal values -- exactly what mx.argmax(logits - mx.logsumexp(logits, -1, keepdims=True), -1)
// returns (the subtraction rounds to T, so logits that differ by less than half a unit of the result's
// last place tie, and the first of them wins).
// Body of an mx.fast.cuda_kernel (inputs row-contiguous).
// Inputs: logits [B, V] T; parts [B, NBLK, 2] float32 and state [>= B] int32 from pass 1 (state is
//         counted up here in place: pass 1's output, read by nothing else).
// Outputs: token [B] int32; picks [B, NBLK, 2] (value as float32, index as int32 bits) per block.
// Every block recomputes the row's log-sum-exp from the NBLK partials, picks the best of its slice and
// counts itself done; the last block of the row (threadFenceReduction pattern) picks among the blocks.
// Template: T, V, NBLK, NT as in pass 1. Launch: grid = (NBLK * NT, B, 1), threadgroup = (NT, 1, 1).
constexpr int VEC = 16 / static_cast<int>(sizeof(T));
constexpr int CHUNK = ((V + NBLK - 1) / NBLK + VEC - 1) / VEC * VEC;  // as in pass 1
constexpr int NONE = 0x7fffffff;  // no index yet: loses every tie-break
const int tid = static_cast<int>(threadIdx.x);
const int blk = static_cast<int>(blockIdx.x);
const int row = static_cast<int>(blockIdx.y);
const T* x = logits + static_cast<long long>(row) * V;
__shared__ bool last;

// 1. The row's log-sum-exp, rounded to T as mx.logsumexp returns it.
float m = mck_neg_inf();
float s = 0.0f;
for (int j = tid; j < NBLK; j += NT) {
  const float* p = parts + (static_cast<long long>(row) * NBLK + j) * 2;
  mck_lse_push(m, s, p[0], p[1]);
}
mck_block_lse<NT>(m, s);
const float lse = static_cast<float>(static_cast<T>(m + logf(s)));

// 2. The best (value, first index) of this block's slice, then of the block.
const bool fast = V % VEC == 0 && mck_aligned16(logits);
const int begin = blk * CHUNK;
const int end = begin + CHUNK < V ? begin + CHUNK : V;
float bv = mck_neg_inf();
int bi = NONE;
for (int i = begin + tid * VEC; i < end; i += NT * VEC) {
  const int n = end - i < VEC ? end - i : VEC;
  float v[VEC];
  mck_load_floats<T, VEC>(x + i, n, fast, 0.0f, v);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    if (k < n) {
      mck_argmax_push(bv, bi, static_cast<float>(static_cast<T>(v[k] - lse)), i + k);
    }
  }
}
mck_block_argmax<NT>(bv, bi);
if (tid == 0) {
  float* out = picks + (static_cast<long long>(row) * NBLK + blk) * 2;
  out[0] = bv;
  out[1] = __int_as_float(bi);
  __threadfence();
  int* counter = const_cast<int*>(state) + row;
  last = atomicAdd(counter, 1) == NBLK - 1;
}
__syncthreads();

// 3. The last block of the row: the best over the blocks (in block order, so the first index wins ties).
if (last) {
  __threadfence();
  bv = mck_neg_inf();
  bi = NONE;
  for (int j = tid; j < NBLK; j += NT) {
    const float2 p = __ldcg(reinterpret_cast<const float2*>(picks) + static_cast<long long>(row) * NBLK + j);
    mck_argmax_push(bv, bi, p.x, __float_as_int(p.y));
  }
  mck_block_argmax<NT>(bv, bi);
  if (tid == 0) {
    token[row] = bi == NONE ? 0 : bi;
  }
}
