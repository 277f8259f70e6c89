// A route with a rate_limit filter, run without the proxy: fake request driver, simulated
// clock, and (for the Redis store) the FakeWorker of fake_worker.h.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "filters/rate_limit/rate_limit_config.h"
#include "filters/rate_limit/rate_limit_filter.h"
#include "gateway/config/config.h"
#include "gateway/filter.h"
#include "tests/filters/fake_worker.h"
#include "tests/filters/filter_config_test_util.h"

namespace gw::rate_limit::test {

// The simulated monotonic clock (ns). Starts far from 0 like a real monotonic clock.
inline int64_t& simulatedNow() {
  static int64_t now = int64_t(1000) * 1'000'000'000;
  return now;
}
inline int64_t readSimulatedClock() { return simulatedNow(); }
inline void advance(double seconds) { simulatedNow() += int64_t(seconds * 1e9); }

class FakeIdentity final : public Identity {
 public:
  explicit FakeIdentity(std::map<std::string, std::string> claims) : claims_(std::move(claims)) {}
  std::string_view claim(std::string_view name) const override {
    auto it = claims_.find(std::string(name));
    return it == claims_.end() ? std::string_view() : std::string_view(it->second);
  }

 private:
  std::map<std::string, std::string> claims_;
};

class FakeDriver final : public RequestDriver {
 public:
  void sendLocalReply(int s, std::string_view code, std::string_view) override {
    status = s;
    error_code = std::string(code);
    ++replies;
  }
  void sendResponse(int s, std::string_view, std::string_view) override { status = s; }
  void continueRequest() override { ++continues; }
  std::string_view generateRequestId() override { return "test-id"; }

  int status = 0;
  std::string error_code;
  int replies = 0;
  int continues = 0;
};

using test_util::FakeWorker;

// One request through a route's chain (the rate-limit positions, with authentication
// simulated between them by setting identity/user up front).
struct Request {
  StringArena arena;
  HeaderList headers{&arena};
  RequestContext ctx;
  FakeDriver driver;
  ResponseHead response;
  size_t ran = 0;
  bool waiting = false;

  explicit Request(std::string_view ip = "192.0.2.1") {
    ctx.arena = &arena;
    ctx.driver = &driver;
    ctx.response_headers_to_add.setArena(&arena);
    response.headers.setArena(&arena);
    setIp(ip);
  }
  void setIp(std::string_view ip);
  std::string header(std::string_view name) const {
    return std::string(response.headers.get(name));
  }
};

inline void Request::setIp(std::string_view ip) {
  ctx.client_ip = arena.copy(ip);
  std::string text(ip);
  uint8_t out[16]{};
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1) {
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &a4, 4);
  } else if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
    std::memcpy(out, &a6, 16);
  }
  std::memcpy(ctx.client_ip16, out, 16);
}

class Route {
 public:
  explicit Route(const std::string& name, const std::string& yaml, Config whole = Config()) {
    auto parsed = test_util::parseFilter<RateLimitConfig>(parseRateLimitConfig, yaml);
    EXPECT_TRUE(parsed.config) << yaml;
    config_ = std::make_unique<Config>(std::move(whole));
    route_.name = name;
    if (parsed.config) buildRateLimit(parsed.config, &route_, *config_, chain_);
  }
  const std::vector<std::shared_ptr<const Filter>>& chain() const { return chain_; }

  // Runs the request phases until one stops; returns true if the request went through.
  // A StopWait leaves r.waiting set: finish() after the answer came.
  void start(Request& r, WorkerServices* worker = nullptr) const {
    r.ctx.route = &route_;
    r.ctx.config = config_.get();
    r.ctx.worker = worker;
    resume(r);
  }
  void resume(Request& r) const {
    r.waiting = false;
    for (size_t i = r.ran; i < chain_.size(); ++i) {
      r.ran = i + 1;
      FilterStatus s = chain_[i]->onRequestHeaders(r.ctx, r.headers);
      if (s == FilterStatus::StopWait) {
        r.waiting = true;
        return;
      }
      if (s == FilterStatus::StopReplied) break;
    }
    respond(r);
  }
  // What the core does when the filter resumed the request (async).
  void resumeAfterWait(Request& r) const {
    if (r.driver.replies > 0) return respond(r);
    resume(r);
  }
  int run(Request& r) const {
    start(r);
    EXPECT_FALSE(r.waiting);
    return r.response.status;
  }

 private:
  void respond(Request& r) const {
    r.response.status = r.driver.status != 0 ? r.driver.status : 200;
    for (size_t i = r.ran; i-- > 0;) chain_[i]->onResponseHeaders(r.ctx, r.response);
  }

  std::unique_ptr<Config> config_;
  RouteConfig route_;
  std::vector<std::shared_ptr<const Filter>> chain_;
};

// Installs the simulated clock for a test's life.
class SimulatedClock {
 public:
  SimulatedClock() { setClockForTesting(&readSimulatedClock); }
  ~SimulatedClock() { setClockForTesting(nullptr); }
};

}  // namespace gw::rate_limit::test
