#include "gateway/router.h"

#include <re2/re2.h>

#include <algorithm>
#include <stdexcept>

namespace gw {

namespace {

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
  }
  return out;
}

// A fully qualified "example.com." names the same host as "example.com".
std::string_view withoutTrailingDot(std::string_view host) {
  if (host.ends_with('.')) host.remove_suffix(1);
  return host;
}

[[noreturn]] void badRoute(const RouteConfig& route, const std::string& why) {
  throw std::invalid_argument("route " + route.name + ": " + why);
}

}  // namespace

std::string_view stripPort(std::string_view host) {
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  return host.substr(0, host.find(':'));
}

Router::Router(const std::vector<RouteConfig>& routes) {
  entries_.reserve(routes.size());
  for (const RouteConfig& route : routes) {
    Entry e;
    e.route = &route;
    const RouteMatch& m = route.match;

    std::string host = toLower(withoutTrailingDot(m.host));
    if (host.empty() || host == "*") {
      e.host_kind = HostKind::Any;
    } else if (host.starts_with("*.") && host.size() > 2) {
      e.host_kind = HostKind::Suffix;
      e.host = host.substr(1);
    } else {
      e.host_kind = HostKind::Exact;
      e.host = std::move(host);
    }
    if (e.host.find('*') != std::string::npos) badRoute(route, "'*' only as \"*.domain\"");
    if (!e.host.starts_with('[')) {
      size_t colons = std::count(e.host.begin(), e.host.end(), ':');
      // One colon is a port, which the request's Host is compared without; more is IPv6,
      // which a Host header always brackets.
      if (colons == 1) badRoute(route, "host must not name a port");
      if (colons > 1) e.host = "[" + e.host + "]";
    }

    e.regex = m.regex;
    if (!e.regex && !m.path_regex.empty()) {
      RE2::Options options;
      options.set_log_errors(false);
      auto re = std::make_shared<const RE2>(m.path_regex, options);
      if (!re->ok()) badRoute(route, "path_regex: " + re->error());
      e.regex = std::move(re);
    }

    for (const auto& [name, value] : m.headers) e.headers.emplace_back(toLower(name), value);
    entries_.push_back(std::move(e));
  }
}

bool Router::hostMatches(const Entry& e, std::string_view host) {
  switch (e.host_kind) {
    case HostKind::Any:
      return true;
    case HostKind::Exact:
      return equalsIgnoreCase(host, e.host);
    case HostKind::Suffix:
      // Longer than ".example.com" so that a label precedes it: the apex never matches.
      return host.size() > e.host.size() &&
             equalsIgnoreCase(host.substr(host.size() - e.host.size()), e.host);
  }
  return false;
}

bool Router::headersMatch(const Entry& e, const HeaderList& headers) {
  for (const auto& [name, value] : e.headers) {
    bool seen = false;
    for (const Header& h : headers) {
      if (!equalsIgnoreCase(h.name, name)) continue;
      if (h.value != value) return false;
      seen = true;
    }
    if (!seen) return false;
  }
  return true;
}

const RouteConfig* Router::match(std::string_view host, std::string_view normalized_path,
                                 std::string_view method, const HeaderList& headers) const {
  std::string_view request_host = withoutTrailingDot(stripPort(host));
  for (const Entry& e : entries_) {
    const RouteMatch& m = e.route->match;
    // Cheapest tests first; the regex last.
    if (!m.path.empty() && normalized_path != m.path) continue;
    if (!normalized_path.starts_with(m.path_prefix)) continue;
    if (!m.methods.empty() &&
        std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end()) {
      continue;
    }
    if (!hostMatches(e, request_host)) continue;
    if (!headersMatch(e, headers)) continue;
    if (e.regex && !RE2::FullMatch(normalized_path, *e.regex)) continue;
    return e.route;
  }
  return nullptr;
}

}  // namespace gw
