// A decoder block's MLP for a few tokens in one launch: y = x + W_down . swiglu(W_gate_up . rmsnorm(x)).
// Body of an mx.fast.cuda_kernel (inputs row-contiguous); header: common.cuh + matvec_block.cuh.
// Inputs: x [NB, I] T; gu_w: T [2 H, I] (GU_QB == 0) or uint32 packed (GU_QB = 4 or 8, MLX affine), gate rows
//         then up rows; gu_scales / gu_biases [2 H, I / GU_GS] T (read when GU_QB > 0); norm_w [I] T;
//         down_w: T [I, H] or uint32 packed (D_QB, D_GS), down_scales / down_biases; params [1] float32 (the
//         RMSNorm eps); counters [>= 3] int32, zero before the launch and after it.
// Outputs: y [NB, I] T; h [NB, H] T (the SwiGLU activations, which the down blocks read back).
// Two phases of mck_matvec_block (matvec_block.cuh), with the rounding of two `fused_matvec` launches:
// gate/up blocks write h, down blocks wait until every gate/up block is done and read h through L2.
// Blocks take work in the order they start (mck_block_ticket on counters[0]): gate/up first, so a down block
// only ever waits for blocks that are already running (no deadlock whatever the GPU's size). counters[1] counts
// finished gate/up blocks, counters[2] finished down blocks; the last down block resets all three.
// Launches sharing `counters` must not run concurrently.
// Template: T, I, H, NB, GU_QB, GU_GS, D_QB, D_GS, NW (warps per block), GU_RPW, D_RPW (rows per warp).
// Launch: grid = ((GU_BLOCKS + D_BLOCKS) * NW * 32, 1, 1), threadgroup = (NW * 32, 1, 1).
constexpr int GU_BLOCKS = (H + NW * GU_RPW - 1) / (NW * GU_RPW);
constexpr int D_BLOCKS = (I + NW * D_RPW - 1) / (NW * D_RPW);
int* const ctr = const_cast<int*>(counters);
const int blk = mck_block_ticket(ctr);
if (blk < GU_BLOCKS) {
  mck_matvec_block<T, I, H, NB, GU_QB, GU_GS, true, 2, NW, GU_RPW, false>(
      static_cast<unsigned int>(blk), x, gu_w, gu_scales, gu_biases, norm_w, static_cast<const T*>(nullptr), params,
      h, [] {});
  mck_block_signal(ctr + 1);  // the block's rows of h are visible before it counts as done
  return;
}
// Down projection: issue the first weight loads, wait until all of h is written, then read it through L2.
auto wait_for_h = [&]() { mck_block_wait_for(ctr + 1, GU_BLOCKS); };
mck_matvec_block<T, H, I, NB, D_QB, D_GS, false, 1, NW, D_RPW, true>(
    static_cast<unsigned int>(blk - GU_BLOCKS), h, down_w, down_scales, down_biases, static_cast<const T*>(nullptr),
    x, params, y, wait_for_h);
mck_block_finish(ctr, D_BLOCKS);
