#include "filters/cors/cors_filter.h"

#include <algorithm>
#include <cstring>

#include "gateway/config/config.h"
#include "gateway/http_util.h"
#include "gateway/metrics.h"

namespace gw::cors {

namespace {

// Per-request state in the filter's scratch slot.
constexpr uint64_t kOriginAllowed = 1;
constexpr uint64_t kPreflight = 2;

void addVaryOrigin(HeaderList& headers, StringArena& arena) {
  // Vary may come as several fields: Origin joins them (one field, every token kept).
  size_t fields = 0, total = 0;
  bool has_origin = false;
  for (const Header& h : headers) {
    if (!equalsIgnoreCase(h.name, "vary")) continue;
    ++fields;
    total += h.value.size() + 2;
    forEachToken(h.value, [&](std::string_view t) { has_origin |= t == "*" || equalsIgnoreCase(t, "origin"); });
  }
  if (has_origin) return;
  if (fields == 0) {
    headers.addRef("Vary", "Origin");
    return;
  }
  char* out = arena.allocate(total + 6);
  size_t n = 0;
  for (const Header& h : headers) {
    if (!equalsIgnoreCase(h.name, "vary") || h.value.empty()) continue;
    std::memcpy(out + n, h.value.data(), h.value.size());
    n += h.value.size();
    out[n++] = ',';
    out[n++] = ' ';
  }
  std::memcpy(out + n, "Origin", 6);
  headers.setRef("Vary", std::string_view(out, n + 6));
}

void removeAccessControlHeaders(HeaderList& headers) {
  auto& f = headers.fields();
  f.erase(std::remove_if(f.begin(), f.end(),
                         [](const Header& h) {
                           return h.name.size() > 15 &&
                                  equalsIgnoreCase(h.name.substr(0, 15), "access-control-");
                         }),
          f.end());
}

}  // namespace

bool CorsFilter::requestedHeadersAllowed(std::string_view requested) const {
  bool ok = true;
  forEachToken(requested, [&](std::string_view h) { ok &= config_->headerAllowed(h); });
  return ok;
}

FilterStatus CorsFilter::onRequestHeaders(RequestContext& ctx, HeaderList& headers) const {
  FilterScratch& s = ctx.scratchFor(FilterOrder::Cors);
  bool has_origin = false;
  std::string_view origin = headers.get("origin", &has_origin);
  if (!has_origin) return FilterStatus::Continue;
  bool allowed = config_->originAllowed(origin);
  s.value = allowed ? kOriginAllowed : 0;
  s.text = ctx.arena->copy(origin);
  bool has_method = false;
  std::string_view method = headers.get("access-control-request-method", &has_method);
  if (ctx.method != "OPTIONS" || !has_method) return FilterStatus::Continue;

  s.value |= kPreflight;
  metrics::local().add(metrics::Id::CorsPreflights, {ctx.route ? ctx.route->metrics_label : uint16_t(0), 0, 0});
  if (!allowed || !config_->methodAllowed(method) ||
      !requestedHeadersAllowed(headers.get("access-control-request-headers"))) {
    s.value &= ~kOriginAllowed;  // a refused preflight carries no CORS grant
    ctx.sendLocalReply(403, "FORBIDDEN", "CORS preflight not allowed");
    return FilterStatus::StopReplied;
  }
  // With credentials a browser takes "*" literally, so echo what was asked instead.
  if (config_->allow_credentials && config_->allow_any_method) {
    ctx.response_headers_to_add.add("Access-Control-Allow-Methods", method);
  } else if (!config_->allow_methods_value.empty()) {
    ctx.response_headers_to_add.addRef("Access-Control-Allow-Methods", config_->allow_methods_value);
  }
  std::string_view requested = headers.get("access-control-request-headers");
  if (config_->allow_credentials && config_->allow_any_header) {
    if (!requested.empty()) ctx.response_headers_to_add.add("Access-Control-Allow-Headers", requested);
  } else if (!config_->allow_headers_value.empty()) {
    ctx.response_headers_to_add.addRef("Access-Control-Allow-Headers", config_->allow_headers_value);
  }
  if (!config_->max_age_value.empty()) {
    ctx.response_headers_to_add.addRef("Access-Control-Max-Age", config_->max_age_value);
  }
  ctx.sendResponse(204);
  return FilterStatus::StopReplied;
}

void CorsFilter::onResponseHeaders(RequestContext& ctx, ResponseHead& response) const {
  const FilterScratch& s = ctx.scratchFor(FilterOrder::Cors);
  if (!response.local_reply) removeAccessControlHeaders(response.headers);
  addVaryOrigin(response.headers, *ctx.arena);
  if (!(s.value & kOriginAllowed)) return;
  if (config_->allow_any_origin && !config_->allow_credentials) {
    response.headers.addRef("Access-Control-Allow-Origin", "*");
  } else {
    response.headers.addRef("Access-Control-Allow-Origin", s.text);
  }
  if (config_->allow_credentials) response.headers.addRef("Access-Control-Allow-Credentials", "true");
  if (!(s.value & kPreflight) && !config_->expose_headers_value.empty()) {
    response.headers.addRef("Access-Control-Expose-Headers", config_->expose_headers_value);
  }
}

}  // namespace gw::cors
