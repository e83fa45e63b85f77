// The C++ benchmark kernel: the seed workload in plain C++, one std::thread per task, no GIL.
#pragma once

#include <cstdint>
#include <vector>

namespace ipp {

// The largest n the kernel accepts: k * i stays below 2^64 while i <= kMaxSeedN (k < 1e9+7).
constexpr std::int64_t kMaxSeedN = 10'000'000'000;

// For each n: k = 1; for i in n..2: k = k * i % 1000000007 (what bench.seed_task computes in
// Python). Runs every task on its own std::thread at once; takes no Python state, so the caller
// releases the GIL around it. Throws std::invalid_argument for n outside 0..kMaxSeedN.
std::vector<std::int64_t> seed_kernel(const std::vector<std::int64_t>& ns);

}  // namespace ipp
