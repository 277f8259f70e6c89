// Reads gateway_auth_failures_total back from the metrics stores (what /metrics renders).
#pragma once

#include <string>

#include "filters/auth/auth_failures.h"
#include "gateway/metrics.h"

namespace gw::test_util {

inline uint64_t authFailures(const std::string& route, auth::Reason reason) {
  std::string text = metrics::renderPrometheus("test", 0);
  std::string series = "gateway_auth_failures_total{route=\"" + route + "\",reason=\"" +
                       std::string(auth::reasonName(reason)) + "\"} ";
  size_t at = text.find(series);
  if (at == std::string::npos) return 0;
  return std::stoull(text.substr(at + series.size()));
}

}  // namespace gw::test_util
