// The per-request cost of the default filter chain (issue: filter chain; goal < 2 µs on this
// machine without rate limiting): request_id, cors (an allowed origin), body_limit and
// security_headers as reference.yaml configures them, loaded through the real loader. One
// iteration is one request as the core runs it (gateway/downstream.cc): the Request is
// reset the way Request::reset() does it (RequestContext::recycle(): response_headers_to_add
// and the arena kept warm), a realistic browser request head and upstream response head are
// put in place as views (as the parsers leave them), the request phases run in chain
// order, then the response phases in reverse plus ctx.response_headers_to_add.
//
//   build/bench/micro_bench --benchmark_filter=FilterChain
//
// Variants: the id generated (no incoming X-Request-ID, the common case) or accepted; the
// origin matched by the exact entry or by the RE2 pattern; a preflight answered by the
// gateway; and, for reference, the same chain plus a client_ip rate limit that never
// refuses (reference.yaml's default rate_limit, with a generous rate).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_loader.h"
#include "gateway/filter.h"
#include "gateway/headers.h"
#include "gateway/server.h"
#include "gateway/worker.h"

namespace gw {
namespace {

constexpr const char* kConfig = R"(
listeners: [{name: http, address: "127.0.0.1:8080"}]
upstreams: [{name: api, endpoints: ["127.0.0.1:9000"]}]
default_filters:
  request_id: {}
  security_headers: {}
  cors:
    allow_origins: ["https://app.example.com", "~^https://[a-z0-9-]+\\.example\\.com$"]
    allow_methods: [GET, POST, PUT, PATCH, DELETE]
    allow_headers: [Authorization, Content-Type, X-Request-ID]
    expose_headers: [X-Request-ID]
    allow_credentials: true
    max_age: 10m
  body_limit: {max_bytes: 1MiB}
routes:
  - name: bench-chain
    match: {path_prefix: /}
    upstream: api
  - name: bench-chain-rl
    match: {path_prefix: /limited}
    upstream: api
    filters:
      rate_limit:
        limits:
          - {key: client_ip, requests: 1000000000, per: 1s}
)";

const Config& config() {
  static std::shared_ptr<const Config> c = [] {
    LoadResult r = loadConfigString(kConfig, "bench.yaml");
    for (const auto& e : r.errors) std::fprintf(stderr, "%s\n", e.format().c_str());
    return r.config;
  }();
  return *c;
}

const RouteConfig* findRoute(std::string_view name) {
  for (const auto& r : config().routes) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

// The core's generator (Worker::newRequestId), from a Worker that is never started.
Worker& idWorker() {
  static Worker* w = new Worker(*new Server("bench.yaml"), 0);
  return *w;
}

class BenchDriver final : public RequestDriver {
 public:
  explicit BenchDriver(StringArena& arena) : arena_(arena) {}
  void sendLocalReply(int s, std::string_view, std::string_view) override {
    status = s;
    ++replies;
  }
  void sendResponse(int s, std::string_view, std::string_view) override {
    status = s;
    ++replies;
  }
  void continueRequest() override {}
  std::string_view generateRequestId() override { return idWorker().newRequestId(arena_); }
  int status = 0;
  uint64_t replies = 0;

 private:
  StringArena& arena_;
};

// The input block the parser leaves the head in: headers are views into it.
struct Head {
  using List = std::vector<std::pair<std::string_view, std::string_view>>;
  std::string block;
  std::vector<Header> fields;
  explicit Head(const List& list) {
    size_t total = 0;
    for (const auto& [n, v] : list) total += n.size() + v.size();
    block.reserve(total);  // never reallocates below: the views stay valid
    for (const auto& [n, v] : list) {
      size_t at = block.size();
      block.append(n);
      block.append(v);
      fields.push_back({std::string_view(block).substr(at, n.size()),
                        std::string_view(block).substr(at + n.size(), v.size())});
    }
  }
  Head(const Head&) = delete;
  Head& operator=(const Head&) = delete;
};

// What a browser sends from a single-page app: 12-13 fields.
std::unique_ptr<Head> makeRequest(std::string_view origin, bool incoming_id, bool preflight) {
  if (preflight) {
    return std::make_unique<Head>(Head::List{
        {"Host", "api.example.com"},
        {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0.0.0 Safari/537.36"},
        {"Accept", "*/*"},
        {"Accept-Language", "en-US,en;q=0.9"},
        {"Accept-Encoding", "gzip, deflate, br"},
        {"Origin", origin},
        {"Access-Control-Request-Method", "PUT"},
        {"Access-Control-Request-Headers", "authorization, content-type"},
        {"Referer", "https://app.example.com/dashboard"},
        {"Sec-Fetch-Mode", "cors"}});
  }
  Head::List list{
      {"Host", "api.example.com"},
      {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/124.0.0.0 Safari/537.36"},
      {"Accept", "application/json, text/plain, */*"},
      {"Accept-Language", "en-US,en;q=0.9,fr;q=0.8"},
      {"Accept-Encoding", "gzip, deflate, br"},
      {"Origin", origin},
      {"Referer", "https://app.example.com/dashboard"},
      {"Sec-Fetch-Mode", "cors"},
      {"Sec-Fetch-Site", "same-site"},
      {"Authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJl"},
      {"Cookie", "session=4f2a9c1e7b; theme=dark"},
      {"X-Forwarded-For", "203.0.113.7"}};
  if (incoming_id) list.push_back({"X-Request-ID", "0190b6a2-3c4d-7e5f-8a9b-0c1d2e3f4a5b"});
  return std::make_unique<Head>(list);
}

// An API server's answer: 9 fields, among them what the chain replaces or hides.
const Head& upstreamResponse() {
  static const Head h(Head::List{{"Content-Type", "application/json; charset=utf-8"},
                                 {"Content-Length", "1834"},
                                 {"Date", "Sat, 21 Nov 2026 10:30:00 GMT"},
                                 {"Cache-Control", "private, max-age=0, no-cache"},
                                 {"ETag", "W/\"72a-18c5f0e9\""},
                                 {"Vary", "Accept-Encoding"},
                                 {"Server", "nginx/1.22.1"},
                                 {"X-Powered-By", "Express"},
                                 {"Access-Control-Allow-Origin", "*"}});
  return h;
}

// The parts of the core's Request the chain touches (gateway/downstream.h).
struct BenchRequest {
  StringArena arena;
  HeaderList headers{&arena};
  ResponseHead response;
  RequestContext ctx;
  BenchDriver driver{arena};
  size_t filters_run = 0;

  BenchRequest() {
    response.headers.setArena(&arena);
    ctx.arena = &arena;
    ctx.driver = &driver;
    ctx.response_headers_to_add.setArena(&arena);
  }
  // Request::reset(), the parts that matter here.
  void reset() {
    headers.clear();
    response.clear();
    ctx.recycle();
    arena.reset();
    filters_run = 0;
  }
};

enum class Kind { Actual, Preflight };

void runChain(benchmark::State& state, std::string_view route_name, std::string_view origin,
              bool incoming_id, Kind kind) {
  const RouteConfig* route = findRoute(route_name);
  if (!route) {
    state.SkipWithError("configuration did not load");
    return;
  }
  const Config& cfg = config();
  const auto& chain = route->chain;
  std::unique_ptr<Head> request = makeRequest(origin, incoming_id, kind == Kind::Preflight);
  const Head& upstream = upstreamResponse();
  BenchRequest r;
  uint32_t client = 0;
  uint64_t stopped = 0, out_headers = 0;

  auto one = [&]() {
    r.reset();
    // What onHeadersComplete sets before the chain runs.
    r.headers.fields() = request->fields;  // views into the input block, as parsed
    r.ctx.method = kind == Kind::Preflight ? "OPTIONS" : "GET";
    r.ctx.path = "/v1/orders/123";
    r.ctx.host = "api.example.com";
    r.ctx.peer_ip = "10.0.0.2";
    r.ctx.client_ip = "203.0.113.7";
    r.ctx.client_ip16[10] = r.ctx.client_ip16[11] = 0xff;
    r.ctx.client_ip16[12] = 203;
    r.ctx.client_ip16[14] = uint8_t(client >> 8);
    r.ctx.client_ip16[15] = uint8_t(client);
    ++client;
    r.ctx.config = &cfg;
    r.ctx.route = route;
    r.ctx.max_body_bytes = cfg.limits.max_body_bytes;

    bool answered = false;
    for (size_t i = 0; i < chain.size(); ++i) {
      r.filters_run = i + 1;
      FilterStatus s = chain[i]->onRequestHeaders(r.ctx, r.headers);
      if (s != FilterStatus::Continue) {
        answered = true;
        break;
      }
    }
    if (answered) {
      ++stopped;
      r.response.status = r.driver.status;
      r.response.local_reply = true;
    } else {
      r.response.status = 200;
      r.response.headers.fields() = upstream.fields;
    }
    for (size_t i = chain.size(); i-- > 0;) {
      const Filter& f = *chain[i];
      if (i < r.filters_run || f.runsOnEveryResponse()) f.onResponseHeaders(r.ctx, r.response);
    }
    for (const Header& h : r.ctx.response_headers_to_add) r.response.headers.addRef(h.name, h.value);
  };

  // Check once that the chain does what the benchmark claims.
  one();
  bool is_preflight = kind == Kind::Preflight;
  if (r.response.headers.get("access-control-allow-origin") != origin ||
      r.response.headers.get("x-frame-options") != "DENY" || r.ctx.request_id.empty() ||
      (r.response.status == 204) != is_preflight || r.response.headers.has("server")) {
    state.SkipWithError("the chain did not decorate the response as expected");
    return;
  }
  stopped = 0;

  for (auto _ : state) {
    one();
    benchmark::DoNotOptimize(r.response.headers.size());
    out_headers += r.response.headers.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["filters"] = double(chain.size());
  state.counters["resp_headers"] = double(out_headers) / double(state.iterations());
  if (!is_preflight && stopped) state.SkipWithError("a request was refused");
}

// The goal: the default chain, no rate limiting, an id to generate, an exact origin.
void BM_FilterChainDefault(benchmark::State& state) {
  runChain(state, "bench-chain", "https://app.example.com", false, Kind::Actual);
}
BENCHMARK(BM_FilterChainDefault);

void BM_FilterChainDefaultIncomingId(benchmark::State& state) {
  runChain(state, "bench-chain", "https://app.example.com", true, Kind::Actual);
}
BENCHMARK(BM_FilterChainDefaultIncomingId);

void BM_FilterChainDefaultRegexOrigin(benchmark::State& state) {
  runChain(state, "bench-chain", "https://tenant-42.example.com", false, Kind::Actual);
}
BENCHMARK(BM_FilterChainDefaultRegexOrigin);

void BM_FilterChainPreflight(benchmark::State& state) {
  runChain(state, "bench-chain", "https://app.example.com", false, Kind::Preflight);
}
BENCHMARK(BM_FilterChainPreflight);

// For reference: the same chain plus a client_ip rate limit that never refuses
// (256 clients per thread).
void BM_FilterChainWithRateLimit(benchmark::State& state) {
  runChain(state, "bench-chain-rl", "https://app.example.com", false, Kind::Actual);
}
BENCHMARK(BM_FilterChainWithRateLimit);

}  // namespace
}  // namespace gw
