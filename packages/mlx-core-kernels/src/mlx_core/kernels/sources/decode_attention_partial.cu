// Split-K flash-decoding, pass 1: attention of one query token over one split of the keys.
// Body of an mx.fast.cuda_kernel (inputs not forced contiguous: strides are honoured).
// Inputs: queries [B, Hq, 1, D] (or, PACKED, the fused projection output [B, 1, (Hq + 2 Hkv) * D],
//         row-contiguous: queries, then keys, then values of the new token), keys / values
//         [B, Hkv, Lk, D] (dtype T, any strides), lengths [B] int32 (valid keys per batch entry),
//         params float32 (softmax scale; PACKED: then RMSNorm eps, RoPE input scale), k_new / v_new
//         [B, Hkv, 1, D] (read when APPEND and not PACKED), q_norm / k_norm [D] T (QK_NORM), inv_freq
//         [D / 2] float32 (ROPE). PACKED: lengths is [1], the write position.
// PACKED: the kernel prepares the new token itself: per-head RMSNorm of queries and keys (QK_NORM,
// rounded like mx.fast.rms_norm), RoPE at position lengths[b] - 1 (ROPE 1: halves rotated, 2:
// interleaved pairs; rounded to T like mx.fast.rope), then appends the key/value (PACKED implies APPEND).
// APPEND: key/value row lengths[b] - 1 is the new token: it comes from registers, and the block of
// split 0 writes it into keys / values at that row *in place* (the caller owns those buffers and
// wants them updated; no other block of this launch reads that row from memory).
// Outputs: part_o [B, Hq, splits, D] float32 (unnormalised), part_ml [B, Hq, splits, 2] float32
//          (running max in log2 units, sum of exponentials), next_pos [4] int32 (PACKED: [0] = position + 1),
//          out [B, Hq * D] T (FOLD: the merged result, as pass 2 writes it; else unwritten).
// FOLD: counters [>= B * Hkv] int32, zero before the launch and after it (see the end of the kernel).
// Template: T, G (query heads per kv head), EPL (D / 32 elements per lane), NW (warps per block), RIF (key
//           rows each warp has in flight), APPEND, PACKED, QK_NORM, ROPE, FOLD.
// Launch: grid = (B * Hkv * splits * NW * 32, 1, 1), threadgroup = (NW * 32, 1, 1). One block per
// (batch, kv head, split): each K/V row is read once and used for all G query heads of the group.
constexpr int DD = EPL * 32;
const int B = queries_shape[0];
const int Hkv = keys_shape[1];
const int Hq = G * Hkv;
const int Lk = keys_shape[2];
const int splits = static_cast<int>(gridDim.x) / (B * Hkv);
const int blk = static_cast<int>(blockIdx.x);
const int bkv = blk / splits;
const int split = blk - bkv * splits;
const int b = bkv / Hkv;
const int kvh = bkv - b * Hkv;
const int warp = static_cast<int>(threadIdx.x) / 32;
const int lane = static_cast<int>(threadIdx.x) & 31;

// PACKED: `lengths` is the write position (one for the whole batch); the kernel also writes position + 1
// to next_pos, the cache's next position (no separate kernel for the increment).
int len = PACKED ? lengths[0] + 1 : lengths[static_cast<long long>(b) * lengths_strides[0]];
if (PACKED && blk == 0 && threadIdx.x == 0) {
  next_pos[0] = len;
}
len = len < 0 ? 0 : (len > Lk ? Lk : len);
const int chunk = (len + splits - 1) / splits;
const int t0 = split * chunk;
const int t1 = (t0 + chunk < len) ? (t0 + chunk) : len;

// Scaled query rows in registers; log2(e) folded in so the softmax uses exp2f.
const float qscale = params[0] * 1.4426950408889634f;
const long long new_row = (APPEND || PACKED) ? static_cast<long long>(len) - 1 : -1;
float qr[G][EPL];
float kn[EPL];  // the new token's key and value (APPEND / PACKED)
float vn[EPL];
if constexpr (PACKED) {
  const T* tok = queries + static_cast<long long>(b) * queries_strides[0];
  const float eps = params[1];
  const float in_scale = params[2];
  const float pos = static_cast<float>(new_row < 0 ? 0 : new_row);
  // One head of D values, lane holding [lane * EPL, lane * EPL + EPL): optional RMSNorm, then RoPE.
  auto prepare = [&](const T* head, const T* norm_w, bool rotate, float* out) {
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      out[i] = static_cast<float>(head[lane * EPL + i]);
    }
    if (QK_NORM && norm_w != nullptr) {
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        ss += out[i] * out[i];
      }
      const float inv = rsqrtf(mck_warp_sum(ss) / static_cast<float>(DD) + eps);
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        const T normed = static_cast<T>(out[i] * inv);
        out[i] = static_cast<float>(static_cast<T>(static_cast<float>(norm_w[lane * EPL + i]) * static_cast<float>(normed)));
      }
    }
    if (ROPE != 0 && rotate) {
      if (in_scale != 1.0f) {
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
          out[i] = static_cast<float>(static_cast<T>(out[i] * in_scale));
        }
      }
      float rot[EPL];
      if constexpr (ROPE == 1) {
        // Halves: element d pairs with d +- D/2, which sits in lane ^ 16 at the same slot.
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
          const float other = __shfl_xor_sync(0xffffffffu, out[i], 16);
          const int d = lane * EPL + i;
          const int j = d < DD / 2 ? d : d - DD / 2;
          float sn;
          float cs;
          sincosf(pos * inv_freq[j], &sn, &cs);
          rot[i] = d < DD / 2 ? out[i] * cs - other * sn : out[i] * cs + other * sn;
        }
      } else {
        // Interleaved pairs (2j, 2j + 1), both in this lane (EPL is even).
#pragma unroll
        for (int i = 0; i < EPL; i += 2) {
          const int j = (lane * EPL + i) / 2;
          float sn;
          float cs;
          sincosf(pos * inv_freq[j], &sn, &cs);
          rot[i] = out[i] * cs - out[i + 1] * sn;
          rot[i + 1] = out[i] * sn + out[i + 1] * cs;
        }
      }
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        out[i] = static_cast<float>(static_cast<T>(rot[i]));
      }
    }
  };
#pragma unroll
  for (int g = 0; g < G; ++g) {
    prepare(tok + static_cast<long long>(kvh * G + g) * DD, q_norm, true, qr[g]);
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      qr[g][i] *= qscale;
    }
  }
  prepare(tok + static_cast<long long>(Hq + kvh) * DD, k_norm, true, kn);
  prepare(tok + static_cast<long long>(Hq + Hkv + kvh) * DD, nullptr, false, vn);
} else {
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const long long qoff = static_cast<long long>(b) * queries_strides[0] +
        static_cast<long long>(kvh * G + g) * queries_strides[1];
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      qr[g][i] = static_cast<float>(queries[qoff + static_cast<long long>(lane * EPL + i) * queries_strides[3]]) * qscale;
    }
  }
  if constexpr (APPEND) {
    const T* knew = k_new + static_cast<long long>(b) * k_new_strides[0] + static_cast<long long>(kvh) * k_new_strides[1];
    const T* vnew = v_new + static_cast<long long>(b) * v_new_strides[0] + static_cast<long long>(kvh) * v_new_strides[1];
    mck_load_lane<T, EPL>(knew, k_new_strides[3], false, lane, kn);
    mck_load_lane<T, EPL>(vnew, v_new_strides[3], false, lane, vn);
  }
}

const int row_align = mck_row_align(EPL * static_cast<int>(sizeof(T)));
const long long a = row_align / static_cast<int>(sizeof(T));  // alignment in elements
const bool k_fast = keys_strides[3] == 1 && (reinterpret_cast<unsigned long long>(keys) % row_align) == 0 &&
    keys_strides[0] % a == 0 && keys_strides[1] % a == 0 && keys_strides[2] % a == 0;
const bool v_fast = values_strides[3] == 1 && (reinterpret_cast<unsigned long long>(values) % row_align) == 0 &&
    values_strides[0] % a == 0 && values_strides[1] % a == 0 && values_strides[2] % a == 0;
const T* kbase = keys + static_cast<long long>(b) * keys_strides[0] + static_cast<long long>(kvh) * keys_strides[1];
const T* vbase = values + static_cast<long long>(b) * values_strides[0] + static_cast<long long>(kvh) * values_strides[1];

float m[G];
float l[G];
float acc[G][EPL];
#pragma unroll
for (int g = 0; g < G; ++g) {
  m[g] = mck_neg_inf();
  l[g] = 0.0f;
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    acc[g][i] = 0.0f;
  }
}

if ((APPEND || PACKED) && split == 0 && warp == 0 && new_row >= 0) {
  T* kdst = const_cast<T*>(kbase) + new_row * keys_strides[2];
  T* vdst = const_cast<T*>(vbase) + new_row * values_strides[2];
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    const long long d = lane * EPL + i;
    kdst[d * keys_strides[3]] = static_cast<T>(kn[i]);
    vdst[d * values_strides[3]] = static_cast<T>(vn[i]);
  }
}

auto load_row = [&](int t, float* kr, float* vr) {
  if ((APPEND || PACKED) && t == new_row) {
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      kr[i] = kn[i];
      vr[i] = vn[i];
    }
  } else {
    mck_load_lane<T, EPL>(kbase + static_cast<long long>(t) * keys_strides[2], keys_strides[3], k_fast, lane, kr);
    mck_load_lane<T, EPL>(vbase + static_cast<long long>(t) * values_strides[2], values_strides[3], v_fast, lane, vr);
  }
};
auto accumulate = [&](const float* kr, const float* vr) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float part = 0.0f;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      part += qr[g][i] * kr[i];
    }
    const float s = mck_warp_sum(part);
    const float mn = fmaxf(m[g], s);
    const float corr = exp2f(m[g] - mn);
    const float p = exp2f(s - mn);
    l[g] = l[g] * corr + p;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      acc[g][i] = acc[g][i] * corr + p * vr[i];
    }
    m[g] = mn;
  }
};
// RIF rows per iteration: all their loads are in flight before any is used (the loop is bound by memory
// latency, not bandwidth, at the few rows per warp a decode split holds).
for (int t = t0 + warp; t < t1; t += RIF * NW) {
  float kr[RIF][EPL];
  float vr[RIF][EPL];
#pragma unroll
  for (int r = 0; r < RIF; ++r) {
    if (t + r * NW < t1) {
      load_row(t + r * NW, kr[r], vr[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < RIF; ++r) {
    if (t + r * NW < t1) {
      accumulate(kr[r], vr[r]);
    }
  }
}

// Merge the NW warps of this block through shared memory, then write this split's partials.
__shared__ float sm_m[NW][G];
__shared__ float sm_l[NW][G];
__shared__ float sm_o[NW][G][DD];
#pragma unroll
for (int g = 0; g < G; ++g) {
  if (lane == 0) {
    sm_m[warp][g] = m[g];
    sm_l[warp][g] = l[g];
  }
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    sm_o[warp][g][lane * EPL + i] = acc[g][i];
  }
}
__syncthreads();
for (int idx = static_cast<int>(threadIdx.x); idx < G * DD; idx += NW * 32) {
  const int g = idx / DD;
  const int d = idx - g * DD;
  float mx_ = mck_neg_inf();
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    mx_ = fmaxf(mx_, sm_m[w][g]);
  }
  float lsum = 0.0f;
  float osum = 0.0f;
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    const float mw = sm_m[w][g];
    if (mw != mck_neg_inf()) {
      const float wt = exp2f(mw - mx_);
      lsum += sm_l[w][g] * wt;
      osum += sm_o[w][g][d] * wt;
    }
  }
  const long long prow = (static_cast<long long>(b) * Hq + kvh * G + g) * splits + split;
  part_o[prow * DD + d] = osum;
  if (d == 0) {
    part_ml[prow * 2] = mx_;
    part_ml[prow * 2 + 1] = lsum;
  }
}

// FOLD: the merge of pass 2 in the same launch. Each block fences its partials and counts itself in
// counters[batch * Hkv + kv head] (caller-owned int32, zero between launches); the block that arrives
// last merges every split of its G query heads into `out` and resets the counter to zero (CUDA's
// threadFenceReduction pattern; launches sharing `counters` must not run concurrently). The merge is
// latency-bound, so nothing in it loops over splits one load at a time: a warp per query head takes the
// max and the weights with its lanes over the splits, then every lane sums its EPL output elements with
// FR splits' loads in flight.
if constexpr (FOLD) {
  __shared__ bool last_block;
  constexpr int FW = G < NW ? G : NW;  // warps that merge (one query head each)
  __shared__ float fold_w[FW][256];  // one weight per split (decode_attention._MAX_SPLITS = 256)
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = const_cast<int*>(counters) + bkv;
    last_block = atomicAdd(counter, 1) == splits - 1;
    if (last_block) {
      atomicExch(counter, 0);
    }
  }
  __syncthreads();
  if (last_block) {
    __threadfence();
    constexpr int FR = EPL >= 32 ? 1 : (32 / EPL > 16 ? 16 : 32 / EPL);  // ~32 floats of loads in flight
    for (int g = warp; g < G; g += NW) {
      const long long hrow = static_cast<long long>(b) * Hq + kvh * G + g;
      const float* ml = part_ml + hrow * splits * 2;
      float m_max = mck_neg_inf();
      for (int s = lane; s < splits; s += 32) {
        m_max = fmaxf(m_max, __ldcg(ml + 2 * s));
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        m_max = fmaxf(m_max, __shfl_xor_sync(0xffffffffu, m_max, off));
      }
      float l_part = 0.0f;
      for (int s = lane; s < splits; s += 32) {
        const float ms = __ldcg(ml + 2 * s);
        const float wt = ms == mck_neg_inf() ? 0.0f : exp2f(ms - m_max);
        fold_w[warp][s] = wt;
        l_part += __ldcg(ml + 2 * s + 1) * wt;
      }
      const float l_total = mck_warp_sum(l_part);
      const float inv_sum = l_total > 0.0f ? 1.0f / l_total : 0.0f;
      __syncwarp();
      const float* po = part_o + hrow * splits * DD + lane * EPL;
      float o[EPL];
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        o[i] = 0.0f;
      }
      for (int s0 = 0; s0 < splits; s0 += FR) {
        float pv[FR][EPL];
#pragma unroll
        for (int j = 0; j < FR; ++j) {
          if (s0 + j < splits) {
#pragma unroll
            for (int i = 0; i < EPL; ++i) {
              pv[j][i] = __ldcg(po + static_cast<long long>(s0 + j) * DD + i);
            }
          }
        }
#pragma unroll
        for (int j = 0; j < FR; ++j) {
          if (s0 + j < splits) {
            const float wt = fold_w[warp][s0 + j];
#pragma unroll
            for (int i = 0; i < EPL; ++i) {
              o[i] += wt * pv[j][i];
            }
          }
        }
      }
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        out[hrow * DD + lane * EPL + i] = static_cast<T>(o[i] * inv_sum);
      }
      __syncwarp();  // the next head of this warp rewrites fold_w[warp]
    }
  }
}
