// CPU test of how a tensor list is cut into the argument tables of fused launches
// (csrc/cuda/tensor_list_table.h): replaying every table must give each chunk of each non-empty tensor
// exactly once and in order, with the tensor's own pointers, size and noise index; a table is only cut
// when it is full; the first failing launch stops the loop; and the units the kernel walks
// (unit_range) tile every tensor exactly. Random lists over several table capacities.
#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>
#include <random>
#include <utility>
#include <vector>

#include "cuda/tensor_list_table.h"

using stnas::cuda::TensorRef;
using stnas::cuda::TensorTable;

static int failures = 0;
static int tables_cut = 0;  // tables launched while not the last one: shows the lists do span tables
static void expect(bool ok, const char* what, const char* table, int trial) {
  if (!ok) {
    std::printf("FAIL %s (table %s, list %d)\n", what, table, trial);
    ++failures;
  }
}

static void* fake_pointer(size_t tensor, int d) {  // never dereferenced: identifies (tensor, depth)
  return reinterpret_cast<void*>(static_cast<uintptr_t>(0x10000 * (tensor + 1) + 8 * d));
}

static std::vector<TensorRef> random_list(std::mt19937& rng, int64_t chunk, int max_count) {
  std::uniform_int_distribution<int> count_d(0, max_count), kind_d(0, 9);
  std::vector<TensorRef> list(count_d(rng));
  for (size_t i = 0; i < list.size(); ++i) {
    const int kind = kind_d(rng);
    int64_t n;
    if (kind == 0) n = 0;                                                            // empty: skipped
    else if (kind <= 5) n = std::uniform_int_distribution<int64_t>(1, chunk)(rng);   // one chunk
    else if (kind <= 8) n = std::uniform_int_distribution<int64_t>(1, 5 * chunk)(rng);
    else n = std::uniform_int_distribution<int64_t>(1, 40 * chunk)(rng);            // spans tables
    list[i] = {{fake_pointer(i, 0), fake_pointer(i, 1), fake_pointer(i, 2), fake_pointer(i, 3)}, n,
               static_cast<uint32_t>(7 * i + 3)};
  }
  return list;
}

template <class Table>
static void check_list(const std::vector<TensorRef>& list, int64_t chunk, int64_t unit, const char* name, int trial) {
  std::map<void*, size_t> owner;
  for (size_t i = 0; i < list.size(); ++i) owner[list[i].pointers[0]] = i;
  std::vector<std::pair<size_t, int64_t>> seen;  // (tensor, chunk) in launch order
  std::vector<bool> full;                        // was each table full when it was cut
  std::vector<std::tuple<size_t, int64_t, int64_t>> units;  // (tensor, begin, end) of every non-empty unit
  bool entries_ok = true, units_ok = true;
  const int r = stnas::cuda::for_each_table<Table>(list, chunk, [&](const Table& table, int chunks) {
    entries_ok &= chunks > 0 && chunks <= Table::kMaxChunks;
    std::vector<bool> used(Table::kMaxTensors, false);
    for (int k = 0; k < chunks && entries_ok; ++k) {
      const int t = table.chunk_to_tensor[k];
      entries_ok &= t < Table::kMaxTensors && owner.count(table.addresses[0][t]) == 1;
      if (!entries_ok) break;
      const size_t i = owner[table.addresses[0][t]];
      for (int d = 0; d < Table::kDepth; ++d) entries_ok &= table.addresses[d][t] == list[i].pointers[d];
      entries_ok &= table.sizes[t] == list[i].size && table.noise_index[t] == list[i].noise_index;
      used[t] = true;
      seen.emplace_back(i, table.chunk_index[k]);
    }
    for (int64_t u = 0; u < chunks * (chunk / unit) && entries_ok; ++u) {  // the kernel's walk
      const stnas::cuda::UnitRange r = stnas::cuda::unit_range(table, chunk, unit, u);
      if (r.begin >= r.end) continue;
      units_ok &= r.end - r.begin <= unit && r.begin % unit == 0;
      units.emplace_back(owner[table.addresses[0][r.tensor]], r.begin, r.end);
    }
    int tensors = 0;
    for (bool u : used) tensors += u;
    full.push_back(chunks == Table::kMaxChunks || tensors == Table::kMaxTensors);
    return 0;
  });
  expect(r == 0, "success is returned", name, trial);
  expect(entries_ok, "every chunk names a table entry that holds its tensor's pointers, size and index", name, trial);
  std::vector<std::pair<size_t, int64_t>> want;
  for (size_t i = 0; i < list.size(); ++i)
    for (int64_t c = 0; c * chunk < list[i].size; ++c) want.emplace_back(i, c);
  expect(seen == want, "each chunk of each non-empty tensor exactly once, in order", name, trial);
  std::sort(units.begin(), units.end());
  std::vector<int64_t> covered(list.size(), 0);  // units sorted by (tensor, begin) must abut from 0 to n
  for (const auto& [i, begin, end] : units) {
    units_ok &= begin == covered[i];
    covered[i] = end;
  }
  for (size_t i = 0; i < list.size(); ++i) units_ok &= covered[i] == list[i].size;
  expect(units_ok, "the kernel's units tile every tensor exactly, none longer than a unit", name, trial);
  for (size_t k = 0; k + 1 < full.size(); ++k) expect(full[k], "only a full table is cut", name, trial);
  tables_cut += full.empty() ? 0 : static_cast<int>(full.size()) - 1;
}

// The loop stops at the first launch that fails and returns its error.
template <class Table>
static void check_error_stops(const char* name) {
  std::vector<TensorRef> list;
  for (size_t i = 0; i < 4 * Table::kMaxTensors; ++i) list.push_back({{fake_pointer(i, 0)}, 1, 0});
  int calls = 0;
  const int r = stnas::cuda::for_each_table<Table>(list, 1, [&](const Table&, int) { return ++calls == 2 ? 77 : 0; });
  expect(r == 77 && calls == 2, "the first failing launch's error is returned and stops the loop", name, 0);
}

template <class Table>
static void run(const char* name, int64_t chunk, int64_t unit, int max_count, int trials, std::mt19937& rng) {
  tables_cut = 0;
  for (int trial = 0; trial < trials; ++trial) check_list<Table>(random_list(rng, chunk, max_count), chunk, unit, name, trial);
  expect(tables_cut >= trials / 2, "the random lists span several tables", name, 0);
  check_error_stops<Table>(name);
  // Nothing to do: no launch at all.
  int calls = 0;
  std::vector<TensorRef> empties(5, TensorRef{{nullptr}, 0, 0});
  stnas::cuda::for_each_table<Table>(empties, chunk, [&](const Table&, int) { return ++calls, 0; });
  stnas::cuda::for_each_table<Table>({}, chunk, [&](const Table&, int) { return ++calls, 0; });
  expect(calls == 0, "empty tensors and an empty list launch nothing", name, 0);
  std::printf("%-34s %3d random lists, %5d tables cut: %s\n", name, trials, tables_cut,
              failures ? "FAILED so far" : "ok");
}

int main() {
  std::mt19937 rng(2026);
  run<TensorTable<1, 1, 1>>("1 tensor, 1 chunk", 3, 1, 12, 300, rng);
  run<TensorTable<2, 3, 5>>("3 tensors, 5 chunks", 4, 2, 30, 300, rng);
  run<TensorTable<3, 36, 320>>("36 tensors, 320 chunks (4 KB)", 16, 4, 400, 200, rng);
  run<stnas::cuda::TensorListMeta<3>>("TensorListMeta<3> (this build)", 16, 8, 1500, 60, rng);
  run<stnas::cuda::TensorListMeta<4>>("TensorListMeta<4> (this build)", 16, 16, 1500, 20, rng);
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
