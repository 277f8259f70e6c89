#include "gateway/admin/health.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace gw::health {
namespace {

// The registry is process-wide: each test starts and ends with it empty.
class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override { removeChecks(""); }
  void TearDown() override { removeChecks(""); }

  static void set(const std::string& key, Status status, bool ready = true,
                  nlohmann::json detail = nlohmann::json::object()) {
    setCheck(key, [=] {
      Check c;
      c.status = status;
      c.ready = ready;
      c.detail = detail;
      return c;
    });
  }
};

TEST_F(HealthTest, StatusNames) {
  EXPECT_EQ(statusName(Status::Healthy), "healthy");
  EXPECT_EQ(statusName(Status::Degraded), "degraded");
  EXPECT_EQ(statusName(Status::Unhealthy), "unhealthy");
}

TEST_F(HealthTest, NoChecksIsHealthyAndReady) {
  Report r = collect();
  EXPECT_EQ(r.status, Status::Healthy);
  EXPECT_TRUE(r.ready);
  EXPECT_TRUE(r.checks.is_object());
  EXPECT_TRUE(r.checks.empty());
}

struct AggregationCase {
  const char* label;
  std::vector<std::pair<Status, bool>> checks;  // status, ready
  Status status;
  bool ready;
};

TEST_F(HealthTest, CollectTakesTheWorstStatusAndAndsReadiness) {
  using S = Status;
  const AggregationCase cases[] = {
      {"one_healthy", {{S::Healthy, true}}, S::Healthy, true},
      {"all_healthy", {{S::Healthy, true}, {S::Healthy, true}}, S::Healthy, true},
      {"one_degraded", {{S::Healthy, true}, {S::Degraded, true}}, S::Degraded, true},
      {"degraded_then_healthy", {{S::Degraded, true}, {S::Healthy, true}}, S::Degraded, true},
      {"one_unhealthy", {{S::Healthy, true}, {S::Unhealthy, true}}, S::Unhealthy, true},
      {"unhealthy_beats_degraded_before", {{S::Unhealthy, true}, {S::Degraded, true}}, S::Unhealthy, true},
      {"unhealthy_beats_degraded_after", {{S::Degraded, true}, {S::Unhealthy, true}}, S::Unhealthy, true},
      {"healthy_not_ready", {{S::Healthy, false}, {S::Healthy, true}}, S::Healthy, false},
      {"degraded_not_ready", {{S::Degraded, true}, {S::Degraded, false}}, S::Degraded, false},
  };
  for (const AggregationCase& c : cases) {
    removeChecks("");
    for (size_t i = 0; i < c.checks.size(); ++i) {
      set("check:" + std::to_string(i), c.checks[i].first, c.checks[i].second);
    }
    Report r = collect();
    EXPECT_EQ(r.status, c.status) << c.label;
    EXPECT_EQ(r.ready, c.ready) << c.label;
    EXPECT_EQ(r.checks.size(), c.checks.size()) << c.label;
  }
}

TEST_F(HealthTest, EntriesMergeDetailWithTheirStatus) {
  set("upstream:api", Status::Degraded, true, {{"healthy_endpoints", 1}, {"endpoints", 2}});
  set("redis", Status::Healthy, true, nlohmann::json::array({1, 2}));  // not an object: dropped
  set("jwks:main", Status::Unhealthy, false, {{"status", "overridden"}});
  Report r = collect();
  ASSERT_TRUE(r.checks.contains("upstream:api"));
  EXPECT_EQ(r.checks["upstream:api"]["status"], "degraded");
  EXPECT_EQ(r.checks["upstream:api"]["healthy_endpoints"], 1);
  EXPECT_EQ(r.checks["upstream:api"]["endpoints"], 2);
  EXPECT_EQ(r.checks["redis"], nlohmann::json({{"status", "healthy"}}));
  EXPECT_EQ(r.checks["jwks:main"]["status"], "unhealthy");  // the real status wins
  EXPECT_EQ(r.status, Status::Unhealthy);
  EXPECT_FALSE(r.ready);
}

TEST_F(HealthTest, SetCheckReplacesAndRemoveCheckDeletes) {
  set("redis", Status::Unhealthy);
  set("redis", Status::Healthy);
  Report r = collect();
  EXPECT_EQ(r.checks.size(), 1u);
  EXPECT_EQ(r.status, Status::Healthy);
  removeCheck("redis");
  removeCheck("redis");  // absent: nothing happens
  EXPECT_TRUE(collect().checks.empty());
}

TEST_F(HealthTest, ChecksAreAskedOnEveryCollect) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  setCheck("counted", [calls] {
    ++*calls;
    Check c;
    c.status = *calls > 1 ? Status::Unhealthy : Status::Healthy;
    return c;
  });
  EXPECT_EQ(collect().status, Status::Healthy);
  EXPECT_EQ(collect().status, Status::Unhealthy);
  EXPECT_EQ(calls->load(), 2);
}

TEST_F(HealthTest, RemoveChecksRemovesExactlyThePrefix) {
  for (const char* key : {"upstream:a", "upstream:b", "upstream:", "upstream", "upstreams:x",
                          "redis", "jwks:upstream:a", "a", "zzz"}) {
    set(key, Status::Unhealthy);
  }
  removeChecks("upstream:");
  Report r = collect();
  std::vector<std::string> left;
  for (auto it = r.checks.begin(); it != r.checks.end(); ++it) left.push_back(it.key());
  EXPECT_EQ(left, (std::vector<std::string>{"a", "jwks:upstream:a", "redis", "upstream",
                                            "upstreams:x", "zzz"}));
  removeChecks("nothing-matches");
  EXPECT_EQ(collect().checks.size(), 6u);
  removeChecks("");
  EXPECT_TRUE(collect().checks.empty());
}

TEST_F(HealthTest, ACheckMayRemoveChecksWhileBeingCollected) {
  // collect() calls the checks outside the registry's lock.
  setCheck("self-removing", [] {
    removeChecks("self-");
    return Check{};
  });
  Report r = collect();
  EXPECT_EQ(r.checks.size(), 1u);
  EXPECT_TRUE(collect().checks.empty());
}

TEST_F(HealthTest, RegisterAndCollectFromSeveralThreads) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        std::string key = "t" + std::to_string(t) + ":" + std::to_string(i % 10);
        setCheck(key, [] { return Check{}; });
        Report r = collect();
        (void)r;
        if (i % 3 == 0) removeCheck(key);
      }
    });
  }
  for (auto& t : threads) t.join();
  // Each thread's last write to key k was at i = 190 + k, removed when i % 3 == 0 (k = 2,
  // 5, 8): seven keys per thread remain.
  Report r = collect();
  EXPECT_EQ(r.checks.size(), 28u);
  EXPECT_EQ(r.status, Status::Healthy);
}

}  // namespace
}  // namespace gw::health
