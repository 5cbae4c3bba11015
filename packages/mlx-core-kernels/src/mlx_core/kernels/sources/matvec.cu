// Fused decode matrix-vector product: y = epilogue(W . prologue(x)) for a few input rows.
// Body of an mx.fast.cuda_kernel (inputs row-contiguous).
// Inputs: x [NB, I] T; w: T [O, I] (QB == 0) or uint32 [O, I * QB / 32] (QB = 4 or 8: MLX affine
//         quantization, value j of a word in bits [QB * j, QB * j + QB), w = scale * q + bias);
//         scales / biases [O, I / GS] T (read when QB > 0); norm_w [I] T (read when NORM);
//         residual [NB, OUT] T (read when EPI == 1); params [1] float32 (the RMSNorm eps).
// Output: y [NB, OUT] T with OUT = O (EPI 0: plain, EPI 1: residual + W.x) or O / 2 (EPI 2: SwiGLU,
//         rows j and j + OUT of W are gate and up: y = silu(gate) * up).
// Rounding follows the unfused ops: RMSNorm gives T(w * T(x * rsqrt(mean(x^2) + eps))), every matvec
// result is rounded to T before the residual add or the SwiGLU.
// Template: T, I, OUT, NB, QB, GS, NORM, EPI, NW (warps per block), RPW (output rows per warp).
// Launch: grid = (ceil(OUT / (NW * RPW)) * NW * 32, 1, 1), threadgroup = (NW * 32, 1, 1).
constexpr int VALS = QB == 0 ? 16 / static_cast<int>(sizeof(T)) : 128 / (QB == 0 ? 8 : QB);  // per 16 B
constexpr int K = I / (VALS * 32);  // 16-byte chunks per lane per weight row
constexpr int U = K < 8 ? K : 8;    // chunks in flight per lane
constexpr int NR = EPI == 2 ? 2 : 1;  // weight rows per output row
const int tid = static_cast<int>(threadIdx.x);
const int warp = tid / 32;
const int lane = tid & 31;

__shared__ __align__(16) T xs[NB * I];
__shared__ __align__(16) T ws[NORM ? I : 1];
__shared__ float xsum[QB == 0 ? 1 : NB * (I / VALS)];
__shared__ float red[NW][NB];

// 1. Stage the input rows (and the norm weight) in shared memory, 16-byte copies when aligned; with NORM
// each thread also sums the squares of what it copied, so the prologue costs one global round trip.
constexpr int XV = 16 / static_cast<int>(sizeof(T));
float ss[NB];
#pragma unroll
for (int nb = 0; nb < NB; ++nb) {
  ss[nb] = 0.0f;
}
const bool vec_ok = mck_aligned16(x) && (!NORM || mck_aligned16(norm_w));
for (int c = tid; c < (vec_ok ? NB * I / XV : NB * I); c += NW * 32) {
  const int width = vec_ok ? XV : 1;
  const int first = c * width;
  if (vec_ok) {
    reinterpret_cast<uint4*>(xs)[c] = reinterpret_cast<const uint4*>(x)[c];
    if (NORM && first < I) {
      reinterpret_cast<uint4*>(ws)[c] = reinterpret_cast<const uint4*>(norm_w)[c];
    }
  } else {
    xs[c] = x[c];
    if (NORM && c < I) {
      ws[c] = norm_w[c];
    }
  }
  if constexpr (NORM) {
    const int row_of = first / I;
    float part = 0.0f;
    for (int e = 0; e < width; ++e) {
      const float v = static_cast<float>(xs[first + e]);
      part += v * v;
    }
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      ss[nb] += nb == row_of ? part : 0.0f;
    }
  }
}

// 2. RMSNorm prologue, computed by every block (x is a few KB).
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

// 3. Quantized weights: the sum of x over each 16-byte chunk's values (the bias term).
if constexpr (QB != 0) {
  for (int c = tid; c < NB * (I / VALS); c += NW * 32) {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < VALS; ++e) {
      s += static_cast<float>(xs[c * VALS + e]);
    }
    xsum[c] = s;
  }
  __syncthreads();
}

// 4. One warp per output row: stream the weight row(s) once, dot with every input row.
const long long first_row = (static_cast<long long>(blockIdx.x) * NW + warp) * RPW;
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
    uint4 wv[NR][U];
#pragma unroll
    for (int n = 0; n < NR; ++n) {
      const long long wrow = row + n * OUT;
      const uint4* wr = reinterpret_cast<const uint4*>(w) + wrow * (I / VALS);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (k0 + u < K) {
          wv[n][u] = wr[(k0 + u) * 32 + lane];
        }
      }
    }
#pragma unroll
    for (int n = 0; n < NR; ++n) {
      const long long wrow = row + n * OUT;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (k0 + u >= K) {
          continue;
        }
        const int chunk = (k0 + u) * 32 + lane;
        const int base = chunk * VALS;
        if constexpr (QB == 0) {
          const T* wt = reinterpret_cast<const T*>(&wv[n][u]);
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            const uint4 xv = *reinterpret_cast<const uint4*>(xs + nb * I + base);
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
          const long long g = wrow * (I / GS) + base / GS;
          const float scale = static_cast<float>(scales[g]);
          const float bias = static_cast<float>(biases[g]);
          constexpr int PER_WORD = 32 / (QB == 0 ? 8 : QB);
          constexpr unsigned int MASK = (1u << (QB == 0 ? 8 : QB)) - 1u;
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            float qdot = 0.0f;
#pragma unroll
            for (int wi = 0; wi < 4; ++wi) {
              const unsigned int word = words[wi];
              const mck_row<T, PER_WORD> xr =
                  *reinterpret_cast<const mck_row<T, PER_WORD>*>(xs + nb * I + base + wi * PER_WORD);
#pragma unroll
              for (int j = 0; j < PER_WORD; ++j) {
                const float q = static_cast<float>((word >> (QB * j)) & MASK);
                qdot += q * static_cast<float>(xr.v[j]);
              }
            }
            acc[n][nb] += scale * qdot + bias * xsum[nb * (I / VALS) + chunk];
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
