#include "filters/ip_access/ip_access_filter.h"

namespace gw::ip_access {

FilterStatus IpAccessFilter::onRequestHeaders(RequestContext& ctx, HeaderList&) const {
  if (config_->admits(ctx.client_ip16)) return FilterStatus::Continue;
  ctx.sendLocalReply(403, "FORBIDDEN", "Access denied for this client address");
  return FilterStatus::StopReplied;
}

}  // namespace gw::ip_access
