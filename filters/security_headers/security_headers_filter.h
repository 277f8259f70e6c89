// security_headers (SPEC §2, filter 9): the defaults of SPEC plus the route's changes on
// every response, the gateway's own included; hides Server and X-Powered-By.
#pragma once

#include <memory>

#include "filters/security_headers/security_headers_config.h"
#include "gateway/filter.h"

namespace gw::security_headers {

class SecurityHeadersFilter final : public Filter {
 public:
  explicit SecurityHeadersFilter(std::shared_ptr<const SecurityHeadersConfig> config)
      : config_(std::move(config)) {}
  FilterOrder order() const override { return FilterOrder::SecurityHeaders; }
  std::string_view name() const override { return "security_headers"; }
  void onResponseHeaders(RequestContext& ctx, ResponseHead& response) const override;
  bool runsOnEveryResponse() const override { return true; }

 private:
  std::shared_ptr<const SecurityHeadersConfig> config_;
};

}  // namespace gw::security_headers
