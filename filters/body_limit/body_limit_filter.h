// body_limit (SPEC §2, filter 4): the route's request body limit. The filter only sets
// the limit; the core enforces it (413 from Content-Length before the body is read, or as
// soon as a chunked body passes it), so the global limits.max_body_bytes applies the
// same way on routes without this filter.
#pragma once

#include <memory>

#include "filters/body_limit/body_limit_config.h"
#include "gateway/filter.h"

namespace gw::body_limit {

class BodyLimitFilter final : public Filter {
 public:
  explicit BodyLimitFilter(std::shared_ptr<const BodyLimitConfig> config) : config_(std::move(config)) {}
  FilterOrder order() const override { return FilterOrder::BodyLimit; }
  std::string_view name() const override { return "body_limit"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList&) const override {
    ctx.max_body_bytes = config_->max_bytes;
    return FilterStatus::Continue;
  }

 private:
  std::shared_ptr<const BodyLimitConfig> config_;
};

}  // namespace gw::body_limit
