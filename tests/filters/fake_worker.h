// A worker for calling filters directly: a real libuv loop (for filters that park requests
// on timers or talk to a server), per-worker state kept as gateway/worker.cc keeps it, and
// fixed random bits so that runs repeat.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "gateway/filter.h"

namespace gw::test_util {

class FakeWorker final : public WorkerServices {
 public:
  explicit FakeWorker(uint32_t index = 0) : index_(index) { uv_loop_init(&loop_); }
  ~FakeWorker() override {
    for (auto& [key, state] : states_) state->shutdown();
    uv_run(&loop_, UV_RUN_DEFAULT);  // the close callbacks
    states_.clear();
    uv_loop_close(&loop_);
  }
  uv_loop_s* loop() override { return &loop_; }
  uint32_t workerIndex() const override { return index_; }
  WorkerState& state(std::string_view key,
                     std::unique_ptr<WorkerState> (*make)(WorkerServices&)) override {
    auto it = states_.find(key);
    if (it == states_.end()) it = states_.emplace(std::string(key), make(*this)).first;
    return *it->second;
  }
  void random128(uint64_t out[2]) override {
    out[0] = 0x0123456789abcdefull;
    out[1] = 0xfedcba9876543210ull;
  }
  // Runs the loop until `done()` or `timeout` passes; returns done().
  template <class Pred>
  bool runUntil(Pred done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      uv_run(&loop_, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return done();
  }

 private:
  uint32_t index_;
  uv_loop_t loop_{};
  std::map<std::string, std::unique_ptr<WorkerState>, std::less<>> states_;
};

}  // namespace gw::test_util
