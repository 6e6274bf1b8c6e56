// The one place that chunks a list of tensors for a fused launch (the idea of apex's
// multi_tensor_apply): kernel arguments carry a table of up to kMaxTensors tensors (Depth pointers
// each: param, grad, momentum, ...) and a block -> (tensor, chunk) map, and the host launches as many
// kernels as the argument size limit requires. Torch-free: every fused multi-tensor op reuses it.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <vector>

namespace stnas::cuda {

// Sizes keep the argument struct under the 4 KB kernel-parameter limit of pre-Hopper toolchains.
template <int Depth>
struct TensorListMeta {
  static constexpr int kMaxTensors = Depth <= 2 ? 48 : 36;
  static constexpr int kMaxBlocks = 320;
  void* addresses[Depth][kMaxTensors];
  int64_t sizes[kMaxTensors];
  uint32_t noise_index[kMaxTensors];
  uint8_t block_to_tensor[kMaxBlocks];
  int32_t block_to_chunk[kMaxBlocks];
};

template <int Depth, class Functor, class... Args>
__global__ void multi_tensor_apply_kernel(int64_t chunk_size, TensorListMeta<Depth> meta, Functor functor,
                                          Args... args) {
  functor(chunk_size, meta, args...);
}

struct TensorRef {
  std::array<void*, 4> pointers;  // the first Depth entries are used
  int64_t size;
  uint32_t noise_index;
};

// Launch `functor` over every chunk of every tensor; returns the first CUDA error (cudaSuccess if none).
template <int Depth, class Functor, class... Args>
cudaError_t multi_tensor_apply(const std::vector<TensorRef>& tensors, int64_t chunk_size, int threads,
                               cudaStream_t stream, Functor functor, Args... args) {
  using Meta = TensorListMeta<Depth>;
  Meta meta{};
  int tensors_in_meta = 0, blocks_in_meta = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const int64_t n = tensors[t].size;
    if (n == 0) continue;
    for (int d = 0; d < Depth; ++d) meta.addresses[d][tensors_in_meta] = tensors[t].pointers[d];
    meta.sizes[tensors_in_meta] = n;
    meta.noise_index[tensors_in_meta] = tensors[t].noise_index;
    ++tensors_in_meta;
    const int64_t chunks = (n + chunk_size - 1) / chunk_size;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[blocks_in_meta] = static_cast<uint8_t>(tensors_in_meta - 1);
      meta.block_to_chunk[blocks_in_meta] = static_cast<int32_t>(c);
      ++blocks_in_meta;
      const bool blocks_full = blocks_in_meta == Meta::kMaxBlocks;
      const bool tensors_full = tensors_in_meta == Meta::kMaxTensors && c == chunks - 1;
      const bool last = t == tensors.size() - 1 && c == chunks - 1;
      if (blocks_full || tensors_full || last) {
        multi_tensor_apply_kernel<Depth><<<blocks_in_meta, threads, 0, stream>>>(chunk_size, meta, functor, args...);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        blocks_in_meta = 0;
        if (c == chunks - 1) {
          tensors_in_meta = 0;
        } else {  // the tensor goes on in the next launch: keep it as entry 0
          for (int d = 0; d < Depth; ++d) meta.addresses[d][0] = meta.addresses[d][tensors_in_meta - 1];
          meta.sizes[0] = meta.sizes[tensors_in_meta - 1];
          meta.noise_index[0] = meta.noise_index[tensors_in_meta - 1];
          tensors_in_meta = 1;
        }
      }
    }
  }
  if (blocks_in_meta > 0) {  // the last tensors were empty ones
    multi_tensor_apply_kernel<Depth><<<blocks_in_meta, threads, 0, stream>>>(chunk_size, meta, functor, args...);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace stnas::cuda
