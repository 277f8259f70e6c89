// Route selection (SPEC §2 "Routing").
//
// Contract:
// - A Router is built once per config snapshot from its routes and keeps pointers into
//   that vector: it must not outlive it, and the vector must not be copied or resized
//   after (moving the owning Config is fine: a moved vector keeps its elements).
// - match() is const, thread-safe and allocates nothing; it takes the path already
//   normalised by normalizePath() (path.h).
// - Routes are tried in order; the first whose every present condition holds wins:
//   host    exact or "*.example.com" (any deeper name, not the apex), case-insensitive;
//           the request's ":port" and one trailing '.' are ignored; "[v6]:port" works
//           and a route host written "::1" is taken as "[::1]"; "*" means any host;
//   path    exact;
//   path_prefix  a plain string prefix, as Envoy's `prefix`: "/api" matches "/api/x"
//           and also "/apix" (write "/api/" to stop at the segment);
//   path_regex   RE2 full match on the normalised path;
//   methods      any of, exact (methods are case-sensitive; the config is upper case);
//   headers      each named header is present and every field of that name holds exactly
//           the value (name case-insensitive, value case-sensitive), so duplicates that
//           disagree never match: the upstream might read either one.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/headers.h"

namespace gw {

// "example.com:8080" -> "example.com", "[::1]:80" -> "[::1]"; a host without a port is
// returned as it is.
std::string_view stripPort(std::string_view host);

class Router {
 public:
  // Throws std::invalid_argument when a route's path_regex does not compile (it is
  // compiled here only when the config loader has not already done it).
  explicit Router(const std::vector<RouteConfig>& routes);

  // `host`: the Host header or the absolute-form authority (empty when there was none:
  // then only routes without a host condition match). nullptr: no route (404).
  const RouteConfig* match(std::string_view host, std::string_view normalized_path,
                           std::string_view method, const HeaderList& headers) const;

  size_t size() const { return entries_.size(); }

 private:
  enum class HostKind { Any, Exact, Suffix };

  struct Entry {
    const RouteConfig* route = nullptr;
    HostKind host_kind = HostKind::Any;
    std::string host;  // lower case; for Suffix ".example.com"
    std::shared_ptr<const re2::RE2> regex;
    std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  };

  static bool hostMatches(const Entry& e, std::string_view host);
  static bool headersMatch(const Entry& e, const HeaderList& headers);

  std::vector<Entry> entries_;
};

}  // namespace gw
