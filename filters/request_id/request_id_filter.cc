#include "filters/request_id/request_id_filter.h"

namespace gw::request_id {

bool isValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

FilterStatus RequestIdFilter::onRequestHeaders(RequestContext& ctx, HeaderList& headers) const {
  if (ctx.request_id.empty()) {
    std::string_view incoming = headers.get(config_->header);
    // The head's bytes are reused once the body flows: keep the id in the arena.
    ctx.request_id = isValidRequestId(incoming) ? ctx.arena->copy(incoming)
                                                : ctx.driver->generateRequestId();
  }
  headers.setRef(config_->header, ctx.request_id);
  return FilterStatus::Continue;
}

void RequestIdFilter::onResponseHeaders(RequestContext& ctx, ResponseHead& response) const {
  if (ctx.request_id.empty()) ctx.request_id = ctx.driver->generateRequestId();
  response.headers.setRef(config_->header, ctx.request_id);
}

}  // namespace gw::request_id
