#include "filters/auth/auth_failures.h"

#include <gtest/gtest.h>

#include "tests/filters/auth/auth_metrics.h"

namespace gw::auth {
namespace {

TEST(AuthFailuresTest, CountsIntoTheMetricsStore) {
  AuthFailureCounter counter("auth-metrics-route");
  for (int i = 0; i < 3; ++i) counter.count(Reason::Expired);
  counter.count(Reason::InsufficientScope);
  EXPECT_EQ(test_util::authFailures("auth-metrics-route", Reason::Expired), 3u);
  EXPECT_EQ(test_util::authFailures("auth-metrics-route", Reason::InsufficientScope), 1u);
  EXPECT_EQ(test_util::authFailures("auth-metrics-route", Reason::Missing), 0u);
}

TEST(AuthFailuresTest, ReasonNames) {
  EXPECT_EQ(reasonName(Reason::Missing), "missing");
  EXPECT_EQ(reasonName(Reason::Malformed), "malformed");
  EXPECT_EQ(reasonName(Reason::BadSignature), "bad_signature");
  EXPECT_EQ(reasonName(Reason::Expired), "expired");
  EXPECT_EQ(reasonName(Reason::NotYetValid), "not_yet_valid");
  EXPECT_EQ(reasonName(Reason::WrongIssuer), "wrong_issuer");
  EXPECT_EQ(reasonName(Reason::WrongAudience), "wrong_audience");
  EXPECT_EQ(reasonName(Reason::UnknownKid), "unknown_kid");
  EXPECT_EQ(reasonName(Reason::AlgNotAllowed), "alg_not_allowed");
  EXPECT_EQ(reasonName(Reason::InsufficientScope), "insufficient_scope");
  EXPECT_EQ(reasonName(Reason::KeysUnavailable), "keys_unavailable");
  EXPECT_EQ(reasonName(Reason::UnknownKey), "unknown_key");
}

}  // namespace
}  // namespace gw::auth
