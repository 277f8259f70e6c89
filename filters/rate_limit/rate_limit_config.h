// rate_limit: {limits: [{key, requests, per, burst, shared, dry_run}]}: token buckets of
// capacity `burst` (default `requests`) refilled at requests/per. Limits keyed by identity
// (claim:NAME, api_key) run after authentication, the others before (SPEC §2).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/config/config_context.h"
#include "gateway/filter.h"

namespace gw::rate_limit {

// Per rate_limit filter: the request path keeps per-limit state in fixed arrays.
constexpr size_t kMaxLimits = 32;

enum class KeyType { ClientIp, Route, Header, Claim, ApiKey };

struct Limit {
  KeyType key_type = KeyType::ClientIp;
  std::string key;       // as written: "client_ip", "header:X-Tenant", "claim:sub"
  std::string key_name;  // header name (lower case) or claim name; empty otherwise
  uint32_t requests = 0;
  Millis per{0};
  uint32_t burst = 0;
  std::string shared;  // pool name across routes; empty = per route
  bool dry_run = false;
  bool after_auth = false;  // keyed by identity: counted after jwt/api_key
  SourceLocation where;

  // True when two limits can share one bucket (same key and rate).
  bool sameBucketAs(const Limit& other) const;
};

class RateLimitConfig : public FilterConfig {
 public:
  explicit RateLimitConfig(std::vector<Limit> limits);
  const std::vector<Limit>& limits() const { return limits_; }
  bool hasBeforeAuth() const { return has_before_auth_; }
  bool hasAfterAuth() const { return has_after_auth_; }

 private:
  std::vector<Limit> limits_;
  bool has_before_auth_ = false;
  bool has_after_auth_ = false;
};

std::shared_ptr<const FilterConfig> parseRateLimitConfig(const YAML::Node& node,
                                                         ConfigContext& ctx);

}  // namespace gw::rate_limit
