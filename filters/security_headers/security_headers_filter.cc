#include "filters/security_headers/security_headers_filter.h"

namespace gw::security_headers {

void SecurityHeadersFilter::onResponseHeaders(RequestContext& ctx, ResponseHead& response) const {
  response.headers.removeAny(config_->hide_headers);
  bool https = ctx.tls || ctx.forwarded_https;
  for (const HeaderSetting& h : config_->headers) {
    if (h.tls_only && !https) continue;
    // Values live in the configuration, which the request pins: no copies.
    if (config_->mode == Mode::Set) {
      response.headers.setRef(h.name, h.value);
    } else if (!response.headers.has(h.name)) {
      response.headers.addRef(h.name, h.value);
    }
  }
}

}  // namespace gw::security_headers
