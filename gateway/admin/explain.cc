#include "gateway/admin/explain.h"

#include <string_view>

#include "gateway/config/config_context.h"
#include "gateway/filter.h"
#include "gateway/config/config_loader.h"
#include "gateway/headers.h"
#include "gateway/path.h"
#include "gateway/router.h"

namespace gw {

namespace {

// Route names, hosts and headers may hold anything: nothing written to a terminal may
// move its cursor or change its colours.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string duration(Millis ms) {
  auto n = ms.count();
  if (n % 3600000 == 0 && n) return std::to_string(n / 3600000) + "h";
  if (n % 60000 == 0 && n) return std::to_string(n / 60000) + "m";
  if (n % 1000 == 0 && n) return std::to_string(n / 1000) + "s";
  return std::to_string(n) + "ms";
}

std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + printable(i);
  return out;
}

struct Target {
  std::string authority;  // empty: origin-form
  std::string path;       // before normalisation, without the query
  std::string query;
};

bool splitUrl(std::string_view url, Target& t) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.substr(0, scheme.size()) == scheme) {
      url.remove_prefix(scheme.size());
      size_t slash = url.find_first_of("/?");
      t.authority = std::string(url.substr(0, slash));
      url = slash == std::string_view::npos ? std::string_view("/") : url.substr(slash);
      if (url.front() == '?') t.path = "/";
      break;
    }
  }
  if (url.empty()) return false;
  size_t q = url.find('?');
  if (t.path.empty()) t.path = std::string(url.substr(0, q));
  if (q != std::string_view::npos) t.query = std::string(url.substr(q));
  return !t.path.empty() && t.path.front() == '/';
}

void printMatch(FILE* out, const RouteMatch& m) {
  if (!m.host.empty()) std::fprintf(out, "  host: %s\n", printable(m.host).c_str());
  if (!m.path.empty()) std::fprintf(out, "  path: %s\n", printable(m.path).c_str());
  if (!m.path_prefix.empty()) std::fprintf(out, "  path_prefix: %s\n", printable(m.path_prefix).c_str());
  if (!m.path_regex.empty()) std::fprintf(out, "  path_regex: %s\n", printable(m.path_regex).c_str());
  if (!m.methods.empty()) std::fprintf(out, "  methods: %s\n", list(m.methods).c_str());
  for (const auto& [name, value] : m.headers) {
    std::fprintf(out, "  header: %s: %s\n", printable(name).c_str(), printable(value).c_str());
  }
}

// What a filter's settings refer to elsewhere in the file (a provider, a key set, the
// rate-limit store), so the operator sees the whole effective setting in one place.
void printReferences(FILE* out, const Config& cfg, const RouteFilter& f) {
  if (f.name == "jwt") {
    for (const JwtProviderConfig& p : cfg.jwt_providers) {
      if (f.settings.find(p.name) == std::string::npos) continue;
      std::fprintf(out, "       provider %s: issuer %s, audiences [%s], algorithms [%s], keys from %s\n",
                   printable(p.name).c_str(), printable(p.issuer).c_str(), list(p.audiences).c_str(),
                   list(p.algorithms).c_str(),
                   printable(p.jwks_uri.empty() ? p.jwks_file : p.jwks_uri).c_str());
    }
  } else if (f.name == "api_key") {
    for (const ApiKeySetConfig& k : cfg.api_keys) {
      if (f.settings.find(k.name) == std::string::npos) continue;
      std::fprintf(out, "       key set %s: header %s, %zu keys from %s (hashes not shown)\n",
                   printable(k.name).c_str(), printable(k.header).c_str(), k.keys.size(),
                   printable(k.keys_file).c_str());
    }
  } else if (f.name == "rate_limit") {
    const RateLimitStoreConfig& s = cfg.rate_limit_store;
    if (s.type == RateLimitStoreType::Memory) {
      std::fprintf(out, "       store: memory (per process)\n");
    } else {
      std::fprintf(out, "       store: redis %s%s, timeout %s\n", printable(s.redis.address).c_str(),
                   s.redis.password.empty() ? "" : " (password ***)", duration(s.redis.timeout).c_str());
    }
  }
}

}  // namespace

int explainRequest(const std::string& config_path, const std::string& method,
                   const std::string& url, const std::vector<std::string>& header_args, FILE* out) {
  StringArena arena;
  HeaderList headers(&arena);
  std::string host_header;
  for (const std::string& h : header_args) {
    size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      std::fprintf(stderr, "gateway: -H needs 'Name: value', got '%s'\n", printable(h).c_str());
      return 2;
    }
    std::string_view name = std::string_view(h).substr(0, colon);
    std::string_view value = std::string_view(h).substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    headers.add(name, value);
    if (toLowerAscii(name) == "host") host_header = std::string(value);
  }
  Target target;
  if (!splitUrl(url, target)) {
    std::fprintf(stderr, "gateway: the URL must be http(s)://host/path or /path, got '%s'\n",
                 printable(url).c_str());
    return 2;
  }

  setValidationOnly(true);
  LoadResult loaded = loadConfigFile(config_path);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::fprintf(out, "%s\n", e.format().c_str());
    if (loaded.errors.empty()) std::fprintf(out, "%s: invalid configuration\n", config_path.c_str());
    return 1;
  }
  const Config& cfg = *loaded.config;

  std::string path;
  if (normalizePath(target.path, path) != PathResult::Ok) {
    std::fprintf(out, "no route: the path is refused before routing (400)\n");
    return 1;
  }
  // As the proxy does: an absolute-form request's authority wins over its Host header.
  std::string host = target.authority.empty() ? host_header : target.authority;
  Router router(cfg.routes);
  const RouteConfig* route = router.match(host, path, method, headers);
  std::fprintf(out, "request: %s %s%s (host %s)\n", printable(method).c_str(), printable(path).c_str(),
               printable(target.query).c_str(), host.empty() ? "none" : printable(host).c_str());
  if (!route) {
    std::fprintf(out, "no route matches: the gateway answers 404\n");
    return 1;
  }
  std::fprintf(out, "route: %s (%s:%d)\n", printable(route->name).c_str(),
               printable(route->where.file).c_str(), route->where.line);
  printMatch(out, route->match);
  if (route->admin) {
    std::fprintf(out, "upstream: none: the admin endpoints answer\n");
  } else {
    const UpstreamConfig& u = cfg.upstreams[route->upstream_index];
    std::string forwarded = path;
    if (!route->strip_prefix.empty()) applyStripPrefix(path, route->strip_prefix, forwarded);
    std::vector<std::string> endpoints;
    for (const auto& e : u.endpoints) endpoints.push_back(e.text);
    std::fprintf(out, "upstream: %s\n  endpoints: %s\n  load_balancing: %s\n  path sent: %s%s\n",
                 printable(u.name).c_str(), list(endpoints).c_str(),
                 u.load_balancing == LoadBalancing::RoundRobin ? "round_robin" : "least_request",
                 printable(forwarded).c_str(), printable(target.query).c_str());
    std::fprintf(out, "  timeout: %s%s\n", duration(route->timeout.value_or(cfg.timeouts.upstream_response)).c_str(),
                 route->websocket ? ", websocket allowed" : "");
    if (u.retries.attempts) std::fprintf(out, "  retries: %u\n", u.retries.attempts);
    if (u.circuit_breaker) {
      std::fprintf(out, "  circuit_breaker: after %u failures, open %s\n", u.circuit_breaker->consecutive_failures,
                   duration(u.circuit_breaker->open_for).c_str());
    }
  }
  std::fprintf(out, "filters, in run order:\n");
  if (route->chain.empty()) std::fprintf(out, "  none\n");
  for (size_t i = 0; i < route->chain.size(); ++i) {
    const Filter& running = *route->chain[i];
    for (const RouteFilter& f : route->filters) {
      if (f.name != running.name()) continue;
      std::string_view phase = running.order() == FilterOrder::RateLimitBeforeAuth  ? " before authentication"
                               : running.order() == FilterOrder::RateLimitAfterAuth ? " after authentication"
                                                                                    : "";
      std::fprintf(out, "  %zu. %s%.*s %s  (%s)\n", i + 1, f.name.c_str(), int(phase.size()), phase.data(),
                   printable(f.settings).c_str(), f.from_route ? "route" : "default_filters");
      printReferences(out, cfg, f);
    }
  }
  return 0;
}

}  // namespace gw
