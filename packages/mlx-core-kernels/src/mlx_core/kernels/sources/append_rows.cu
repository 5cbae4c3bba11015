// Write one new key/value row per (batch, kv head) into fixed-size caches, in place.
// Body of an mx.fast.cuda_kernel (inputs not forced contiguous: strides are honoured).
// Inputs: keys / values [B, Hkv, L, D] (the caller's buffers, written through const_cast), k_new / v_new
// [B, Hkv, 1, D], position [1] int32 (the row). Output: done [1] float32, a token that later ops take
// as an input so they are ordered after the write. Launch: grid = (B * Hkv * D, 1, 1).
const long long D = keys_shape[3];
const long long H = keys_shape[1];
const long long total = static_cast<long long>(keys_shape[0]) * H * D;
const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
if (idx == 0) {
  done[0] = 0.0f;
}
if (idx >= total) {
  return;
}
const long long d = idx % D;
const long long h = (idx / D) % H;
const long long b = idx / (D * H);
const long long row = position[0];
T* kw = const_cast<T*>(keys);
T* vw = const_cast<T*>(values);
kw[b * keys_strides[0] + h * keys_strides[1] + row * keys_strides[2] + d * keys_strides[3]] =
    k_new[b * k_new_strides[0] + h * k_new_strides[1] + d * k_new_strides[3]];
vw[b * values_strides[0] + h * values_strides[1] + row * values_strides[2] + d * values_strides[3]] =
    v_new[b * v_new_strides[0] + h * v_new_strides[1] + d * v_new_strides[3]];
