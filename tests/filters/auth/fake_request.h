// A request context for calling a filter's phases directly: a worker with a real libuv loop
// (for filters that park requests on timers) and a driver that records the answer.
#pragma once

#include <uv.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "gateway/config.h"
#include "gateway/filter.h"
#include "gateway/headers.h"

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
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return done();
  }

 private:
  uint32_t index_;
  uv_loop_t loop_{};
  std::map<std::string, std::unique_ptr<WorkerState>, std::less<>> states_;
};

class FakeDriver final : public RequestDriver {
 public:
  void sendLocalReply(int s, std::string_view code, std::string_view message) override {
    ++answers;
    status = s;
    error_code = std::string(code);
    this->message = std::string(message);
  }
  void sendResponse(int s, std::string_view, std::string_view) override {
    ++answers;
    status = s;
  }
  void continueRequest() override { ++continued; }
  std::string_view generateRequestId() override { return "req-1"; }

  int answers = 0;
  int continued = 0;
  int status = 0;
  std::string error_code;
  std::string message;
};

// One request on route `route_name` at wall-clock time `now_ms`.
struct FakeRequest {
  explicit FakeRequest(WorkerServices& worker, uint64_t now_ms = 1700000000000ull,
                       std::string route_name = "r") {
    route.name = std::move(route_name);
    ctx.route = &route;
    ctx.arena = &arena;
    ctx.driver = &driver;
    ctx.worker = &worker;
    ctx.now_ms = now_ms;
    ctx.method = "GET";
    ctx.path = "/";
    ctx.response_headers_to_add.setArena(&arena);
  }
  // The first response header `name` the filter asked for, or "" (with found=false).
  std::string responseHeader(std::string_view name, bool* found = nullptr) const {
    return std::string(ctx.response_headers_to_add.get(name, found));
  }

  StringArena arena;
  HeaderList headers{&arena};
  FakeDriver driver;
  RouteConfig route;
  RequestContext ctx;
};

}  // namespace gw::test_util
