#include "gateway/admin/status.h"

#include <gtest/gtest.h>

#include "gateway/config/config_loader.h"
#include "gateway/metrics.h"

namespace gw {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

std::shared_ptr<const Config> load(const std::string& yaml) {
  LoadResult r = loadConfigString(yaml, "status_test.yaml");
  EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].format());
  return r.config;
}

const char* kConfig = R"(
listeners:
  - {name: "web <b>", address: "127.0.0.1:0"}
upstreams:
  - name: st-api
    endpoints: ["127.0.0.1:1", "127.0.0.1:2"]
default_filters:
  request_id: {}
  security_headers: {}
routes:
  - name: "st-<script>alert(1)</script>"
    match: {path_prefix: /}
    upstream: st-api
    filters:
      rate_limit: {limits: [{key: client_ip, requests: 5, per: 1m}]}
)";

TEST(Status, ReportsEveryPartWithTheRouteWindowsOfAllWorkers) {
  auto cfg = load(kConfig);
  ASSERT_TRUE(cfg);
  metrics::MetricStore one(false), two(false);
  metrics::registerStore(&one);
  metrics::registerStore(&two);
  uint64_t now = 5000 * kSecond;
  uint16_t route = cfg->routes[0].metrics_label;
  for (int i = 0; i < 90; ++i) one.windows().record(route, now - 10 * kSecond, {4'000'000, false, false});
  for (int i = 0; i < 30; ++i) two.windows().record(route, now, {4'000'000, true, i < 6});
  // Out of the window: not counted.
  one.windows().record(route, now - 61 * kSecond, {4'000'000, true, true});

  StatusInput in;
  in.config = cfg.get();
  in.start_ms = 1'700'000'000'000;
  in.now_ms = in.start_ms + 3600 * 1000;
  in.loaded_at_ms = in.start_ms;
  in.last_reload = {in.start_ms + 1000, false};
  in.now_ns = now;
  nlohmann::json s = statusJson(in);
  metrics::unregisterStore(&one);
  metrics::unregisterStore(&two);

  EXPECT_EQ(s["version"], GATEWAY_VERSION);
  EXPECT_EQ(s["uptime_seconds"], 3600);
  EXPECT_EQ(s["config"]["loaded_at"], "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(s["config"]["last_reload"]["result"], "failure");
  ASSERT_EQ(s["listeners"].size(), 1u);
  EXPECT_EQ(s["listeners"][0]["name"], "web <b>");
  EXPECT_EQ(s["listeners"][0]["connections"]["HTTP/2"], 0);
  ASSERT_EQ(s["routes"].size(), 1u);
  const auto& r = s["routes"][0];
  EXPECT_EQ(r["name"], "st-<script>alert(1)</script>");  // escaped by the page, not here
  EXPECT_EQ(r["upstream"], "st-api");
  EXPECT_EQ(r["filters"], nlohmann::json({"request_id", "rate_limit", "security_headers"}));
  EXPECT_DOUBLE_EQ(r["requests_per_second"].get<double>(), 2.0);  // 120 over 60 s
  EXPECT_DOUBLE_EQ(r["error_rate"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(r["rate_limited_per_second"].get<double>(), 0.1);
  EXPECT_NEAR(r["p50_ms"].get<double>(), 4, 1);
  EXPECT_NEAR(r["p99_ms"].get<double>(), 4, 1);
  ASSERT_EQ(s["upstreams"].size(), 1u);
  const auto& eps = s["upstreams"][0]["endpoints"];
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[1]["address"], "127.0.0.1:2");
  EXPECT_EQ(eps[0]["status"], "healthy");
  EXPECT_EQ(eps[0]["breaker"], "closed");
  EXPECT_EQ(eps[0]["in_flight"], 0);
  EXPECT_FALSE(s.contains("redis"));  // only when used
  EXPECT_TRUE(s["jwks"].is_array());
}

TEST(Status, AYoungProcessDividesByItsAge) {
  auto cfg = load(kConfig);
  ASSERT_TRUE(cfg);
  metrics::MetricStore one(false);
  metrics::registerStore(&one);
  uint64_t now = 7000 * kSecond;
  for (int i = 0; i < 20; ++i) one.windows().record(cfg->routes[0].metrics_label, now, {1'000'000, false, false});
  StatusInput in;
  in.config = cfg.get();
  in.start_ms = 1'000'000;
  in.now_ms = in.start_ms + 10'000;
  in.now_ns = now;
  nlohmann::json s = statusJson(in);
  metrics::unregisterStore(&one);
  EXPECT_DOUBLE_EQ(s["routes"][0]["requests_per_second"].get<double>(), 2.0);
  EXPECT_TRUE(s["config"]["last_reload"]["at"].is_null());
}

}  // namespace
}  // namespace gw
