#include "gateway/upstream/endpoint_state.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace gw {
namespace {

CircuitBreakerConfig breaker(uint32_t failures, int64_t open_for_ms) {
  CircuitBreakerConfig cb;
  cb.consecutive_failures = failures;
  cb.open_for = Millis(open_for_ms);
  return cb;
}

// Admits a request at `now` and says whether it got through and as the trial.
struct Admission {
  bool admitted;
  bool trial;
};
Admission admit(EndpointState& e, int64_t now) {
  bool trial = true;
  bool ok = e.admits(now, &trial);
  return {ok, trial};
}

TEST(CircuitBreakerTest, ClosedBreakerAdmitsEverythingWithoutATrial) {
  EndpointState e;
  for (int i = 0; i < 5; ++i) {
    Admission a = admit(e, 1000);
    EXPECT_TRUE(a.admitted);
    EXPECT_FALSE(a.trial);
  }
  EXPECT_TRUE(e.eligible(1000));
  EXPECT_FALSE(e.breakerOpen(1000));
}

TEST(CircuitBreakerTest, OpensAfterNConsecutiveFailures) {
  EndpointState e;
  auto cb = breaker(3, 5000);
  EXPECT_FALSE(e.recordFailure(&cb, 1000));
  EXPECT_FALSE(e.recordFailure(&cb, 1001));
  EXPECT_TRUE(admit(e, 1001).admitted);
  EXPECT_TRUE(e.recordFailure(&cb, 1002));  // the third: opens, reported once
  EXPECT_TRUE(e.breakerOpen(1002));
  EXPECT_FALSE(admit(e, 1002).admitted);
  EXPECT_FALSE(e.eligible(1002));
  EXPECT_FALSE(admit(e, 6001).admitted);  // open_for not yet over
  // More failures while open (requests that were already in flight) do not report again.
  EXPECT_FALSE(e.recordFailure(&cb, 1003));
}

TEST(CircuitBreakerTest, ASuccessResetsTheConsecutiveCount) {
  EndpointState e;
  auto cb = breaker(3, 5000);
  e.recordFailure(&cb, 1);
  e.recordFailure(&cb, 2);
  EXPECT_FALSE(e.recordSuccess());  // nothing was open
  EXPECT_FALSE(e.recordFailure(&cb, 3));
  EXPECT_FALSE(e.recordFailure(&cb, 4));
  EXPECT_FALSE(e.breakerOpen(4));
  EXPECT_TRUE(e.recordFailure(&cb, 5));
}

TEST(CircuitBreakerTest, WithoutABreakerConfigFailuresNeverOpen) {
  EndpointState e;
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(e.recordFailure(nullptr, i));
  EXPECT_TRUE(admit(e, 100).admitted);
  EXPECT_FALSE(e.breakerOpen(100));
}

// Opens a 1-failure breaker at t=1000 for 5 s: half-open from t=6000.
void openAt1000(EndpointState& e, const CircuitBreakerConfig& cb) {
  ASSERT_TRUE(e.recordFailure(&cb, 1000));
  ASSERT_TRUE(e.breakerOpen(5999));
}

TEST(CircuitBreakerTest, HalfOpenAdmitsExactlyOneTrial) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  EXPECT_TRUE(e.eligible(6000));
  EXPECT_FALSE(e.breakerOpen(6000));  // half open, no trial yet
  Admission first = admit(e, 6000);
  EXPECT_TRUE(first.admitted);
  EXPECT_TRUE(first.trial);
  for (int i = 0; i < 10; ++i) {
    Admission other = admit(e, 6000 + i);
    EXPECT_FALSE(other.admitted);
    EXPECT_FALSE(other.trial);
  }
  EXPECT_FALSE(e.eligible(6001));
  EXPECT_TRUE(e.breakerOpen(6001));  // a trial is out
}

TEST(CircuitBreakerTest, HalfOpenTrialIsClaimedByOneThreadOnly) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  std::atomic<int> trials{0}, admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        bool trial = false;
        if (e.admits(7000, &trial)) ++admitted;
        if (trial) ++trials;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(trials.load(), 1);
  EXPECT_EQ(admitted.load(), 1);
}

TEST(CircuitBreakerTest, TrialSuccessClosesTheBreaker) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  ASSERT_TRUE(admit(e, 6000).trial);
  EXPECT_TRUE(e.recordSuccess(/*trial=*/true));  // reports the close
  EXPECT_FALSE(e.breakerOpen(6001));
  EXPECT_TRUE(e.eligible(6001));
  for (int i = 0; i < 3; ++i) {
    Admission a = admit(e, 6001);
    EXPECT_TRUE(a.admitted);
    EXPECT_FALSE(a.trial);
  }
  EXPECT_FALSE(e.recordSuccess());  // already closed
  // Closed means counting from zero again.
  auto cb3 = breaker(3, 5000);
  EXPECT_FALSE(e.recordFailure(&cb3, 6002));
  EXPECT_FALSE(e.recordFailure(&cb3, 6003));
  EXPECT_TRUE(e.recordFailure(&cb3, 6004));
}

TEST(CircuitBreakerTest, TrialFailureReopensForAnotherPeriod) {
  EndpointState e;
  auto cb = breaker(5, 5000);
  for (int i = 0; i < 5; ++i) e.recordFailure(&cb, 1000);
  ASSERT_TRUE(e.breakerOpen(1000));
  ASSERT_TRUE(admit(e, 6000).trial);
  // A failed trial reopens at once, whatever the consecutive count threshold.
  EXPECT_TRUE(e.recordFailure(&cb, 6500, /*trial=*/true));
  EXPECT_TRUE(e.breakerOpen(6500));
  EXPECT_FALSE(admit(e, 6500).admitted);
  EXPECT_FALSE(admit(e, 11499).admitted);  // open until 6500 + 5000
  Admission next = admit(e, 11500);
  EXPECT_TRUE(next.admitted);
  EXPECT_TRUE(next.trial);
}

// A request admitted before the breaker opened can fail while the half-open trial is out
// (it waited for upstream_response). Its failure must not hand the trial to someone else:
// the trial is still in flight, so no second request may be admitted as one.
TEST(CircuitBreakerTest, StrayFailureDuringTheTrialDoesNotAdmitASecondTrial) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  ASSERT_TRUE(admit(e, 6000).trial);  // trial T goes out
  e.recordFailure(&cb, 6100);         // request R, admitted before t=1000, times out
  Admission second = admit(e, 20000);  // T is still in flight: its outcome decides
  EXPECT_FALSE(second.trial && second.admitted)
      << "two half-open trials in flight at once";
}

TEST(CircuitBreakerTest, ReleasedTrialCanBeClaimedAgain) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  ASSERT_TRUE(admit(e, 6000).trial);
  EXPECT_FALSE(admit(e, 6000).admitted);
  e.releaseTrial();  // the request never went out (e.g. the client left)
  EXPECT_TRUE(e.eligible(6000));
  Admission again = admit(e, 6000);
  EXPECT_TRUE(again.admitted);
  EXPECT_TRUE(again.trial);
}

TEST(CircuitBreakerTest, UnhealthyEndpointIsNeverAdmittedNorEligible) {
  EndpointState e;
  e.healthy = false;
  Admission a = admit(e, 0);
  EXPECT_FALSE(a.admitted);
  EXPECT_FALSE(a.trial);
  EXPECT_FALSE(e.eligible(0));
  // Not even for the trial of a half-open breaker: the trial must not be consumed.
  auto cb = breaker(1, 10);
  e.recordFailure(&cb, 0);
  EXPECT_FALSE(admit(e, 100).admitted);
  e.healthy = true;
  EXPECT_TRUE(admit(e, 100).trial);
}

TEST(CircuitBreakerTest, EligibleClaimsNothing) {
  EndpointState e;
  auto cb = breaker(1, 5000);
  openAt1000(e, cb);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(e.eligible(6000));
  EXPECT_TRUE(admit(e, 6000).trial);  // still there after all those eligible() calls
}

struct EligibleCase {
  const char* label;
  bool healthy;
  bool open;          // opened at t=1000 for 5 s
  bool trial_out;     // the half-open trial was claimed at t=6000
  int64_t now;
  bool eligible;
};

TEST(CircuitBreakerTest, EligibleTable) {
  const EligibleCase cases[] = {
      {"closed", true, false, false, 7000, true},
      {"unhealthy", false, false, false, 7000, false},
      {"open", true, true, false, 3000, false},
      {"open_last_ms", true, true, false, 5999, false},
      {"half_open", true, true, false, 6000, true},
      {"half_open_trial_out", true, true, true, 7000, false},
      {"half_open_unhealthy", false, true, false, 7000, false},
  };
  for (const EligibleCase& c : cases) {
    EndpointState e;
    auto cb = breaker(1, 5000);
    if (c.open) e.recordFailure(&cb, 1000);
    if (c.trial_out) {
      ASSERT_TRUE(admit(e, 6000).trial) << c.label;
    }
    e.healthy = c.healthy;
    EXPECT_EQ(e.eligible(c.now), c.eligible) << c.label;
  }
}

TEST(UpstreamStateTest, StateIsSharedAcrossReloadsByNameAndEndpoint) {
  UpstreamConfig config;
  config.name = "endpoint-state-test-upstream";
  config.endpoints.resize(2);
  config.endpoints[0].text = "127.0.0.1:1";
  config.endpoints[1].text = "127.0.0.1:2";
  auto first = upstreamState(config);
  ASSERT_EQ(first->endpoints.size(), 2u);
  EXPECT_EQ(first->endpoints[0]->address, "127.0.0.1:1");
  EXPECT_EQ(first->endpoints[0]->upstream, config.name);
  EXPECT_EQ(upstreamState(config), first);  // same config: same state
  // A reload that adds an endpoint gets a new list but keeps the old endpoints' state.
  first->endpoints[1]->healthy = false;
  config.endpoints.resize(3);
  config.endpoints[2].text = "127.0.0.1:3";
  auto second = upstreamState(config);
  EXPECT_NE(second, first);
  ASSERT_EQ(second->endpoints.size(), 3u);
  EXPECT_EQ(second->endpoints[1], first->endpoints[1]);
  EXPECT_FALSE(second->endpoints[1]->healthy.load());
  EXPECT_TRUE(second->endpoints[2]->healthy.load());
}

}  // namespace
}  // namespace gw
