// cors (SPEC §2, filter 3): answers preflights itself (204, or 403 for a disallowed
// origin, method or header; never forwarded) and decorates responses to allowed origins.
// Whatever the origin, the upstream's own Access-Control-* headers are replaced and
// `Vary: Origin` is added, so caches keep answers for different origins apart.
#pragma once

#include <memory>

#include "filters/cors/cors_config.h"
#include "gateway/filter.h"

namespace gw::cors {

class CorsFilter final : public Filter {
 public:
  explicit CorsFilter(std::shared_ptr<const CorsConfig> config) : config_(std::move(config)) {}
  FilterOrder order() const override { return FilterOrder::Cors; }
  std::string_view name() const override { return "cors"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;
  void onResponseHeaders(RequestContext& ctx, ResponseHead& response) const override;

 private:
  // Every requested header (comma-separated) is allowed.
  bool requestedHeadersAllowed(std::string_view requested) const;

  std::shared_ptr<const CorsConfig> config_;
};

}  // namespace gw::cors
