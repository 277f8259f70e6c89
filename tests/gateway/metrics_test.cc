#include "gateway/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace gw::metrics {
namespace {

// A worker's store, registered for scrapes for the life of the object.
class RegisteredStore {
 public:
  RegisteredStore() { registerStore(&store_); }
  ~RegisteredStore() { unregisterStore(&store_); }
  MetricStore& operator*() { return store_; }
  MetricStore* operator->() { return &store_; }

 private:
  MetricStore store_{false};
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The value of the sample line that starts with `series` followed by a space.
std::optional<std::string> sample(const std::string& text, const std::string& series) {
  for (const std::string& line : lines(text)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return line.substr(series.size() + 1);
    }
  }
  return std::nullopt;
}

// The bucket lines of one histogram series, in order: their counts and le labels.
void bucketLines(const std::string& text, const std::string& base, const std::string& labels,
                 std::vector<long long>& values, std::vector<std::string>& les) {
  const std::string prefix = base + "_bucket{" + labels + ",le=\"";
  for (const std::string& line : lines(text)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    les.push_back(line.substr(prefix.size(), line.find('"', prefix.size()) - prefix.size()));
    values.push_back(std::stoll(line.substr(line.rfind(' ') + 1)));
  }
}

std::string render() { return renderPrometheus("9.9.9-test", 1700000123456ull); }

std::string typeName(Type t) {
  switch (t) {
    case Type::Counter: return "counter";
    case Type::Gauge: return "gauge";
    case Type::Histogram: return "histogram";
  }
  return "?";
}

TEST(MetricsTest, LabelIdsAreStableAndRoundTrip) {
  uint16_t a = labelId("metrics-test-route");
  EXPECT_NE(a, 0u);
  EXPECT_EQ(labelId("metrics-test-route"), a);
  EXPECT_NE(labelId("metrics-test-route-2"), a);
  EXPECT_EQ(labelText(a), "metrics-test-route");
  EXPECT_EQ(labelText(0), "");
  EXPECT_EQ(labelText(statusLabel(404)), "404");
  EXPECT_EQ(labelText(statusLabel(99)), "599");  // out of range: one bucket, not a new series
  EXPECT_EQ(labelText(methodLabel("GET")), "GET");
  EXPECT_EQ(labelText(methodLabel("BREW")), "other");
  EXPECT_EQ(labelText(methodLabel("get")), "other");  // methods are case-sensitive
}

TEST(MetricsTest, EveryDefinitionHasHelpAndType) {
  std::string text = render();
  for (size_t i = 0; i < size_t(Id::kCount); ++i) {
    const Definition& d = definition(Id(i));
    std::string name(d.name);
    EXPECT_NE(text.find("# HELP " + name + " "), std::string::npos) << name;
    EXPECT_NE(text.find("# TYPE " + name + " " + typeName(d.type) + "\n"), std::string::npos)
        << name;
    if (d.type == Type::Counter) {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    }
  }
  for (const char* p : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                        "process_open_fds", "process_max_fds", "process_start_time_seconds"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + p + " "), std::string::npos) << p;
  }
  EXPECT_EQ(sample(text, "process_start_time_seconds"), "1700000123.456");
  EXPECT_EQ(sample(text, "gateway_build_info{version=\"9.9.9-test\"}"), "1");
  // Unlabelled series show before their first event.
  EXPECT_TRUE(sample(text, "gateway_requests_in_flight").has_value());
}

TEST(MetricsTest, AddSetAndObserveShowInTheScrape) {
  RegisteredStore store;
  uint16_t route = labelId("mt-add-route");
  uint16_t listener = labelId("mt-add-listener");
  uint16_t h11 = protocolLabel("HTTP/1.1"), h2 = protocolLabel("HTTP/2");
  store->add(Id::RequestsTotal, {route, methodLabel("GET"), statusLabel(200), h11});
  store->add(Id::RequestsTotal, {route, methodLabel("GET"), statusLabel(200), h11}, 4);
  store->add(Id::RequestsTotal, {route, methodLabel("POST"), statusLabel(503), h11});
  // The fourth label makes its own series.
  store->add(Id::RequestsTotal, {route, methodLabel("GET"), statusLabel(200), h2}, 2);
  // Back to the first series after another one of the same metric (the store remembers
  // the last cell it found per metric).
  store->add(Id::RequestsTotal, {route, methodLabel("GET"), statusLabel(200), h11});
  store->set(Id::ConnectionsActive, {listener, 0, 0}, 7);
  store->set(Id::ConnectionsActive, {listener, 0, 0}, 3);
  store->add(Id::ConnectionsActive, {listener, 0, 0}, -1);
  std::string text = render();
  EXPECT_EQ(sample(text, R"(gateway_requests_total{route="mt-add-route",method="GET",code="200",protocol="HTTP/1.1"})"),
            "6");
  EXPECT_EQ(sample(text, R"(gateway_requests_total{route="mt-add-route",method="GET",code="200",protocol="HTTP/2"})"),
            "2");
  EXPECT_EQ(sample(text, R"(gateway_requests_total{route="mt-add-route",method="POST",code="503",protocol="HTTP/1.1"})"),
            "1");
  EXPECT_EQ(sample(text, R"(gateway_connections_active{listener="mt-add-listener"})"), "2");
}

TEST(MetricsTest, ScrapeSumsEveryRegisteredStore) {
  RegisteredStore one, two;
  uint16_t route = labelId("mt-sum-route");
  one->add(Id::RateLimited, {route, 0, 0}, 2);
  two->add(Id::RateLimited, {route, 0, 0}, 3);
  process().add(Id::RateLimited, {route, 0, 0}, 10);
  std::string text = render();
  EXPECT_EQ(sample(text, R"(gateway_rate_limited_total{route="mt-sum-route"})"), "15");
}

TEST(MetricsTest, UnregisteredStoreIsNoLongerSummed) {
  uint16_t route = labelId("mt-unreg-route");
  {
    RegisteredStore gone;
    gone->add(Id::CorsPreflights, {route, 0, 0}, 5);
    EXPECT_EQ(sample(render(), R"(gateway_cors_preflights_total{route="mt-unreg-route"})"), "5");
  }
  EXPECT_FALSE(sample(render(), R"(gateway_cors_preflights_total{route="mt-unreg-route"})"));
}

TEST(MetricsTest, ManySeriesInOneStoreSurviveTableGrowth) {
  RegisteredStore store;
  std::vector<uint16_t> routes;
  for (int i = 0; i < 300; ++i) routes.push_back(labelId("mt-grow-" + std::to_string(i)));
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < routes.size(); ++i) store->add(Id::RateLimited, {routes[i], 0, 0}, int64_t(i));
  }
  std::string text = render();
  for (size_t i = 0; i < routes.size(); i += 37) {
    EXPECT_EQ(sample(text, "gateway_rate_limited_total{route=\"mt-grow-" + std::to_string(i) + "\"}"),
              std::to_string(3 * i));
  }
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndEndWithCount) {
  RegisteredStore store;
  uint16_t route = labelId("mt-hist-route");
  const uint64_t durations_ns[] = {
      100'000,         // 0.1 ms: first bucket
      250'000,         // exactly 0.25 ms: le is inclusive
      300'000,         // 0.3 ms
      1'000'000,       // 1 ms
      3'000'000'000,   // 3 s
      20'000'000'000,  // 20 s: only +Inf
  };
  uint64_t total_ns = 0;
  for (uint64_t d : durations_ns) {
    store->observe(Id::RequestDuration, {route, 0, 0}, d);
    total_ns += d;
  }
  std::string text = render();
  const std::string base = "gateway_request_duration_seconds";
  const std::string labels = "route=\"mt-hist-route\"";
  std::vector<long long> values;
  std::vector<std::string> les;
  bucketLines(text, base, labels, values, les);
  ASSERT_EQ(values.size(), kBuckets.size() + 1);
  // kBuckets: 0.00025 0.0005 0.001 0.0025 ... 2.5 5 7.5 10, then +Inf.
  EXPECT_EQ(values[0], 2);   // <= 0.25 ms
  EXPECT_EQ(values[1], 3);   // <= 0.5 ms
  EXPECT_EQ(values[2], 4);   // <= 1 ms
  EXPECT_EQ(values[12], 4);  // <= 2.5 s
  EXPECT_EQ(values[13], 5);  // <= 5 s
  EXPECT_EQ(values[15], 5);  // <= 10 s
  EXPECT_EQ(values[16], 6);  // +Inf
  for (size_t i = 1; i < values.size(); ++i) EXPECT_LE(values[i - 1], values[i]) << i;
  EXPECT_EQ(les.back(), "+Inf");
  EXPECT_EQ(sample(text, base + "_bucket{" + labels + ",le=\"+Inf\"}"), "6");
  EXPECT_EQ(sample(text, base + "_count{" + labels + "}"), "6");
  auto sum = sample(text, base + "_sum{" + labels + "}");
  ASSERT_TRUE(sum);
  EXPECT_NEAR(std::stod(*sum), double(total_ns) / 1e9, 1e-9);
  // Each le parses back to its bound.
  for (size_t i = 0; i < kBuckets.size(); ++i) EXPECT_EQ(std::stod(les[i]), kBuckets[i]) << les[i];
}

// Bucket bounds spelled as every Prometheus client library spells them (Go's
// strconv.FormatFloat(b, 'g', -1, 64) and Python's repr give "0.0005"), so that queries
// and recording rules selecting a bucket by its le label match.
TEST(MetricsTest, BucketBoundsAreWrittenAsPlainDecimals) {
  RegisteredStore store;
  store->observe(Id::RequestDuration, {labelId("mt-le-route"), 0, 0}, 1);
  std::vector<long long> values;
  std::vector<std::string> les;
  bucketLines(render(), "gateway_request_duration_seconds", "route=\"mt-le-route\"", values, les);
  const std::vector<std::string> want = {"0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                                         "0.025",   "0.05",   "0.1",   "0.25",   "0.5",   "1",
                                         "2.5",     "5",      "7.5",   "10",     "+Inf"};
  EXPECT_EQ(les, want);
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  RegisteredStore store;
  uint16_t nasty = labelId("mt-\"quoted\" back\\slash\nnewline");
  store->add(Id::AuthFailures, {nasty, labelId("mt-reason"), 0});
  std::string text = render();
  EXPECT_EQ(sample(text, "gateway_auth_failures_total{route=\"mt-\\\"quoted\\\" back\\\\slash\\nnewline\","
                         "reason=\"mt-reason\"}"),
            "1");
  // No sample line is broken in two by the newline.
  for (const std::string& line : lines(text)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(line.starts_with("gateway_") || line.starts_with("process_")) << line;
  }
}

// promtool (Debian's prometheus package) parses and lints the exposition.
TEST(MetricsTest, ScrapePassesPromtoolCheckMetrics) {
  const char* promtool = "/usr/bin/promtool";
  if (access(promtool, X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed (apt-get install prometheus) - not checked";
  }
  RegisteredStore store;
  uint16_t route = labelId("mt-promtool \"route\"\\\n");
  uint16_t upstream = labelId("mt-promtool-upstream");
  store->add(Id::RequestsTotal, {route, methodLabel("GET"), statusLabel(200)}, 3);
  store->observe(Id::RequestDuration, {route, 0, 0}, 1'234'567);
  store->observe(Id::UpstreamRequestDuration, {upstream, 0, 0}, 99'000'000'000);
  store->set(Id::UpstreamEndpointHealthy, {upstream, labelId("127.0.0.1:9000"), 0}, 1);
  store->add(Id::RequestRejected, {route, labelId("size"), 0});
  std::string text = render();

  std::string path =
      (std::filesystem::temp_directory_path() / ("metrics_test_" + std::to_string(getpid()) + ".prom"))
          .string();
  std::ofstream(path) << text;
  std::string command = std::string(promtool) + " check metrics < " + path + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  int status = pclose(pipe);
  std::filesystem::remove(path);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "promtool check metrics:\n" << output << "\non:\n" << text;
}

}  // namespace
}  // namespace gw::metrics
