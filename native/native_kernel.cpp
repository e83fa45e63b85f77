// The C++ benchmark kernel: the seed workload in plain C++, one std::thread per task, no GIL.
#include "native_kernel.h"

#include <stdexcept>
#include <string>
#include <thread>

namespace ipp {
namespace {

std::int64_t seed_one(std::int64_t n) {
  std::uint64_t k = 1;
  for (std::uint64_t i = static_cast<std::uint64_t>(n); i > 1; --i) k = k * i % 1000000007ULL;
  return static_cast<std::int64_t>(k);
}

}  // namespace

std::vector<std::int64_t> seed_kernel(const std::vector<std::int64_t>& ns) {
  for (std::int64_t n : ns)
    if (n < 0 || n > kMaxSeedN)
      throw std::invalid_argument("seed_kernel: n must be between 0 and " + std::to_string(kMaxSeedN) + ", got " +
                                  std::to_string(n));
  std::vector<std::int64_t> out(ns.size());
  std::vector<std::thread> threads;
  threads.reserve(ns.size());
  for (size_t t = 0; t < ns.size(); ++t) threads.emplace_back([&out, &ns, t] { out[t] = seed_one(ns[t]); });
  for (auto& th : threads) th.join();
  return out;
}

}  // namespace ipp
