#include "filters/security_headers/security_headers_config.h"

#include <algorithm>

#include "gateway/headers.h"

namespace gw::security_headers {
namespace {

constexpr std::string_view kHsts = "Strict-Transport-Security";

std::vector<HeaderSetting> defaultHeaders() {
  return {
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      // OWASP: the legacy XSS auditor causes more harm than good; 0 switches it off.
      {"X-XSS-Protection", "0"},
      {std::string(kHsts), "max-age=31536000; includeSubDomains", /*tls_only=*/true},
      {"Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"},
      {"Referrer-Policy", "strict-origin-when-cross-origin"},
      {"Permissions-Policy", "camera=(), microphone=(), geolocation=()"},
  };
}

void applyOverrides(const MapNode& overrides, ConfigContext& ctx,
                    std::vector<HeaderSetting>& headers) {
  for (const auto& entry : overrides.entries()) {
    if (!isHttpToken(entry.key)) {
      ctx.error(entry.key_node, quoteValue(entry.key) + " is not a valid header name");
      continue;
    }
    auto existing = std::find_if(headers.begin(), headers.end(), [&](const HeaderSetting& h) {
      return equalsIgnoreCase(h.name, entry.key);
    });
    if (ctx.isOff(entry.value)) {
      if (existing != headers.end()) headers.erase(existing);
      continue;
    }
    auto value = ctx.nonEmptyString(entry.value);
    if (!value) continue;
    if (!isSafeHeaderValue(*value)) {
      ctx.error(entry.value, "a header value cannot contain CR, LF or NUL");
      continue;
    }
    HeaderSetting setting{entry.key, *value, equalsIgnoreCase(entry.key, kHsts)};
    if (existing != headers.end()) {
      *existing = std::move(setting);
    } else {
      headers.push_back(std::move(setting));
    }
  }
}

}  // namespace

std::shared_ptr<const FilterConfig> parseSecurityHeadersConfig(const YAML::Node& node,
                                                               ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "security_headers", {"mode", "headers", "hide_headers"});
  if (!map) return nullptr;
  auto config = std::make_shared<SecurityHeadersConfig>();
  ctx.read(*map, "mode", config->mode, [&](const YAML::Node& n) {
    return ctx.oneOf<Mode>(n, {{"add_if_missing", Mode::AddIfMissing}, {"set", Mode::Set}});
  });
  config->headers = defaultHeaders();
  if (const YAML::Node* headers = map->find("headers")) {
    if (auto overrides = ctx.expectOpenMap(*headers, "headers")) {
      applyOverrides(*overrides, ctx, config->headers);
    }
  }
  config->hide_headers = {"Server", "X-Powered-By"};
  ctx.read(*map, "hide_headers", config->hide_headers, [&](const YAML::Node& n) {
    return ctx.list(n, "header names",
                    [&](const YAML::Node& h) { return ctx.token(h, "header name"); });
  });
  return ctx.errorCount() == errors ? config : nullptr;
}

}  // namespace gw::security_headers
