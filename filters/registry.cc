#include "filters/registry.h"

#include "filters/api_key/api_key_config.h"
#include "filters/api_key/api_key_filter.h"
#include "filters/body_limit/body_limit_config.h"
#include "filters/cors/cors_config.h"
#include "filters/ip_access/ip_access_config.h"
#include "filters/jwt/jwt_config.h"
#include "filters/jwt/jwt_filter.h"
#include "filters/rate_limit/rate_limit_config.h"
#include "filters/rate_limit/rate_limit_filter.h"
#include "filters/request_id/request_id_config.h"
#include "filters/security_headers/security_headers_config.h"
#include "filters/body_limit/body_limit_filter.h"
#include "filters/cors/cors_filter.h"
#include "filters/ip_access/ip_access_filter.h"
#include "filters/request_id/request_id_filter.h"
#include "filters/security_headers/security_headers_filter.h"

namespace gw {

// In SPEC §2's order: the loader orders a route's filters by their place in this table.
const std::vector<FilterDescriptor>& filterRegistry() {
  static const std::vector<FilterDescriptor> kFilters = {
      {"request_id", request_id::parseRequestIdConfig,
       buildSingle<request_id::RequestIdFilter, request_id::RequestIdConfig>},
      {"ip_access", ip_access::parseIpAccessConfig,
       buildSingle<ip_access::IpAccessFilter, ip_access::IpAccessConfig>},
      {"cors", cors::parseCorsConfig, buildSingle<cors::CorsFilter, cors::CorsConfig>},
      {"body_limit", body_limit::parseBodyLimitConfig,
       buildSingle<body_limit::BodyLimitFilter, body_limit::BodyLimitConfig>},
      {"rate_limit", rate_limit::parseRateLimitConfig, rate_limit::buildRateLimit},
      {"jwt", jwt::parseJwtConfig, jwt::buildJwtFilter},
      {"api_key", api_key::parseApiKeyConfig, api_key::buildApiKeyFilter},
      {"security_headers", security_headers::parseSecurityHeadersConfig,
       buildSingle<security_headers::SecurityHeadersFilter, security_headers::SecurityHeadersConfig>},
  };
  return kFilters;
}

std::vector<std::string_view> filterRunOrder(const RouteConfig& route) {
  std::vector<std::string_view> names;
  for (const auto& f : route.chain) names.push_back(f->name());
  return names;
}

const FilterDescriptor* findFilter(std::string_view name) {
  for (const auto& filter : filterRegistry()) {
    if (filter.name == name) return &filter;
  }
  return nullptr;
}

}  // namespace gw
