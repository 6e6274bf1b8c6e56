// The argument table of a fused multi-tensor launch, the host loop that cuts a tensor list into as few
// tables as fit (apex's multi_tensor_apply idea), and the units the kernel walks in a table. Plain C++
// (unit_range is also a device function under nvcc): the CPU unit test
// (csrc/tests/test_tensor_list_table.cpp) checks the cutting and the walk without a GPU.
#pragma once
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__CUDACC__)
#include <cuda_runtime_api.h>  // CUDART_VERSION
#endif

namespace stnas::cuda {

// Bytes of kernel parameters a launch may pass: 4,096 before CUDA 12.1, 32,764 from CUDA 12.1 on Volta
// and newer (we build for sm_80 and sm_90). A plain C++ compile (the CPU unit test) takes the large size.
#if defined(CUDART_VERSION) && CUDART_VERSION < 12010
inline constexpr int kKernelParamBytes = 4096;
#else
inline constexpr int kKernelParamBytes = 32764;
#endif

// One launch's table: up to MaxTensors tensors (Depth pointers each: param, grad, momentum, ...) and
// MaxChunks chunks (which tensor, which of its chunks). Every table entry costs kernel-parameter bytes.
template <int Depth, int MaxTensors, int MaxChunks>
struct TensorTable {
  static_assert(MaxTensors <= 65536, "chunk_to_tensor is 16-bit");
  static constexpr int kDepth = Depth;
  static constexpr int kMaxTensors = MaxTensors;
  static constexpr int kMaxChunks = MaxChunks;
  void* addresses[Depth][MaxTensors];
  int64_t sizes[MaxTensors];
  uint32_t noise_index[MaxTensors];
  uint16_t chunk_to_tensor[MaxChunks];
  int32_t chunk_index[MaxChunks];
};

// The table a launch passes. With 4 KB of parameters, 36 tensors and 320 chunks (apex's sizes for depth
// 3); then a 100M-parameter list of 161 tensors needs 8 launches, three of them under 3.3M elements,
// and each launch pays its own ramp-up and drain. With 32 KB, 512 tensors and 2,048 chunks of 65,536
// elements (134M) make it one launch. 256 bytes stay free for the kernel's other arguments.
template <int Depth>
using TensorListMeta =
    std::conditional_t<(kKernelParamBytes > 4096), TensorTable<Depth, Depth <= 3 ? 512 : 384, 2048>,
                       TensorTable<Depth, Depth <= 2 ? 48 : 36, 320>>;
static_assert(sizeof(TensorListMeta<3>) <= kKernelParamBytes - 256, "depth-3 table leaves no room for arguments");
static_assert(sizeof(TensorListMeta<4>) <= kKernelParamBytes - 256, "depth-4 table leaves no room for arguments");

#if defined(__CUDACC__)
#define STNAS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define STNAS_HOST_DEVICE inline
#endif

// What unit u of a launch covers: elements [begin, end) of table entry `tensor`; empty (end <= begin)
// when the unit lies past the end of its tensor's last, partial chunk. A chunk is chunk_size / unit
// units. The kernel (multi_tensor_apply.cuh) walks units with this; the CPU test checks their tiling.
struct UnitRange {
  int tensor;
  int64_t begin, end;
};

template <class Table>
STNAS_HOST_DEVICE UnitRange unit_range(const Table& table, int64_t chunk_size, int64_t unit, int64_t u) {
  const int64_t units_per_chunk = chunk_size / unit;
  const int c = static_cast<int>(u / units_per_chunk);
  const int t = table.chunk_to_tensor[c];
  const int64_t n = table.sizes[t];
  const int64_t begin = static_cast<int64_t>(table.chunk_index[c]) * chunk_size + (u - c * units_per_chunk) * unit;
  return {t, begin, begin + unit < n ? begin + unit : n};
}

struct TensorRef {
  std::array<void*, 4> pointers;  // the first Depth entries are used
  int64_t size;
  uint32_t noise_index;
};

// Calls launch(table, chunks) for each table that the non-empty tensors fill, in order, cutting a table
// when its chunks or tensors run out; a tensor cut in its middle goes on as entry 0 of the next table.
// Returns launch's first non-zero result (the value-initialised result type means success).
template <class Table, class Launch>
auto for_each_table(const std::vector<TensorRef>& tensors, int64_t chunk_size, Launch&& launch)
    -> decltype(launch(std::declval<const Table&>(), 0)) {
  using Result = decltype(launch(std::declval<const Table&>(), 0));
  Table table{};
  int tensors_in_table = 0, chunks_in_table = 0;
  auto put = [&](int entry, const TensorRef& ref) {
    for (int d = 0; d < Table::kDepth; ++d) table.addresses[d][entry] = ref.pointers[d];
    table.sizes[entry] = ref.size;
    table.noise_index[entry] = ref.noise_index;
  };
  auto flush = [&]() {
    const Result r = launch(static_cast<const Table&>(table), chunks_in_table);
    chunks_in_table = 0;
    return r;
  };
  for (const TensorRef& ref : tensors) {
    if (ref.size <= 0) continue;
    if (tensors_in_table == Table::kMaxTensors) {  // only reached with chunks left in the table
      const Result r = flush();
      if (r != Result{}) return r;
      tensors_in_table = 0;
    }
    put(tensors_in_table++, ref);
    const int64_t chunks = (ref.size + chunk_size - 1) / chunk_size;
    for (int64_t c = 0; c < chunks; ++c) {
      if (chunks_in_table == Table::kMaxChunks) {  // full: the tensor goes on as entry 0 of the next table
        const Result r = flush();
        if (r != Result{}) return r;
        put(0, ref);
        tensors_in_table = 1;
      }
      table.chunk_to_tensor[chunks_in_table] = static_cast<uint16_t>(tensors_in_table - 1);
      table.chunk_index[chunks_in_table] = static_cast<int32_t>(c);
      ++chunks_in_table;
    }
  }
  if (chunks_in_table > 0) return flush();
  return Result{};
}

}  // namespace stnas::cuda
