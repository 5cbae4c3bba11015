// Fused SwiGLU for Metal: out[i] = silu(gate[i]) * x[i], computed in float32.
// Body of an mx.fast.metal_kernel. Inputs: x, gate (1-D, n elements, dtype T); output: out.
// Template: T, N (elements per thread). Launch: grid = (ceil(n / N), 1, 1) threads.
const uint n = uint(x_shape[0]);
const uint start = thread_position_in_grid.x * uint(N);
if (start >= n) {
  return;
}
const uint stop = min(start + uint(N), n);
for (uint i = start; i < stop; ++i) {
  const float xv = float(x[i]);
  const float g = float(gate[i]);
  out[i] = T(xv * (g / (1.0f + metal::exp(-g))));
}
