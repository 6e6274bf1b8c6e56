// The one place that chunks a list of tensors for a fused launch (the idea of apex's
// multi_tensor_apply): kernel arguments carry a table of up to kMaxTensors tensors (Depth pointers
// each: param, grad, momentum, ...) and a list of chunks (tensor, chunk index), and the host launches as
// many kernels as the argument size limit requires. Torch-free: every fused multi-tensor op reuses it.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace stnas::cuda {

// Sizes keep the argument struct under the 4 KB kernel-parameter limit of pre-Hopper toolchains.
template <int Depth>
struct TensorListMeta {
  static constexpr int kMaxTensors = Depth <= 2 ? 48 : 36;
  static constexpr int kMaxChunks = 320;
  void* addresses[Depth][kMaxTensors];
  int64_t sizes[kMaxTensors];
  uint32_t noise_index[kMaxTensors];
  uint8_t chunk_to_tensor[kMaxChunks];
  int32_t chunk_index[kMaxChunks];
};

// A grid of about one wave of resident blocks walks the launch's work in units of `unit` elements (a
// chunk is chunk_size / unit units), so every SM gets the same share. One block per chunk instead left
// the H100 unbalanced: 320 chunks over 132 SMs is 2 or 3 blocks per SM, and the SGLD step reached 75%
// of copy bandwidth at 100M parameters (bench/bench_sgld.py, 2026-11-22); this way 86% (2026-11-23).
template <int Depth, class Functor, class... Args>
__global__ void multi_tensor_apply_kernel(int64_t chunk_size, int64_t unit, int chunks, TensorListMeta<Depth> meta,
                                          Functor functor, Args... args) {
  const int64_t units_per_chunk = chunk_size / unit;
  const int64_t units = chunks * units_per_chunk;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int c = static_cast<int>(u / units_per_chunk);
    const int t = meta.chunk_to_tensor[c];
    const int64_t n = meta.sizes[t];
    const int64_t begin = static_cast<int64_t>(meta.chunk_index[c]) * chunk_size + (u - c * units_per_chunk) * unit;
    if (begin >= n) continue;  // past the end of the tensor's last, partial chunk
    functor(begin, begin + unit < n ? begin + unit : n, t, meta, args...);
  }
}

// Blocks of `threads` threads of this kernel that fit on the device at once (one full wave), per device.
template <int Depth, class Functor, class... Args>
int resident_blocks(int threads) {
  static int cached[64] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 1024;
  if (cached[device] == 0) {
    int per_sm = 0, sms = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, multi_tensor_apply_kernel<Depth, Functor, Args...>,
                                                      threads, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || per_sm * sms == 0) {
      cudaGetLastError();  // clear it: the launch below reports real errors
      return 1024;
    }
    cached[device] = per_sm * sms;
  }
  return cached[device];
}

struct TensorRef {
  std::array<void*, 4> pointers;  // the first Depth entries are used
  int64_t size;
  uint32_t noise_index;
};

// Launch `functor` over every chunk of every tensor; returns the first CUDA error (cudaSuccess if none).
// `functor(begin, end, t, meta, args...)` updates elements [begin, end) of table entry t; end - begin is at
// most `unit`, a divisor of chunk_size.
template <int Depth, class Functor, class... Args>
cudaError_t multi_tensor_apply(const std::vector<TensorRef>& tensors, int64_t chunk_size, int64_t unit, int threads,
                               cudaStream_t stream, Functor functor, Args... args) {
  using Meta = TensorListMeta<Depth>;
  if (unit <= 0 || chunk_size % unit != 0) return cudaErrorInvalidValue;
  const int64_t max_grid = resident_blocks<Depth, Functor, Args...>(threads);
  auto launch = [&](const Meta& meta, int chunks) {
    const int64_t grid = std::min<int64_t>(max_grid, chunks * (chunk_size / unit));
    multi_tensor_apply_kernel<Depth><<<static_cast<unsigned>(grid), threads, 0, stream>>>(chunk_size, unit, chunks, meta,
                                                                                         functor, args...);
    return cudaGetLastError();
  };
  Meta meta{};
  int tensors_in_meta = 0, chunks_in_meta = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const int64_t n = tensors[t].size;
    if (n == 0) continue;
    for (int d = 0; d < Depth; ++d) meta.addresses[d][tensors_in_meta] = tensors[t].pointers[d];
    meta.sizes[tensors_in_meta] = n;
    meta.noise_index[tensors_in_meta] = tensors[t].noise_index;
    ++tensors_in_meta;
    const int64_t chunks = (n + chunk_size - 1) / chunk_size;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.chunk_to_tensor[chunks_in_meta] = static_cast<uint8_t>(tensors_in_meta - 1);
      meta.chunk_index[chunks_in_meta] = static_cast<int32_t>(c);
      ++chunks_in_meta;
      const bool chunks_full = chunks_in_meta == Meta::kMaxChunks;
      const bool tensors_full = tensors_in_meta == Meta::kMaxTensors && c == chunks - 1;
      const bool last = t == tensors.size() - 1 && c == chunks - 1;
      if (chunks_full || tensors_full || last) {
        const cudaError_t err = launch(meta, chunks_in_meta);
        if (err != cudaSuccess) return err;
        chunks_in_meta = 0;
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
  if (chunks_in_meta > 0) {  // the last tensors were empty ones
    return launch(meta, chunks_in_meta);
  }
  return cudaSuccess;
}

}  // namespace stnas::cuda
