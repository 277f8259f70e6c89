// A request context for calling a filter's phases directly (with the FakeWorker of
// fake_worker.h) and a driver that records the answer.
#pragma once

#include <string>

#include "gateway/config/config.h"
#include "gateway/filter.h"
#include "gateway/headers.h"
#include "tests/filters/fake_worker.h"

namespace gw::test_util {

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
