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
// The computation is mck_matvec_block (matvec_block.cuh, passed in the header).
mck_matvec_block<T, I, OUT, NB, QB, GS, NORM, EPI, NW, RPW, false>(blockIdx.x, x, w, scales, biases,
                                                                   norm_w, residual, params, y, [] {});
