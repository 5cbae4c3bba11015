// Split-K flash-decoding, pass 1: attention of one query token over one split of the keys.
// Body of an mx.fast.cuda_kernel (inputs not forced contiguous: strides are honoured).
// Inputs: queries [B, Hq, 1, D] (or, PACKED, the fused projection output [B, 1, (Hq + 2 Hkv) * D],
//         row-contiguous: queries, then keys, then values of the new token), keys / values
//         [B, Hkv, Lk, D] (dtype T, any strides), lengths [B] int32 (valid keys per batch entry),
//         params float32 (softmax scale; PACKED: then RMSNorm eps, RoPE input scale), k_new / v_new
//         [B, Hkv, 1, D] (read when APPEND and not PACKED), q_norm / k_norm [D] T (QK_NORM), inv_freq
//         [D / 2] float32 (ROPE). PACKED: lengths is the write position (one element; the launcher may
//         pass it as the input `position`, which `lengths` then names).
// PACKED: the kernel prepares the new token itself: per-head RMSNorm of queries and keys (QK_NORM,
// rounded like mx.fast.rms_norm), RoPE at position lengths[b] - 1 (ROPE 1: halves rotated, 2:
// interleaved pairs; rounded to T like mx.fast.rope), then appends the key/value (PACKED implies APPEND).
// APPEND: key/value row lengths[b] - 1 is the new token: it comes from registers, and the block of
// split 0 writes it into keys / values at that row *in place* (the caller owns those buffers and
// wants them updated; no other block of this launch reads that row from memory).
// Outputs: part_o [B, Hq, splits, D] float32 (unnormalised), part_ml [B, Hq, splits, 2] float32
//          (running max in log2 units, sum of exponentials), next_pos [4] int32 (PACKED: [0] = position + 1),
//          out [B, Hq * D] T (FOLD: the merged result, as pass 2 writes it; else unwritten), h (OPROJ).
// FOLD: counters [>= B * Hkv, + 3 with OPROJ] int32, zero before the launch and after it (see the end of the
// kernel).
// OPROJ (needs FOLD; header: matvec_block.cuh): the launch also computes the output projection,
// h = o_residual + W_o . out ([O_NB, O_OUT] T; W_o dense T [O_OUT, O_IN] or affine-quantized uint32 with
// o_scales / o_biases, O_QB bits in groups of O_GS), in O_BLOCKS more blocks of O_RPW rows per warp, saving
// a launch per layer. Blocks take work in the order they start (a ticket from counters[B * Hkv]): attention
// items first, so an output block, which waits until every kv head is merged (counters[B * Hkv + 1]), only
// ever waits for blocks that are already running; the last output block to finish resets the counters.
// Template: T, G (query heads per kv head), EPL (D / 32 elements per lane), NW (warps per block), RIF (key
//           rows each warp has in flight), APPEND, PACKED, QK_NORM, ROPE, FOLD, MMA (tensor-core key loop:
//           T bf16/fp16, G <= 8, D 64 or 128; sm_80+, else the SIMT loop is compiled instead), OPROJ, O_IN
//           (Hq * D), O_OUT, O_NB (B), O_QB (0: dense), O_GS, O_RPW, FOLD_SPLITS (FOLD: a multiple of 32 that is
//           at least the splits, so the merge's per-lane arrays and shared memory are no larger than needed).
// Launch: grid = ((B * Hkv * splits + O_BLOCKS) * NW * 32, 1, 1), threadgroup = (NW * 32, 1, 1). One block
// per (batch, kv head, split): each K/V row is read once and used for all G query heads of the group.
constexpr int DD = EPL * 32;
const int B = queries_shape[0];
const int Hkv = keys_shape[1];
const int Hq = G * Hkv;
const int Lk = keys_shape[2];
constexpr int O_BLOCKS = OPROJ ? (O_OUT + NW * O_RPW - 1) / (NW * O_RPW) : 0;
const int splits = (static_cast<int>(gridDim.x) - O_BLOCKS) / (B * Hkv);
int blk = static_cast<int>(blockIdx.x);
if constexpr (OPROJ) {
  // counters[B * Hkv + 0]: tickets taken, + 1: kv heads merged, + 2: output blocks done.
  int* const launch_ctr = const_cast<int*>(counters) + B * Hkv;
  blk = mck_block_ticket(launch_ctr);
  if (blk >= B * Hkv * splits) {
    // Output projection: issue the first weight loads, wait until every kv head's `out` is written, then
    // read it through L2 (other blocks of this launch wrote it).
    auto wait_for_heads = [&]() { mck_block_wait_for(launch_ctr + 1, B * Hkv); };
    mck_matvec_block<T, O_IN, O_OUT, O_NB, O_QB, O_GS, false, 1, NW, O_RPW, true>(
        static_cast<unsigned int>(blk - B * Hkv * splits), out, o_w, o_scales, o_biases, static_cast<const T*>(nullptr),
        o_residual, params, h, wait_for_heads);
    mck_block_finish(launch_ctr, O_BLOCKS);
    return;
  }
}
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
constexpr bool USE_MMA = MMA && MCK_HAS_MMA != 0;
// The tensor-core loop takes keys 16 at a time: its splits start on a multiple of 16.
const int chunk = USE_MMA ? ((len + splits - 1) / splits + 15) / 16 * 16 : (len + splits - 1) / splits;
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
  auto prepare = [&](const T* head, const T* norm_w, bool rotate, float* dst) {
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      dst[i] = static_cast<float>(head[lane * EPL + i]);
    }
    if (QK_NORM && norm_w != nullptr) {
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        ss += dst[i] * dst[i];
      }
      const float inv = rsqrtf(mck_warp_sum(ss) / static_cast<float>(DD) + eps);
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        const T normed = static_cast<T>(dst[i] * inv);
        dst[i] = static_cast<float>(static_cast<T>(static_cast<float>(norm_w[lane * EPL + i]) * static_cast<float>(normed)));
      }
    }
    if (ROPE != 0 && rotate) {
      if (in_scale != 1.0f) {
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
          dst[i] = static_cast<float>(static_cast<T>(dst[i] * in_scale));
        }
      }
      float rot[EPL];
      if constexpr (ROPE == 1) {
        // Halves: element d pairs with d +- D/2, which sits in lane ^ 16 at the same slot.
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
          const float other = __shfl_xor_sync(0xffffffffu, dst[i], 16);
          const int d = lane * EPL + i;
          const int j = d < DD / 2 ? d : d - DD / 2;
          float sn;
          float cs;
          sincosf(pos * inv_freq[j], &sn, &cs);
          rot[i] = d < DD / 2 ? dst[i] * cs - other * sn : dst[i] * cs + other * sn;
        }
      } else {
        // Interleaved pairs (2j, 2j + 1), both in this lane (EPL is even).
#pragma unroll
        for (int i = 0; i < EPL; i += 2) {
          const int j = (lane * EPL + i) / 2;
          float sn;
          float cs;
          sincosf(pos * inv_freq[j], &sn, &cs);
          rot[i] = dst[i] * cs - dst[i + 1] * sn;
          rot[i + 1] = dst[i] * sn + dst[i + 1] * cs;
        }
      }
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        dst[i] = static_cast<float>(static_cast<T>(rot[i]));
      }
    }
  };
#pragma unroll
  for (int g = 0; g < G; ++g) {
    prepare(tok + static_cast<long long>(kvh * G + g) * DD, q_norm, true, qr[g]);
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
      qr[g][i] = static_cast<float>(queries[qoff + static_cast<long long>(lane * EPL + i) * queries_strides[3]]);
    }
  }
  if constexpr (APPEND) {
    const T* knew = k_new + static_cast<long long>(b) * k_new_strides[0] + static_cast<long long>(kvh) * k_new_strides[1];
    const T* vnew = v_new + static_cast<long long>(b) * v_new_strides[0] + static_cast<long long>(kvh) * v_new_strides[1];
    mck_load_lane<T, EPL>(knew, k_new_strides[3], false, lane, kn);
    mck_load_lane<T, EPL>(vnew, v_new_strides[3], false, lane, vn);
  }
}

// The query rows hold T values here (exact); the mma loop reads them from shared memory as T. Then they are
// scaled for the float32 dot products.
__shared__ __align__(16) T sm_q[USE_MMA ? G * DD : 1];
if constexpr (USE_MMA) {
  if (warp == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        sm_q[g * DD + lane * EPL + i] = static_cast<T>(qr[g][i]);
      }
    }
  }
}
#pragma unroll
for (int g = 0; g < G; ++g) {
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    qr[g][i] *= qscale;
  }
}

const int row_align = mck_row_align(EPL * static_cast<int>(sizeof(T)));  // a lane's EPL elements at once
const bool k_fast = mck_rows_aligned(keys, keys_strides, row_align);
const bool v_fast = mck_rows_aligned(values, values_strides, row_align);
const T* kbase = keys + static_cast<long long>(b) * keys_strides[0] + static_cast<long long>(kvh) * keys_strides[1];
const T* vbase = values + static_cast<long long>(b) * values_strides[0] + static_cast<long long>(kvh) * values_strides[1];

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

// Per-warp partials (max in log2 units, sum of exponentials, unnormalised output) meet in shared memory.
// With the mma loop and a new token, slot NW holds that token's own partial (score, 1, value).
constexpr int NS = NW + ((USE_MMA && (APPEND || PACKED)) ? 1 : 0);
__shared__ float sm_m[NS][G];
__shared__ float sm_l[NS][G];
__shared__ float sm_o[NS][G][DD];

// Query head g's (scaled, log2 units) score against one key row held like the queries (EPL per lane).
auto head_score = [&](int g, const float* kr) {
  float part = 0.0f;
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    part += qr[g][i] * kr[i];
  }
  return mck_warp_sum(part);
};

// SIMT loop: a warp per key row, lanes across D, all G heads per row (every dtype and shape).
auto simt_loop = [&]() {
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
      const float s = head_score(g, kr);
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
};

if constexpr (USE_MMA) {
  // Tensor-core loop: a warp takes 16 keys at a time. Scores S = Q K^T come from m16n8k16 mma with the G
  // query heads as rows (rows G..15 are zero) and 8 keys per n-tile; the output is accumulated transposed,
  // O^T += V^T P^T, with 16 d-values per m-tile and the heads as the 8 columns, so the scores' C fragments
  // are already the B fragments of the second mma (no shuffles). The d axis is permuted consistently (it
  // is summed over in Q K^T, and O^T's rows are written back through the same map):
  //  - q.k: the lane with thread-in-group c holds 16-byte chunks c, c + 4, ... of its key row (and of its
  //    query row), so each load is 16 contiguous bytes and four lanes cover 64 contiguous bytes;
  //  - p.v: m-tile mt row rho is d = rho * (D / 16) + mt, so a lane reads D / 16 contiguous values per key.
  // The new token (APPEND / PACKED: the split's last row, written into the cache by this launch) is not
  // read from memory: it becomes slot NW of the block merge, computed here by warp 0.
  // MLX compiles the body with its template values substituted, not as a template: this branch is compiled
  // (not run) for every shape, so it must build everywhere; decode_attention._mma_covers keeps MMA off elsewhere.
  static_assert(!USE_MMA || (G <= 8 && (DD == 64 || DD == 128)), "the mma loop covers G <= 8, D = 64 or 128");
  using Mma = mck_mma_op<T>;
  constexpr int KCH = DD / 32;  // 16-byte chunks of a key row per lane
  constexpr int KS = DD / 16;  // k-steps of q.k, m-tiles of p.v
  const int gid = lane >> 2;
  const int tig = lane & 3;
  // 16-byte loads need unit stride along D and 16-byte aligned rows; other layouts take the SIMT loop
  // (a gathering mma loop needs ~40 more registers, which the common case would pay for).
  const long long ks = keys_strides[2];
  const long long vs = values_strides[2];
  const bool mma_path = mck_rows_aligned(keys, keys_strides, 16) && mck_rows_aligned(values, values_strides, 16);
  const bool has_new = mma_path && (APPEND || PACKED) && new_row >= t0 && new_row < t1;
  const int t_stop = has_new ? t1 - 1 : t1;
  if ((APPEND || PACKED) && warp == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float s = head_score(g, kn);
      if (lane == 0) {
        sm_m[NS - 1][g] = has_new ? s : mck_neg_inf();
        sm_l[NS - 1][g] = 1.0f;
      }
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        sm_o[NS - 1][g][lane * EPL + i] = vn[i];
      }
    }
  }
  __syncthreads();  // sm_q is complete
  uint32_t qf[KCH][4];
#pragma unroll
  for (int j = 0; j < KCH; ++j) {
    mck_load_words<T, 8>(sm_q + gid * DD + (j * 4 + tig) * 8, gid < G, qf[j]);
  }
  if (!mma_path) {
    simt_loop();
  } else {
    float o[KS][4];
#pragma unroll
    for (int mt = 0; mt < KS; ++mt) {
      o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    }
    float m_run = mck_neg_inf();
    float l_part = 0.0f;  // this lane's share of head gid's sum (its 4 keys of each tile)
    for (int tb = t0 + warp * 16; tb < t_stop; tb += NW * 16) {
      // K: rows tb + nt * 8 + gid, chunks j * 4 + tig. V: keys tb + {2c, 2c + 1, 8 + 2c, 9 + 2c} (c = tig),
      // d-values [rho * KS, rho * KS + KS) for rho = gid and gid + 8.
      uint32_t kf[2][KCH][4];
      uint32_t vw[4][2][KS / 2];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int row = tb + nt * 8 + gid;
#pragma unroll
        for (int j = 0; j < KCH; ++j) {
          mck_load_words<T, 8>(kbase + static_cast<long long>(row) * ks + (j * 4 + tig) * 8, row < t_stop, kf[nt][j]);
        }
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int row = tb + (kk >> 1) * 8 + 2 * tig + (kk & 1);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          mck_load_words<T, KS>(vbase + static_cast<long long>(row) * vs + (gid + h * 8) * KS, row < t_stop, vw[kk][h]);
        }
      }
      float sc[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
        for (int st = 0; st < KS; ++st) {
          const int j = st >> 1;
          const int w = (st & 1) * 2;
          Mma::run(sc[nt], qf[j][w], 0u, qf[j][w + 1], 0u, kf[nt][j][w], kf[nt][j][w + 1]);
        }
      }
      // Head gid's scores for keys tb + 2c, 2c + 1, 8 + 2c, 9 + 2c; the other 12 keys are in lanes gid * 4 + ...
      float p[4] = {sc[0][0] * qscale, sc[0][1] * qscale, sc[1][0] * qscale, sc[1][1] * qscale};
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        if (tb + (kk >> 1) * 8 + 2 * tig + (kk & 1) >= t_stop) {
          p[kk] = mck_neg_inf();
        }
      }
      float tmax = fmaxf(fmaxf(p[0], p[1]), fmaxf(p[2], p[3]));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
      const float m_new = fmaxf(m_run, tmax);  // finite: key tb is valid
      const float corr = exp2f(m_run - m_new);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        p[kk] = exp2f(p[kk] - m_new);
      }
      l_part = l_part * corr + ((p[0] + p[1]) + (p[2] + p[3]));
      m_run = m_new;
      // O^T's columns are heads 2c and 2c + 1: their rescale factors live in lanes 8c and 8c + 4.
      const float corr_a = __shfl_sync(0xffffffffu, corr, 8 * tig);
      const float corr_b = __shfl_sync(0xffffffffu, corr, 8 * tig + 4);
      const uint32_t pb0 = Mma::pack(p[0], p[1]);
      const uint32_t pb1 = Mma::pack(p[2], p[3]);
#pragma unroll
      for (int mt = 0; mt < KS; ++mt) {
        o[mt][0] *= corr_a;
        o[mt][1] *= corr_b;
        o[mt][2] *= corr_a;
        o[mt][3] *= corr_b;
        const int w = mt >> 1;
        const unsigned sel = (mt & 1) ? 0x7632u : 0x5410u;  // element mt of two key rows, as one pair
        Mma::run(o[mt], __byte_perm(vw[0][0][w], vw[1][0][w], sel), __byte_perm(vw[0][1][w], vw[1][1][w], sel),
                 __byte_perm(vw[2][0][w], vw[3][0][w], sel), __byte_perm(vw[2][1][w], vw[3][1][w], sel), pb0, pb1);
      }
    }
    l_part += __shfl_xor_sync(0xffffffffu, l_part, 1);
    l_part += __shfl_xor_sync(0xffffffffu, l_part, 2);
    if (tig == 0 && gid < G) {
      sm_m[warp][gid] = m_run;
      sm_l[warp][gid] = l_part;
    }
#pragma unroll
    for (int mt = 0; mt < KS; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int d = (gid + half * 8) * KS + mt;
        if (2 * tig < G) {
          sm_o[warp][2 * tig][d] = o[mt][2 * half];
        }
        if (2 * tig + 1 < G) {
          sm_o[warp][2 * tig + 1][d] = o[mt][2 * half + 1];
        }
      }
    }
  }
} else {
  simt_loop();
}

// Merge the NS slots of this block, then write this split's partials.
__syncthreads();
for (int idx = static_cast<int>(threadIdx.x); idx < G * DD; idx += NW * 32) {
  const int g = idx / DD;
  const int d = idx - g * DD;
  float mx_ = mck_neg_inf();
#pragma unroll
  for (int w = 0; w < NS; ++w) {
    mx_ = fmaxf(mx_, sm_m[w][g]);
  }
  float lsum = 0.0f;
  float osum = 0.0f;
#pragma unroll
  for (int w = 0; w < NS; ++w) {
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
// latency-bound, so it is built to take few round trips to L2: a warp per query head loads every split's
// (max, sum) pair at once (lanes over the splits) together with the first FR splits' partial outputs, which
// do not depend on the weights; every lane then sums its EPL output elements, FR splits' loads at a time.
if constexpr (FOLD) {
  __shared__ bool last_block;
  constexpr int FW = G < NW ? G : NW;  // warps that merge (one query head each)
  static_assert(FOLD_SPLITS % 32 == 0, "FOLD_SPLITS: a multiple of 32");
  constexpr int MS = FOLD_SPLITS / 32;  // (max, sum) pairs per lane
  constexpr int FR = 64 / EPL > 32 ? 32 : 64 / EPL;  // splits per round: ~64 floats of loads in flight
  __shared__ float fold_w[FW][FOLD_SPLITS];  // one weight per split
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
    for (int g = warp; g < G; g += NW) {
      const long long hrow = static_cast<long long>(b) * Hq + kvh * G + g;
      const float2* ml = reinterpret_cast<const float2*>(part_ml + hrow * splits * 2);
      const float* po = part_o + hrow * splits * DD + lane * EPL;
      float pv[FR][EPL];
      auto load_round = [&](int s0) {
#pragma unroll
        for (int j = 0; j < FR; ++j) {
          if (s0 + j < splits) {
            const float* src = po + static_cast<long long>(s0 + j) * DD;
            if constexpr (EPL % 4 == 0) {
#pragma unroll
              for (int i = 0; i < EPL; i += 4) {
                const float4 q4 = __ldcg(reinterpret_cast<const float4*>(src + i));
                pv[j][i] = q4.x;
                pv[j][i + 1] = q4.y;
                pv[j][i + 2] = q4.z;
                pv[j][i + 3] = q4.w;
              }
            } else {
#pragma unroll
              for (int i = 0; i < EPL; ++i) {
                pv[j][i] = __ldcg(src + i);
              }
            }
          }
        }
      };
      load_round(0);
      float2 mls[MS];
      float m_max = mck_neg_inf();
#pragma unroll
      for (int j = 0; j < MS; ++j) {
        const int sp = lane + 32 * j;
        mls[j] = sp < splits ? __ldcg(ml + sp) : make_float2(mck_neg_inf(), 0.0f);
        m_max = fmaxf(m_max, mls[j].x);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        m_max = fmaxf(m_max, __shfl_xor_sync(0xffffffffu, m_max, off));
      }
      float l_part = 0.0f;
#pragma unroll
      for (int j = 0; j < MS; ++j) {
        const int sp = lane + 32 * j;
        if (sp < splits) {
          const float wt = mls[j].x == mck_neg_inf() ? 0.0f : exp2f(mls[j].x - m_max);
          fold_w[warp][sp] = wt;
          l_part += mls[j].y * wt;
        }
      }
      const float l_total = mck_warp_sum(l_part);
      const float inv_sum = l_total > 0.0f ? 1.0f / l_total : 0.0f;
      __syncwarp();
      float o[EPL];
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        o[i] = 0.0f;
      }
      for (int s0 = 0; s0 < splits; s0 += FR) {
        if (s0 > 0) {
          load_round(s0);
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
    if constexpr (OPROJ) {
      mck_block_signal(const_cast<int*>(counters) + B * Hkv + 1);  // this kv head's `out` is merged
    }
  }
}
