#include "filters/auth/auth_failures.h"

#include <array>

#include "gateway/metrics.h"

namespace gw::auth {
namespace {

constexpr std::array<std::string_view, kReasonCount> kReasonNames = {
    "missing",         "malformed",          "bad_signature",    "expired",
    "not_yet_valid",   "wrong_issuer",       "wrong_audience",   "unknown_kid",
    "alg_not_allowed", "insufficient_scope", "keys_unavailable", "unknown_key",
};

// Interned once, on first use (configuration load builds the first counter).
const std::array<uint16_t, kReasonCount>& reasonLabels() {
  static const std::array<uint16_t, kReasonCount> labels = [] {
    std::array<uint16_t, kReasonCount> out{};
    for (size_t i = 0; i < kReasonCount; ++i) out[i] = metrics::labelId(kReasonNames[i]);
    return out;
  }();
  return labels;
}

}  // namespace

std::string_view reasonName(Reason reason) {
  size_t i = static_cast<size_t>(reason);
  return i < kReasonCount ? kReasonNames[i] : std::string_view("unknown");
}

AuthFailureCounter::AuthFailureCounter(std::string_view route)
    : route_label_(metrics::labelId(route)) {
  reasonLabels();
}

void AuthFailureCounter::count(Reason reason) const {
  size_t i = static_cast<size_t>(reason);
  if (i >= kReasonCount) return;
  metrics::local().add(metrics::Id::AuthFailures, {route_label_, reasonLabels()[i], 0});
}

}  // namespace gw::auth
