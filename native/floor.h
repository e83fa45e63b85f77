// The latency floor: a bare condition-variable round trip to N sleeping threads, no Python.
#pragma once

#include <vector>

namespace ipp {

// Wakes n_threads sleeping threads, waits until all have answered, `iterations` times; returns
// each round trip in seconds. Shaped like Pool::start + Pool::wait, so the difference between
// the two is what the engine itself costs. Takes no GIL.
std::vector<double> condvar_round_trips(int n_threads, int iterations);

}  // namespace ipp
