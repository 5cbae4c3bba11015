// Fused decode matrix-vector product as a device function: one block's rows of
// y = epilogue(W . prologue(x)) for a few input rows. The body of mlx_core_matvec (matvec.cu), and a
// phase of kernels that compute x themselves (decode attention's output projection).
// Inputs: x [NB, I] T; w: T [O, I] (QB == 0) or uint32 [O, I * QB / 32] (QB = 4 or 8: MLX affine
//         quantization, value j of a word in bits [QB * j, QB * j + QB), w = scale * q + bias);
//         scales / biases [O, I / GS] T (read when QB > 0); norm_w [I] T (read when NORM);
//         residual [NB, OUT] T (read when EPI == 1); params [1] float32 (the RMSNorm eps).
// Output: y [NB, OUT] T with OUT = O (EPI 0: plain, EPI 1: residual + W.x) or O / 2 (EPI 2: SwiGLU,
//         rows j and j + OUT of W are gate and up: y = silu(gate) * up).
// Rounding follows the unfused ops: RMSNorm gives T(w * T(x * rsqrt(mean(x^2) + eps))), every matvec
// result is rounded to T before the residual add or the SwiGLU.
// Template: T, I, OUT, NB, QB, GS, NORM, EPI, NW (warps per block), RPW (output rows per warp).
// Called by all NW * 32 threads of a block; ceil(OUT / (NW * RPW)) blocks, `block` = 0, 1, ..., cover every row.
// `block` is the block's index in the launch (rows block * NW * RPW ...); `wait_for_x()` runs after the first
// weight loads are issued and before x is read (a no-op for a kernel launched after x was written). X_COHERENT
// reads x through L2 only (ld.global.cg), for an x that other blocks of the same launch wrote.
template <typename T, int I, int OUT, int NB, int QB, int GS, bool NORM, int EPI, int NW, int RPW, bool X_COHERENT,
          typename Wait>
__device__ __forceinline__ void mck_matvec_block(unsigned int block, const T* x, const void* w, const T* scales, const T* biases,
                                                 const T* norm_w, const T* residual, const float* params, T* y,
                                                 Wait wait_for_x) {
  constexpr int XV = 16 / static_cast<int>(sizeof(T));  // activation values per 16-byte slot
  constexpr int VALS = QB == 0 ? XV : 128 / (QB == 0 ? 8 : QB);  // weight values per 16-byte chunk
  constexpr int K = I / (VALS * 32);  // 16-byte chunks per lane per weight row
  constexpr int U = K < 8 ? K : 8;    // chunks in flight per lane
  constexpr int NR = EPI == 2 ? 2 : 1;  // weight rows per output row
  constexpr int SPC = VALS / XV;       // shared-memory slots per weight chunk (1 for dense weights)
  constexpr int SLOTS = I / XV;        // slots per input row
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int lane = tid & 31;

  __shared__ __align__(16) T xs[NB * I];
  __shared__ __align__(16) T ws[NORM ? I : 1];
  __shared__ float xsum[QB == 0 ? 1 : NB * (I / VALS)];
  __shared__ float red[NW][NB];

  // Shared layout: lane l reads the SPC slots of its chunk c; a quarter warp (8 lanes, one 128-byte
  // wavefront) must hit 8 different 16-byte bank groups, so slot e of chunk c sits at c * SPC + (e ^ swz(c)),
  // swz(c) counting the groups of chunks that share a 128-byte row (identity for dense weights, SPC = 1).
  constexpr int CHUNKS_PER_ROW = SPC >= 8 ? 1 : 8 / SPC;
  constexpr int SWZ_MASK = (SPC >= 8 ? 8 : SPC) - 1;
  auto slot_of = [](int s) -> int {
    const int c = s / SPC;
    const int e = s - c * SPC;
    return c * SPC + (e ^ ((c / CHUNKS_PER_ROW) & SWZ_MASK));
  };

  // 0. Start streaming this warp's first weight tile (and its scales/biases) before the prologue: the
  // weights do not depend on x, so their latency overlaps the staging and the norm.
  const long long first_row = (static_cast<long long>(block) * NW + warp) * RPW;
  uint4 wv[NR][U];
  T wscale[NR][U];  // kept as loaded: converting right after the load would wait for it there
  T wbias[NR][U];
  auto load_tile = [&](long long row, int k0) {
  #pragma unroll
    for (int n = 0; n < NR; ++n) {
      const long long wrow = row + n * OUT;
      const uint4* wr = reinterpret_cast<const uint4*>(w) + wrow * (I / VALS);
  #pragma unroll
      for (int u = 0; u < U; ++u) {
        if (row < OUT && k0 + u < K) {
          const int chunk = (k0 + u) * 32 + lane;
          wv[n][u] = wr[chunk];
          if constexpr (QB != 0) {
            const long long g = wrow * (I / GS) + (chunk * VALS) / GS;
            wscale[n][u] = scales[g];
            wbias[n][u] = biases[g];
          }
        }
      }
    }
  };
  load_tile(first_row, 0);
  wait_for_x();  // the weights do not depend on x: their loads are in flight while x is awaited

  // 1. Stage the input rows (and the norm weight) in shared memory, 16-byte copies when aligned; with NORM
  // each thread also sums the squares of what it copied, so the prologue costs one global round trip.
  float ss[NB];
  #pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    ss[nb] = 0.0f;
  }
  const bool vec_ok = mck_aligned16(x) && (!NORM || mck_aligned16(norm_w));
  if (vec_ok) {
    // Four 16-byte loads in flight per thread before any is stored (a dependent load-store loop would
    // pay one memory round trip per iteration).
    constexpr int STRIDE = NW * 32;
    constexpr int BATCH = 4;
    for (int c0 = tid; c0 < NB * SLOTS; c0 += BATCH * STRIDE) {
      uint4 v[BATCH];
      uint4 nv[BATCH];
  #pragma unroll
      for (int j = 0; j < BATCH; ++j) {
        const int c = c0 + j * STRIDE;
        if (c < NB * SLOTS) {
          v[j] = X_COHERENT ? __ldcg(reinterpret_cast<const uint4*>(x) + c) : reinterpret_cast<const uint4*>(x)[c];
          if (NORM && c < SLOTS) {
            nv[j] = reinterpret_cast<const uint4*>(norm_w)[c];
          }
        }
      }
  #pragma unroll
      for (int j = 0; j < BATCH; ++j) {
        const int c = c0 + j * STRIDE;
        if (c >= NB * SLOTS) {
          break;
        }
        const int row_of = c / SLOTS;
        const int s = c - row_of * SLOTS;
        const int dst = row_of * SLOTS + slot_of(s);
        reinterpret_cast<uint4*>(xs)[dst] = v[j];
        if constexpr (NORM) {
          if (row_of == 0) {
            reinterpret_cast<uint4*>(ws)[dst] = nv[j];
          }
          const T* vt = reinterpret_cast<const T*>(&v[j]);
          float part = 0.0f;
  #pragma unroll
          for (int e = 0; e < XV; ++e) {
            const float f = static_cast<float>(vt[e]);
            part += f * f;
          }
  #pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            ss[nb] += nb == row_of ? part : 0.0f;
          }
        }
      }
    }
  } else {
    for (int c = tid; c < NB * I; c += NW * 32) {
      const int row_of = c / I;
      const int i = c - row_of * I;
      const int dst = row_of * I + slot_of(i / XV) * XV + i % XV;
      const T v = X_COHERENT ? __ldcg(x + c) : x[c];
      xs[dst] = v;
      if constexpr (NORM) {
        if (row_of == 0) {
          ws[dst] = norm_w[i];
        }
        const float f = static_cast<float>(v);
  #pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
          ss[nb] += nb == row_of ? f * f : 0.0f;
        }
      }
    }
  }

  // 2. RMSNorm prologue, computed by every block (x is a few KB). x and the norm weight share the layout.
  if constexpr (NORM) {
  #pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const float total = mck_warp_sum(ss[nb]);
      if (lane == 0) {
        red[warp][nb] = total;
      }
    }
    __syncthreads();
    float inv[NB];
  #pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      float total = 0.0f;
  #pragma unroll
      for (int w_ = 0; w_ < NW; ++w_) {
        total += red[w_][nb];
      }
      inv[nb] = rsqrtf(total / static_cast<float>(I) + params[0]);
    }
    for (int i = tid; i < NB * I; i += NW * 32) {
      const int nb = i / I;
      float scale = inv[0];
  #pragma unroll
      for (int r = 1; r < NB; ++r) {
        scale = nb == r ? inv[r] : scale;
      }
      const T normed = static_cast<T>(static_cast<float>(xs[i]) * scale);
      xs[i] = static_cast<T>(static_cast<float>(ws[i - nb * I]) * static_cast<float>(normed));
    }
  }
  __syncthreads();

  // 3. Quantized weights: the sum of x over each chunk's values (the bias term). A thread reads its chunk's
  // SPC slots as 16-byte loads through slot_of, which keeps a quarter warp on 8 different bank groups (value by
  // value reads of consecutive chunks conflicted 4-way and took ~2.3 us of a Llama-3.2-1B down block).
  if constexpr (QB != 0) {
    constexpr int CHUNKS = I / VALS;  // chunks per input row
    for (int c = tid; c < NB * CHUNKS; c += NW * 32) {
      const int row_of = c / CHUNKS;
      const int first_slot = (c - row_of * CHUNKS) * SPC;
      float s = 0.0f;
  #pragma unroll
      for (int e = 0; e < SPC; ++e) {
        const uint4 v = reinterpret_cast<const uint4*>(xs)[row_of * SLOTS + slot_of(first_slot + e)];
        const T* vt = reinterpret_cast<const T*>(&v);
  #pragma unroll
        for (int k = 0; k < XV; ++k) {
          s += static_cast<float>(vt[k]);
        }
      }
      xsum[c] = s;
    }
    __syncthreads();
  }

  // 4. One warp per output row: stream the weight row(s) once, dot with every input row.
  // Quantized values are turned into floats without a conversion instruction: OR-ing the masked bits
  // (q << QB * j, below bit 16) into the mantissa of 2^23 gives 2^23 + q * 2^(QB * j) exactly; one subtraction
  // leaves q * 2^(QB * j), and each power of two gets its own partial sum, scaled back exactly at the end.
  constexpr int PER_WORD = 32 / (QB == 0 ? 8 : QB);
  constexpr int PARTS = PER_WORD / 2;  // values per 16-bit half word
  constexpr unsigned int MASK = (1u << (QB == 0 ? 8 : QB)) - 1u;
  for (int r = 0; r < RPW; ++r) {
    const long long row = first_row + r;
    if (row >= OUT) {
      break;
    }
    float acc[NR][NB];
  #pragma unroll
    for (int n = 0; n < NR; ++n) {
  #pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        acc[n][nb] = 0.0f;
      }
    }
    for (int k0 = 0; k0 < K; k0 += U) {
      if (r > 0 || k0 > 0) {
        load_tile(row, k0);
      }
  #pragma unroll
      for (int n = 0; n < NR; ++n) {
  #pragma unroll
        for (int u = 0; u < U; ++u) {
          if (k0 + u >= K) {
            continue;
          }
          const int chunk = (k0 + u) * 32 + lane;
          if constexpr (QB == 0) {
            const T* wt = reinterpret_cast<const T*>(&wv[n][u]);
  #pragma unroll
            for (int nb = 0; nb < NB; ++nb) {
              const uint4 xv = reinterpret_cast<const uint4*>(xs)[nb * SLOTS + chunk];
              const T* xt = reinterpret_cast<const T*>(&xv);
              float part = 0.0f;
  #pragma unroll
              for (int e = 0; e < VALS; ++e) {
                part += static_cast<float>(wt[e]) * static_cast<float>(xt[e]);
              }
              acc[n][nb] += part;
            }
          } else {
            const unsigned int* words = reinterpret_cast<const unsigned int*>(&wv[n][u]);
  #pragma unroll
            for (int nb = 0; nb < NB; ++nb) {
              uint4 xsl[SPC];
  #pragma unroll
              for (int e = 0; e < SPC; ++e) {
                xsl[e] = reinterpret_cast<const uint4*>(xs)[nb * SLOTS + slot_of(chunk * SPC + e)];
              }
              const T* xt = reinterpret_cast<const T*>(xsl);
              float part[PARTS];
  #pragma unroll
              for (int j = 0; j < PARTS; ++j) {
                part[j] = 0.0f;
              }
  #pragma unroll
              for (int wi = 0; wi < 4; ++wi) {
  #pragma unroll
                for (int h = 0; h < 2; ++h) {
                  const unsigned int bits = h == 0 ? words[wi] : words[wi] >> 16;
  #pragma unroll
                  for (int j = 0; j < PARTS; ++j) {
                    const float q = __int_as_float(static_cast<int>((bits & (MASK << (QB * j))) | 0x4B000000u)) -
                        8388608.0f;
                    part[j] = fmaf(q, static_cast<float>(xt[wi * PER_WORD + h * PARTS + j]), part[j]);
                  }
                }
              }
              float qdot = part[0];
  #pragma unroll
              for (int j = 1; j < PARTS; ++j) {
                qdot += part[j] * __int_as_float((127 - QB * j) << 23);  // exact 2^-(QB * j)
              }
              acc[n][nb] += static_cast<float>(wscale[n][u]) * qdot +
                  static_cast<float>(wbias[n][u]) * xsum[nb * (I / VALS) + chunk];
            }
          }
        }
      }
    }
  #pragma unroll
    for (int n = 0; n < NR; ++n) {
  #pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        acc[n][nb] = mck_warp_sum(acc[n][nb]);
      }
    }
    if (lane < NB) {
      // Lane nb writes input row nb (every lane holds every sum after the xor reduction).
  #pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        if (nb == lane) {
          const long long o = static_cast<long long>(nb) * OUT + row;
          const float a = static_cast<float>(static_cast<T>(acc[0][nb]));
          if constexpr (EPI == 0) {
            y[o] = static_cast<T>(a);
          } else if constexpr (EPI == 1) {
            y[o] = static_cast<T>(static_cast<float>(residual[o]) + a);
          } else {
            const float up = static_cast<float>(static_cast<T>(acc[NR - 1][nb]));
            y[o] = static_cast<T>(mck_swiglu(up, a));
          }
        }
      }
    }
  }
}
