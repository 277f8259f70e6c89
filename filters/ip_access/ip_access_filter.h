// ip_access (SPEC §2, filter 2): allow/deny CIDR lists on the real client address → 403.
#pragma once

#include <memory>

#include "filters/ip_access/ip_access_config.h"
#include "gateway/filter.h"

namespace gw::ip_access {

class IpAccessFilter final : public Filter {
 public:
  explicit IpAccessFilter(std::shared_ptr<const IpAccessConfig> config) : config_(std::move(config)) {}
  FilterOrder order() const override { return FilterOrder::IpAccess; }
  std::string_view name() const override { return "ip_access"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;

 private:
  std::shared_ptr<const IpAccessConfig> config_;
};

}  // namespace gw::ip_access
