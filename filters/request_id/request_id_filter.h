// request_id (SPEC §2, filter 1): accept a well-formed incoming id or make one, forward
// it upstream, echo it on every response (the gateway's own included).
#pragma once

#include <memory>

#include "filters/request_id/request_id_config.h"
#include "gateway/filter.h"

namespace gw::request_id {

// 1 to 128 characters of [A-Za-z0-9._-].
bool isValidRequestId(std::string_view id);

class RequestIdFilter final : public Filter {
 public:
  explicit RequestIdFilter(std::shared_ptr<const RequestIdConfig> config) : config_(std::move(config)) {}
  FilterOrder order() const override { return FilterOrder::RequestId; }
  std::string_view name() const override { return "request_id"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;
  void onResponseHeaders(RequestContext& ctx, ResponseHead& response) const override;
  bool runsOnEveryResponse() const override { return true; }

 private:
  std::shared_ptr<const RequestIdConfig> config_;
};

}  // namespace gw::request_id
