#include "gateway/admin/status.h"

#include <algorithm>
#include <cmath>

#include "filters/registry.h"
#include "gateway/upstream/endpoint_state.h"
#include "gateway/admin/health.h"
#include "gateway/http_util.h"
#include "gateway/metrics.h"

namespace gw {

namespace {

nlohmann::json timestamp(uint64_t unix_ms) {
  if (unix_ms == 0) return nullptr;
  char text[24];
  formatTimestamp(unix_ms, text);
  return std::string(text, sizeof text);
}

// Two decimals are all a glance needs, and they keep the document short.
double rounded(double v) { return std::round(v * 100) / 100; }

nlohmann::json routeJson(const RouteConfig& route, const StatusInput& in, double window_s) {
  window::Totals t;
  metrics::forEachStore([&](const metrics::MetricStore& s) {
    s.windows().sumInto(route.metrics_label, in.now_ns, t);
  });
  nlohmann::json filters = nlohmann::json::array();
  for (std::string_view name : filterRunOrder(route)) filters.push_back(name);
  return {
      {"name", route.name},
      {"upstream", route.admin ? nlohmann::json(nullptr) : nlohmann::json(route.upstream)},
      {"filters", std::move(filters)},
      {"requests_per_second", rounded(double(t.requests) / window_s)},
      {"error_rate", t.requests ? rounded(double(t.errors) / double(t.requests) * 100) / 100 : 0.0},
      {"p50_ms", rounded(t.quantileMs(0.5))},
      {"p99_ms", rounded(t.quantileMs(0.99))},
      {"rate_limited_per_second", rounded(double(t.rate_limited) / window_s)},
  };
}

std::string_view breakerName(const EndpointState& e, int64_t now_ms) {
  int64_t until = e.open_until_ms.load(std::memory_order_acquire);
  if (until == 0) return "closed";
  return now_ms < until ? "open" : "half_open";
}

nlohmann::json upstreamJson(const UpstreamConfig& u) {
  std::shared_ptr<UpstreamState> state = upstreamState(u);
  int64_t now_ms = monotonicMs();
  nlohmann::json endpoints = nlohmann::json::array();
  for (size_t i = 0; i < state->endpoints.size() && i < u.endpoints.size(); ++i) {
    const EndpointState& e = *state->endpoints[i];
    int64_t latency_us = e.last_latency_us.load(std::memory_order_relaxed);
    endpoints.push_back({
        {"address", e.address},
        {"status", e.healthy.load(std::memory_order_relaxed) ? "healthy" : "unhealthy"},
        {"breaker", breakerName(e, now_ms)},
        {"in_flight", metrics::total(metrics::Id::UpstreamEndpointInFlight,
                                     {u.metrics_label, metrics::labelId(u.endpoints[i].text), 0})},
        {"latency_ms", latency_us < 0 ? nlohmann::json(nullptr) : nlohmann::json(rounded(latency_us / 1000.0))},
    });
  }
  return {{"name", u.name}, {"endpoints", std::move(endpoints)}};
}

}  // namespace

nlohmann::json statusJson(const StatusInput& in) {
  const Config& cfg = *in.config;
  uint64_t uptime_s = in.now_ms > in.start_ms ? (in.now_ms - in.start_ms) / 1000 : 0;
  // A process younger than a minute has not had a whole window: divide by what it had.
  double window_s = double(std::clamp<uint64_t>(uptime_s, 1, window::kWindowSeconds));

  nlohmann::json listeners = nlohmann::json::array();
  for (const ListenerConfig& l : cfg.listeners) {
    listeners.push_back({
        {"name", l.name},
        {"address", l.address.text},
        {"tls", l.tls.has_value()},
        // HTTP/2 to clients (SPEC §7) is not built yet: every connection is HTTP/1.1.
        {"connections",
         {{"HTTP/1.1", metrics::total(metrics::Id::ConnectionsActive, {l.metrics_label, 0, 0})},
          {"HTTP/2", 0}}},
    });
  }
  nlohmann::json routes = nlohmann::json::array();
  for (const RouteConfig& r : cfg.routes) routes.push_back(routeJson(r, in, window_s));
  nlohmann::json upstreams = nlohmann::json::array();
  for (const UpstreamConfig& u : cfg.upstreams) upstreams.push_back(upstreamJson(u));

  health::Report report = health::collect();
  nlohmann::json jwks = nlohmann::json::array();
  for (const JwtProviderConfig& p : cfg.jwt_providers) {
    nlohmann::json entry = {{"name", p.name}, {"status", "unknown"}};
    auto it = report.checks.find("jwks:" + p.name);
    if (it != report.checks.end()) entry.update(*it);
    entry["name"] = p.name;
    jwks.push_back(std::move(entry));
  }

  nlohmann::json out = {
      {"version", GATEWAY_VERSION},
      {"uptime_seconds", uptime_s},
      {"status", health::statusName(report.status)},
      {"config",
       {{"file", cfg.source_file},
        {"loaded_at", timestamp(in.loaded_at_ms)},
        {"last_reload",
         {{"at", timestamp(in.last_reload.at_ms)},
          {"result", in.last_reload.at_ms == 0 ? nlohmann::json(nullptr)
                                               : nlohmann::json(in.last_reload.ok ? "success" : "failure")}}}}},
      {"window_seconds", window_s},
      {"listeners", std::move(listeners)},
      {"routes", std::move(routes)},
      {"upstreams", std::move(upstreams)},
      {"jwks", std::move(jwks)},
  };
  if (cfg.rate_limit_store.type == RateLimitStoreType::Redis) {
    nlohmann::json redis = {{"address", cfg.rate_limit_store.redis.address}, {"status", "unknown"}};
    auto it = report.checks.find("redis");
    if (it != report.checks.end()) redis.update(*it);
    out["redis"] = std::move(redis);
  }
  return out;
}

}  // namespace gw
