// A fused launch over a list of tensors (the idea of apex's multi_tensor_apply): kernel arguments carry
// a table of tensors and chunks (tensor_list_table.h), and the host launches one kernel per table the
// list fills. Torch-free: every fused multi-tensor op reuses it.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/tensor_list_table.h"

namespace stnas::cuda {

// A grid of about one wave of resident blocks walks the launch's work in units of `unit` elements (a
// chunk is chunk_size / unit units), so every SM gets the same share. One block per chunk instead left
// the H100 unbalanced: 320 chunks over 132 SMs is 2 or 3 blocks per SM, and the SGLD step reached 75%
// of copy bandwidth at 100M parameters (bench/bench_sgld.py, 2026-11-22); this way 86% (2026-11-23),
// still in 8 launches of 4 KB tables (docs/perf-notes.md has the 32 KB tables' prediction).
template <int Depth, class Functor, class... Args>
__global__ void multi_tensor_apply_kernel(int64_t chunk_size, int64_t unit, int chunks, TensorListMeta<Depth> meta,
                                          Functor functor, Args... args) {
  const int64_t units = chunks * (chunk_size / unit);
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const UnitRange r = unit_range(meta, chunk_size, unit, u);
    if (r.begin >= r.end) continue;  // past the end of the tensor's last, partial chunk
    functor(r.begin, r.end, r.tensor, meta, args...);
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

// Launch `functor` over every chunk of every tensor; returns the first CUDA error (cudaSuccess if none).
// `functor(begin, end, t, meta, args...)` updates elements [begin, end) of table entry t; end - begin is at
// most `unit`, a divisor of chunk_size.
template <int Depth, class Functor, class... Args>
cudaError_t multi_tensor_apply(const std::vector<TensorRef>& tensors, int64_t chunk_size, int64_t unit, int threads,
                               cudaStream_t stream, Functor functor, Args... args) {
  using Meta = TensorListMeta<Depth>;
  static_assert(sizeof(Meta) + sizeof(Functor) + (sizeof(Args) + ... + 0) + 3 * sizeof(int64_t) <= kKernelParamBytes,
                "multi_tensor_apply: the table and arguments exceed the kernel-parameter limit");
  if (unit <= 0 || chunk_size % unit != 0) return cudaErrorInvalidValue;
  const int64_t max_grid = resident_blocks<Depth, Functor, Args...>(threads);
  return for_each_table<Meta>(tensors, chunk_size, [&](const Meta& meta, int chunks) {
    const int64_t grid = std::min<int64_t>(max_grid, chunks * (chunk_size / unit));
    multi_tensor_apply_kernel<Depth><<<static_cast<unsigned>(grid), threads, 0, stream>>>(chunk_size, unit, chunks, meta,
                                                                                         functor, args...);
    return cudaGetLastError();
  });
}

}  // namespace stnas::cuda
