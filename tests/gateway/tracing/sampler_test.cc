#include "gateway/tracing/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace gw::tracing {
namespace {

// Trace ids as random as the gateway's.
size_t sampledOf(const Sampler& s, int n, const uint8_t* parent_flags = nullptr) {
  std::mt19937_64 rng(42);
  size_t sampled = 0;
  for (int i = 0; i < n; ++i) {
    uint8_t id[16];
    for (auto& b : id) b = uint8_t(rng());
    sampled += s.sample(id, parent_flags);
  }
  return sampled;
}

TEST(SamplerTest, RatioOneAndZero) {
  EXPECT_EQ(sampledOf(Sampler(1.0, false), 1000), 1000u);
  EXPECT_EQ(sampledOf(Sampler(0.0, false), 1000), 0u);
  uint8_t max_id[16];
  for (auto& b : max_id) b = 0xff;
  EXPECT_TRUE(Sampler(1.0, false).sample(max_id, nullptr));
  EXPECT_FALSE(Sampler(0.999999, false).sample(max_id, nullptr));
}

TEST(SamplerTest, RatioIsTheShareOfTraces) {
  for (double ratio : {0.01, 0.1, 0.5, 0.9}) {
    double share = double(sampledOf(Sampler(ratio, false), 100000)) / 100000;
    EXPECT_NEAR(share, ratio, 0.01) << ratio;
  }
}

TEST(SamplerTest, DecidesByTraceIdAlone) {
  // The same trace gets the same answer on every call (and every gateway).
  Sampler s(0.5, false);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100; ++i) {
    uint8_t id[16];
    for (auto& b : id) b = uint8_t(rng());
    bool first = s.sample(id, nullptr);
    EXPECT_EQ(s.sample(id, nullptr), first);
    // Only the id's second half counts, as in OpenTelemetry's TraceIdRatioBased.
    uint8_t other[16];
    std::copy(id, id + 16, other);
    other[0] ^= 0xff;
    EXPECT_EQ(s.sample(other, nullptr), first);
  }
}

TEST(SamplerTest, ParentBasedFollowsTheCallersFlag) {
  uint8_t sampled = 0x01, not_sampled = 0x00, other_bits = 0xfe;
  EXPECT_EQ(sampledOf(Sampler(0.0, true), 100, &sampled), 100u);
  EXPECT_EQ(sampledOf(Sampler(1.0, true), 100, &not_sampled), 0u);
  EXPECT_EQ(sampledOf(Sampler(1.0, true), 100, &other_bits), 0u);
  // Without a parent, the ratio decides.
  EXPECT_EQ(sampledOf(Sampler(1.0, true), 100), 100u);
  EXPECT_EQ(sampledOf(Sampler(0.0, true), 100), 0u);
}

TEST(SamplerTest, WithoutParentBasedTheRatioDecidesAlways) {
  uint8_t sampled = 0x01, not_sampled = 0x00;
  EXPECT_EQ(sampledOf(Sampler(0.0, false), 100, &sampled), 0u);
  EXPECT_EQ(sampledOf(Sampler(1.0, false), 100, &not_sampled), 100u);
}

}  // namespace
}  // namespace gw::tracing
