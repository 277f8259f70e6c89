// Runs the filters of a configuration loaded through the real loader, the way the core
// does (gateway/downstream.cc), without sockets:
// - loadFilterConfig(): YAML (a listener and an upstream are added) -> Config, so the whole
//   YAML -> parser -> registry -> chain path is exercised; take route(config, "r").chain.
// - TestRequest: a RequestContext built by hand (arena, scratch, client_ip16 from text,
//   tls / forwarded_https) with a FakeDriver that records local replies and answers and
//   generates request ids with the real generator (Worker::newRequestId).
// - runChain(): request phases in chain order until one stops, then the "upstream" answer
//   (or the filter's), then the response phases in reverse over the filters that ran plus
//   the ones that act on every response, then ctx.response_headers_to_add. The request
//   head's bytes are overwritten after the request phases, as the core reuses the input
//   block once the body flows: a filter that kept a view into them shows up as garbage.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/client_ip.h"
#include "gateway/config/config.h"
#include "gateway/config/config_loader.h"
#include "gateway/filter.h"
#include "gateway/headers.h"
#include "gateway/server.h"
#include "gateway/worker.h"

namespace gw::filter_test {

using HeaderPairs = std::vector<std::pair<std::string, std::string>>;

inline constexpr const char* kBaseConfig =
    "listeners: [{name: http, address: '127.0.0.1:8080'}]\n"
    "upstreams: [{name: api, endpoints: ['127.0.0.1:9000']}]\n";

// `sections` is appended to a listener and an upstream `api`. Fails the test (and returns
// null) when the loader reports anything.
inline std::shared_ptr<const Config> loadFilterConfig(const std::string& sections) {
  std::string yaml = std::string(kBaseConfig) + sections;
  LoadResult result = loadConfigString(yaml, "filters.yaml");
  std::string errors;
  for (const auto& e : result.errors) errors += e.format() + "\n";
  EXPECT_TRUE(result.ok()) << errors << "---\n" << yaml;
  return result.ok() ? result.config : nullptr;
}

// The formatted errors of loading `sections` (empty when it loads).
inline std::vector<std::string> loadErrors(const std::string& sections) {
  std::vector<std::string> out;
  for (const auto& e : loadConfigString(std::string(kBaseConfig) + sections, "filters.yaml").errors)
    out.push_back(e.format());
  return out;
}

// One route `r` on `/` whose `filters:` is the flow map `route_filters`, under optional
// `default_filters` (a flow map too).
inline std::shared_ptr<const Config> loadRoute(const std::string& route_filters,
                                               const std::string& default_filters = "") {
  std::string s;
  if (!default_filters.empty()) s += "default_filters: " + default_filters + "\n";
  s += "routes:\n  - name: r\n    match: {path_prefix: /}\n    upstream: api\n";
  if (!route_filters.empty()) s += "    filters: " + route_filters + "\n";
  return loadFilterConfig(s);
}

inline const RouteConfig& route(const Config& config, std::string_view name = "r") {
  for (const auto& r : config.routes) {
    if (r.name == name) return r;
  }
  ADD_FAILURE() << "no route " << name;
  return config.routes.front();
}

// The filter called `name` in `chain`, or null.
inline const Filter* findInChain(const std::vector<std::shared_ptr<const Filter>>& chain,
                                 std::string_view name) {
  for (const auto& f : chain) {
    if (f->name() == name) return f.get();
  }
  return nullptr;
}

inline std::vector<std::string> chainNames(const std::vector<std::shared_ptr<const Filter>>& chain) {
  std::vector<std::string> out;
  for (const auto& f : chain) out.emplace_back(f->name());
  return out;
}

// The real id generator: a Worker that is never started (its constructor only seeds the
// generator from the kernel). Leaked on purpose: no static destruction order to mind.
inline Worker& idWorker() {
  static Worker* worker = new Worker(*new Server("unused.yaml"), 0);
  return *worker;
}

class FakeDriver final : public RequestDriver {
 public:
  explicit FakeDriver(StringArena& arena) : arena_(arena) {}
  void sendLocalReply(int s, std::string_view code, std::string_view msg) override {
    ++local_replies;
    status = s;
    error_code = std::string(code);
    message = std::string(msg);
  }
  void sendResponse(int s, std::string_view type, std::string_view b) override {
    ++responses;
    status = s;
    content_type = std::string(type);
    body = std::string(b);
  }
  void continueRequest() override { ++continued; }
  std::string_view generateRequestId() override {
    ++generated;
    return idWorker().newRequestId(arena_);
  }
  int answers() const { return local_replies + responses; }

  int local_replies = 0;
  int responses = 0;
  int continued = 0;
  int generated = 0;
  int status = 0;
  std::string error_code, message, content_type, body;

 private:
  StringArena& arena_;
};

struct TestRequest {
  explicit TestRequest(const Config* config = nullptr, const RouteConfig* route = nullptr,
                       std::string_view method = "GET", std::string_view client_ip = "192.0.2.10") {
    block.reserve(64 * 1024);  // never reallocates: the request headers point into it
    ctx.config = config;
    ctx.route = route;
    ctx.arena = &arena;
    ctx.driver = &driver;
    ctx.response_headers_to_add.setArena(&arena);
    response.headers.setArena(&arena);
    ctx.method = method;
    ctx.path = "/";
    ctx.host = "gw.example.test";
    if (config) ctx.max_body_bytes = config->limits.max_body_bytes;
    setClientIp(client_ip);
    ctx.peer_ip = ctx.client_ip;
  }
  TestRequest(const TestRequest&) = delete;

  void setClientIp(std::string_view ip) {
    ctx.client_ip = arena.copy(ip);
    EXPECT_TRUE(parseIp16(ip, ctx.client_ip16)) << ip;
  }
  // A request header whose bytes live in `block`, like the core's views into the input.
  TestRequest& header(std::string_view name, std::string_view value) {
    EXPECT_LE(block.size() + name.size() + value.size(), block.capacity());
    size_t at = block.size();
    block.append(name);
    block.append(value);
    headers.addRef(std::string_view(block).substr(at, name.size()),
                   std::string_view(block).substr(at + name.size(), value.size()));
    return *this;
  }
  // The input block is reused once the body flows (request views become garbage).
  void reuseInputBlock() { std::fill(block.begin(), block.end(), '#'); }

  std::string responseHeader(std::string_view name, bool* found = nullptr) const {
    return std::string(response.headers.get(name, found));
  }
  bool hasResponseHeader(std::string_view name) const { return response.headers.has(name); }
  std::vector<std::string> responseHeaderAll(std::string_view name) const {
    std::vector<std::string> out;
    for (const Header& h : response.headers) {
      if (equalsIgnoreCase(h.name, name)) out.emplace_back(h.value);
    }
    return out;
  }
  std::string forwardedHeader(std::string_view name) const {
    for (const auto& [n, v] : forwarded) {
      if (equalsIgnoreCase(n, name)) return v;
    }
    return {};
  }
  size_t forwardedCount(std::string_view name) const {
    return size_t(std::count_if(forwarded.begin(), forwarded.end(),
                                [&](const auto& h) { return equalsIgnoreCase(h.first, name); }));
  }

  std::string block;
  StringArena arena;
  HeaderList headers{&arena};
  FakeDriver driver{arena};
  RequestContext ctx;
  ResponseHead response;
  size_t filters_run = 0;
  bool reached_upstream = false;
  HeaderPairs forwarded;  // the request headers as the upstream would have seen them
};

// Request phases in chain order until one stops (or until `stop_after` filters ran, to
// simulate a later stage answering). Returns the status of the last phase run.
inline FilterStatus runRequestPhases(const std::vector<std::shared_ptr<const Filter>>& chain,
                                     TestRequest& r) {
  FilterStatus s = FilterStatus::Continue;
  for (size_t i = r.filters_run; i < chain.size(); ++i) {
    r.filters_run = i + 1;
    s = chain[i]->onRequestHeaders(r.ctx, r.headers);
    if (s != FilterStatus::Continue) break;
  }
  return s;
}

// The response phases, as DownstreamConnection::runResponseFilters runs them.
inline void runResponsePhases(const std::vector<std::shared_ptr<const Filter>>& chain,
                              TestRequest& r) {
  for (size_t i = chain.size(); i-- > 0;) {
    const Filter& f = *chain[i];
    if (i < r.filters_run || f.runsOnEveryResponse()) f.onResponseHeaders(r.ctx, r.response);
  }
  for (const Header& h : r.ctx.response_headers_to_add) r.response.headers.addRef(h.name, h.value);
}

// A whole request: the filters, then the upstream's answer (`upstream_status` with
// `upstream_headers`) unless a filter answered, then the response phases.
inline FilterStatus runChain(const std::vector<std::shared_ptr<const Filter>>& chain,
                             TestRequest& r, int upstream_status = 200,
                             const HeaderPairs& upstream_headers = {}) {
  FilterStatus s = runRequestPhases(chain, r);
  EXPECT_NE(s, FilterStatus::StopWait) << "no filter here waits";
  if (s == FilterStatus::Continue) {
    r.reached_upstream = true;
    for (const Header& h : r.headers) r.forwarded.emplace_back(h.name, h.value);
  }
  r.reuseInputBlock();
  if (s == FilterStatus::Continue) {
    r.response.status = upstream_status;
    r.response.local_reply = false;
    for (const auto& [n, v] : upstream_headers) r.response.headers.add(n, v);
  } else {
    EXPECT_EQ(r.driver.answers(), 1) << "a filter that stops answers exactly once";
    r.response.status = r.driver.status;
    r.response.local_reply = true;
    if (!r.driver.content_type.empty()) r.response.headers.add("Content-Type", r.driver.content_type);
    else if (r.driver.local_replies) r.response.headers.addRef("Content-Type", "application/json");
  }
  runResponsePhases(chain, r);
  return s;
}

// The gateway answers by itself after `filters_run` request phases (a 413 after
// body_limit, a 429 from a rate limit, a 502 from the upstream stage).
inline void answerLocally(const std::vector<std::shared_ptr<const Filter>>& chain, TestRequest& r,
                          int status) {
  r.reuseInputBlock();
  r.response.status = status;
  r.response.local_reply = true;
  r.response.headers.clear();
  r.response.headers.addRef("Content-Type", "application/json");
  runResponsePhases(chain, r);
}

// RFC 9562 UUIDv7 text: 8-4-4-4-12 lower-case hex, version 7, variant 10.
inline bool isUuidV7(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = s[i];
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return s[14] == '7' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

}  // namespace gw::filter_test
