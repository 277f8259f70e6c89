#include "gateway/config/config_loader.h"

#include "gateway/metrics.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include "filters/api_key/api_key_config.h"
#include "filters/jwt/jwt_config.h"
#include "filters/rate_limit/rate_limit_config.h"
#include "filters/registry.h"
#include "gateway/config/config_sections.h"
#include "gateway/cpu_count.h"
#include "gateway/tracing/tracing_config.h"

namespace gw {
namespace {

using config_detail::FilterSettings;

constexpr uint64_t kMaxWorkers = 1024;

std::optional<uint32_t> parseWorkers(const YAML::Node& node, ConfigContext& ctx) {
  auto text = ctx.string(node);
  if (!text) return std::nullopt;
  if (*text == "auto") return usableCpus();
  auto n = ctx.unsignedInt(node, 1, kMaxWorkers);
  return n ? std::optional(static_cast<uint32_t>(*n)) : std::nullopt;
}

// Every distinct filter configuration in the file, defaults first: a default config is
// shared by the routes that inherit it and must be checked (and reported) once.
std::vector<const RouteFilter*> distinctFilters(const Config& config) {
  std::vector<const RouteFilter*> out;
  std::set<const FilterConfig*> seen;
  auto add = [&](const std::vector<RouteFilter>& filters) {
    for (const auto& f : filters) {
      if (seen.insert(f.config.get()).second) out.push_back(&f);
    }
  };
  add(config.default_filters);
  for (const auto& route : config.routes) add(route.filters);
  return out;
}

template <class T>
bool hasNamed(const std::vector<T>& items, const std::string& name) {
  return std::any_of(items.begin(), items.end(), [&](const T& i) { return i.name == name; });
}

// The references from filters into top-level sections, and shared rate limits that must
// agree on what they count.
void checkFilterReferences(ConfigContext& ctx, const Config& config) {
  std::map<std::string, const rate_limit::Limit*> shared;
  for (const RouteFilter* filter : distinctFilters(config)) {
    if (filter->name == "jwt") {
      const auto& jwt = static_cast<const jwt::JwtConfig&>(*filter->config);
      if (!hasNamed(config.jwt_providers, jwt.provider())) {
        ctx.error(jwt.providerLocation(), "unknown jwt provider " + quoteValue(jwt.provider()));
      }
    } else if (filter->name == "api_key") {
      const auto& api_key = static_cast<const api_key::ApiKeyConfig&>(*filter->config);
      if (!hasNamed(config.api_keys, api_key.set())) {
        ctx.error(api_key.setLocation(), "unknown api key set " + quoteValue(api_key.set()));
      }
    } else if (filter->name == "rate_limit") {
      const auto& limits = static_cast<const rate_limit::RateLimitConfig&>(*filter->config);
      for (const auto& limit : limits.limits()) {
        if (limit.shared.empty()) continue;
        auto [it, inserted] = shared.emplace(limit.shared, &limit);
        if (!inserted && !limit.sameBucketAs(*it->second)) {
          ctx.error(limit.where, "shared limit " + quoteValue(limit.shared) +
                                     " must have the same key, requests, per and burst "
                                     "everywhere (first defined at line " +
                                     std::to_string(it->second->where.line) + ")");
        }
      }
    }
  }
}

// Per route: authentication that the other filters depend on.
void checkRouteFilters(ConfigContext& ctx, const RouteConfig& route) {
  auto find = [&](std::string_view name) -> const RouteFilter* {
    for (const auto& f : route.filters) {
      if (f.name == name) return &f;
    }
    return nullptr;
  };
  const RouteFilter* jwt = find("jwt");
  const RouteFilter* api_key = find("api_key");
  if (jwt && api_key) {
    ctx.error(route.where,
              "route " + quoteValue(route.name) +
                  " has both jwt and api_key; set one of them to off");
  }
  const RouteFilter* limits = find("rate_limit");
  if (!limits) return;
  for (const auto& limit :
       static_cast<const rate_limit::RateLimitConfig&>(*limits->config).limits()) {
    bool claim = limit.key_type == rate_limit::KeyType::Claim;
    bool key = limit.key_type == rate_limit::KeyType::ApiKey;
    if ((claim && !jwt) || (key && !api_key)) {
      ctx.error(limit.where, "rate limit keyed by " + quoteValue(limit.key) + " on route " +
                                 quoteValue(route.name) + " needs the " +
                                 (claim ? "jwt" : "api_key") + " filter there");
    }
  }
}

void buildChain(const std::vector<RouteFilter>& filters, const RouteConfig* route,
                const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain) {
  for (const auto& filter : filters) {
    const FilterDescriptor* descriptor = findFilter(filter.name);
    if (descriptor && descriptor->build) descriptor->build(filter.config, route, whole, chain);
  }
  std::stable_sort(chain.begin(), chain.end(),
                   [](const auto& a, const auto& b) { return a->order() < b->order(); });
}

void parseRoot(const YAML::Node& root, ConfigContext& ctx, Config& config) {
  if (root.IsNull()) {
    ctx.errorAt(0, 0, "the configuration is empty");
    return;
  }
  auto map = ctx.expectMap(
      root, "the configuration",
      {"workers", "listeners", "admin", "logging", "limits", "timeouts", "trusted_proxies",
       "upstreams", "rate_limit_store", "jwt_providers", "api_keys", "default_filters", "routes",
       "tracing"});
  if (!map) return;
  ctx.require(*map, {"listeners"});
  config.workers = usableCpus();
  ctx.read(*map, "workers", config.workers,
           [&](const YAML::Node& n) { return parseWorkers(n, ctx); });
  // Sections are parsed in dependency order, whatever their order in the file.
  const YAML::Node absent;
  auto section = [&](std::string_view key) -> const YAML::Node& {
    const YAML::Node* node = map->find(key);
    return node ? *node : absent;
  };
  using namespace config_detail;
  if (map->has("listeners")) parseListeners(section("listeners"), ctx, config);
  parseAdmin(section("admin"), ctx, config);
  parseLogging(section("logging"), ctx, config);
  parseLimits(section("limits"), ctx, config);
  for (ListenerConfig& l : config.listeners) {
    if (l.http2_settings.max_header_list_bytes == 0) {
      l.http2_settings.max_header_list_bytes = config.limits.max_request_header_bytes;
    }
  }
  parseTimeouts(section("timeouts"), ctx, config);
  ctx.read(*map, "trusted_proxies", config.trusted_proxies,
           [&](const YAML::Node& n) { return ctx.cidrList(n); });
  parseUpstreams(section("upstreams"), ctx, config);
  if (map->has("rate_limit_store")) parseRateLimitStore(section("rate_limit_store"), ctx, config);
  parseJwtProviders(section("jwt_providers"), ctx, config);
  parseApiKeySets(section("api_keys"), ctx, config);
  if (map->has("tracing")) config.tracing = tracing::parseTracing(section("tracing"), ctx);

  FilterSettings defaults;
  if (map->has("default_filters")) {
    defaults = parseFilterMap(section("default_filters"), ctx, /*route_level=*/false);
  }
  config.default_filters = mergeFilters(defaults, {});
  std::vector<FilterSettings> overrides;
  parseRoutes(section("routes"), ctx, config, overrides);
  for (size_t i = 0; i < config.routes.size(); ++i) {
    config.routes[i].filters = mergeFilters(defaults, overrides[i]);
    if (defaults.complete && overrides[i].complete) checkRouteFilters(ctx, config.routes[i]);
  }
  checkFilterReferences(ctx, config);
}

LoadResult finish(ConfigContext& ctx, std::shared_ptr<Config> config) {
  LoadResult result;
  result.errors = ctx.takeErrors();
  std::stable_sort(result.errors.begin(), result.errors.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                   });
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

// yaml-cpp keeps an alias as one more reference to its anchor's node, so a small file can
// stand for millions of nodes once the section parsers visit every use: 10,000 CIDRs
// anchored once and used in 1,000 routes take 560 MiB, a map of 1,000 unknown keys used
// 1,000 times a million error lines. The limits are on the document as the parsers see
// it, each use of an alias counting its anchor's nodes again. A real configuration has a
// few thousand nodes and a dozen levels; these leave room for 16 MiB of plain YAML.
constexpr size_t kMaxExpandedNodes = 1'000'000;
constexpr size_t kMaxExpandedDepth = 1'000;  // an alias inside its own anchor is a cycle

// Walks the document depth first with a stack of its own (depth-bounded), counting each
// node every time it is reached, and stops at the first limit passed: the walk costs at
// most kMaxExpandedNodes steps, whatever the document expands to. Reports at the
// top-level key under which the limit was passed.
bool checkExpansion(const YAML::Node& root, ConfigContext& ctx) {
  struct Frame {
    YAML::const_iterator next, end;
    bool map;
  };
  std::vector<Frame> stack;
  size_t nodes = 0;
  YAML::Node section = root;
  auto refuse = [&](std::string message) {
    ctx.error(section, std::move(message));
    return false;
  };
  // False when a limit is passed.
  auto enter = [&](const YAML::Node& node) {
    if (++nodes > kMaxExpandedNodes) {
      return refuse("more than " + std::to_string(kMaxExpandedNodes) +
                    " YAML nodes once aliases are expanded (the limit of a configuration; "
                    "each use of an *alias counts all the nodes of its &anchor again)");
    }
    if (!node.IsMap() && !node.IsSequence()) return true;
    if (stack.size() == kMaxExpandedDepth) {
      return refuse("nested more than " + std::to_string(kMaxExpandedDepth) +
                    " levels deep once aliases are expanded (the limit of a configuration; "
                    "an *alias used inside its own &anchor never ends)");
    }
    stack.push_back({node.begin(), node.end(), node.IsMap()});
    return true;
  };
  if (!enter(root)) return false;
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.next == top.end) {
      stack.pop_back();
      continue;
    }
    // A copy: enter() may grow the stack under `top`.
    YAML::const_iterator item = top.next++;
    bool map = top.map;
    // reset(), not '=': assigning a YAML::Node rewrites the node it refers to.
    if (stack.size() == 1 && map) section.reset(item->first);
    bool ok = map ? enter(item->first) && enter(item->second) : enter(*item);
    if (!ok) return false;
  }
  return true;
}

// At flow depth 0, is the ',' at `at` where a node would start? That is: nothing but
// whitespace before it on its line, or it follows a quoted scalar's closing quote, a
// document marker, or a node property (`!tag`, `&anchor`, `*alias`). Inside a plain
// scalar (`key: a, b`) it is text.
bool commaStartsNode(const std::string& text, size_t line_begin, size_t at) {
  size_t end = at;
  while (end > line_begin && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
  if (end == line_begin) return true;
  char last = text[end - 1];
  if (last == '"' || last == '\'') return true;
  size_t word = end;
  while (word > line_begin && text[word - 1] != ' ' && text[word - 1] != '\t') --word;
  std::string_view w(text.data() + word, end - word);
  return w == "---" || w == "..." || w.front() == '!' || w.front() == '&' || w.front() == '*';
}

// yaml-cpp 0.7 loops forever on a ',' outside a flow collection where a node would start
// (a lone ",", one after "---", a tag, an anchor or a quoted scalar), and treats NUL as
// text: refuse both before parsing, so neither `--check` nor a reload can hang. Quoted
// scalars and comments are skipped. (Stricter than YAML in corner cases no configuration
// needs, such as a plain scalar continued on a line that starts with ',').
bool prescan(const std::string& text, ConfigContext& ctx) {
  int depth = 0, line = 1, column = 0;
  size_t line_begin = 0;
  bool line_start = true;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++column;
    if (c == '\0') {
      ctx.errorAt(line, column, "the file contains a NUL byte");
      return false;
    }
    if (c == '\n') {
      ++line;
      column = 0;
      line_start = true;
      line_begin = i + 1;
      continue;
    }
    if (quote) {
      if (c == quote && !(quote == '"' && i > 0 && text[i - 1] == '\\')) quote = 0;
      continue;
    }
    if (line_start && (c == ' ' || c == '\t')) continue;
    if (c == '#' && (line_start || i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t')) {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
      continue;
    }
    if (c == ',' && depth == 0 && commaStartsNode(text, line_begin, i)) {
      ctx.errorAt(line, column, "YAML syntax error: ',' outside a flow collection");
      return false;
    }
    line_start = false;
    if (c == '"' || c == '\'') {
      if (i == 0 || std::string_view(" \t[{,:").find(text[i - 1]) != std::string_view::npos) quote = c;
    } else if (c == '[' || c == '{') {
      ++depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

// Counts a stream's documents with yaml-cpp's event parser, stopping at the second:
// YAML::LoadAll never returns on some inputs ("''&x," yields empty documents at one place
// forever, each a heap node: a 5-byte file took all memory).
class DocumentCounter : public YAML::EventHandler {
 public:
  explicit DocumentCounter(const std::string& text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    while (documents_ < 2 && parser.HandleNextDocument(*this)) {
    }
  }
  size_t documents() const { return documents_; }
  const YAML::Mark& second() const { return second_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ == 2) second_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  size_t documents_ = 0;
  YAML::Mark second_;
};

}  // namespace

LoadResult loadConfigString(const std::string& yaml_text, const std::string& display_name) {
  ConfigContext ctx(display_name);
  auto config = std::make_shared<Config>();
  config->source_file = display_name;
  try {
    if (!prescan(yaml_text, ctx)) {
      LoadResult refused;
      refused.errors = ctx.takeErrors();
      return refused;
    }
    DocumentCounter counted(yaml_text);
    if (counted.documents() > 1) {
      ctx.errorAt(counted.second().line + 1, counted.second().column + 1,
                  "only one YAML document is allowed");
    } else if (counted.documents() == 0) {
      parseRoot(YAML::Node(), ctx, *config);
    } else {
      YAML::Node root = YAML::Load(yaml_text);
      if (checkExpansion(root, ctx)) parseRoot(root, ctx, *config);
    }
    // Filters are built only from a configuration known to be valid.
    if (ctx.errorCount() == 0) {
      for (auto& l : config->listeners) l.metrics_label = metrics::labelId(l.name);
      for (auto& u : config->upstreams) u.metrics_label = metrics::labelId(u.name);
      for (auto& r : config->routes) r.metrics_label = metrics::labelId(r.name);
      buildChain(config->default_filters, nullptr, *config, config->default_chain);
      for (auto& route : config->routes) buildChain(route.filters, &route, *config, route.chain);
    }
  } catch (const YAML::Exception& e) {
    // Syntax errors, and anything yaml-cpp refuses while we walk the tree.
    bool syntax = dynamic_cast<const YAML::ParserException*>(&e) != nullptr;
    int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    int column = e.mark.is_null() ? 0 : e.mark.column + 1;
    ctx.errorAt(line, column, (syntax ? "YAML syntax error: " : "") + e.msg);
  } catch (const std::exception& e) {
    ctx.errorAt(0, 0, std::string("cannot load the configuration: ") + e.what());
  }
  return finish(ctx, std::move(config));
}

namespace {
std::atomic<bool> g_validation_only{false};
}  // namespace

void setValidationOnly(bool on) { g_validation_only.store(on); }
bool validationOnly() { return g_validation_only.load(); }

LoadResult loadConfigFile(const std::string& path) {
  std::string text;
  std::string problem;
  if (!readBoundedFile(path, text, problem)) {
    LoadResult result;
    result.errors.push_back({path, 0, 0, "cannot read configuration file: " + problem});
    return result;
  }
  return loadConfigString(text, path);
}

}  // namespace gw
