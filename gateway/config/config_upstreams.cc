// The sections about what the gateway connects to: upstreams and the rate-limit store.
#include "gateway/config/config_sections.h"

#include <algorithm>

#include "gateway/tls/tls_context.h"

namespace gw::config_detail {
namespace {

constexpr Millis kAtLeastOneMs{1};

std::optional<KeepaliveConfig> parseKeepalive(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "keepalive", {"max_idle", "idle_timeout"});
  if (!map) return std::nullopt;
  KeepaliveConfig keepalive;
  ctx.readUint(*map, "max_idle", keepalive.max_idle);
  ctx.readDuration(*map, "idle_timeout", keepalive.idle_timeout, kAtLeastOneMs);
  return keepalive;
}

// The longest grpc health `service` name accepted: real ones are package.Service names; the
// bound keeps the check's request small.
constexpr size_t kMaxHealthServiceName = 1024;

std::optional<HealthCheckConfig> parseHealthCheck(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "health_check",
                           {"type", "path", "service", "interval", "timeout",
                            "unhealthy_threshold", "healthy_threshold"});
  if (!map) return std::nullopt;
  HealthCheckConfig check;
  ctx.read(*map, "type", check.type, [&](const YAML::Node& n) {
    return ctx.oneOf<HealthCheckType>(n, {{"http", HealthCheckType::Http},
                                          {"grpc", HealthCheckType::Grpc}});
  });
  // A key of the other kind would be ignored, so it is refused: whoever wrote it expected
  // it to matter.
  if (const YAML::Node* path = map->find("path"); path && check.type == HealthCheckType::Grpc) {
    ctx.error(*path, "health_check path is for type: http; a grpc check always calls "
                     "/grpc.health.v1.Health/Check (name the service with `service`)");
  }
  if (const YAML::Node* service = map->find("service");
      service && check.type == HealthCheckType::Http) {
    ctx.error(*service, "health_check service is for type: grpc");
  }
  ctx.read(*map, "path", check.path, [&](const YAML::Node& n) -> std::optional<std::string> {
    auto path = ctx.string(n);
    if (path && (path->empty() || (*path)[0] != '/' || !isSafeHeaderValue(*path) ||
                 path->find(' ') != std::string::npos)) {
      ctx.error(n, "health_check path must start with '/' and contain no spaces");
      return std::nullopt;
    }
    return path;
  });
  ctx.read(*map, "service", check.service, [&](const YAML::Node& n) -> std::optional<std::string> {
    auto service = ctx.string(n);
    // Printable ASCII: a proto3 string must be UTF-8 (servers reject the request
    // otherwise), and real names are ASCII identifiers and dots.
    bool printable = service && std::all_of(service->begin(), service->end(),
                                            [](char c) { return c > ' ' && c < 0x7f; });
    if (service && (service->size() > kMaxHealthServiceName || !printable)) {
      ctx.error(n, "health_check service must be at most " + std::to_string(kMaxHealthServiceName) +
                       " printable ASCII characters without spaces, got " + quoteValue(*service));
      return std::nullopt;
    }
    return service;
  });
  bool interval_ok = ctx.readDuration(*map, "interval", check.interval, kAtLeastOneMs);
  bool timeout_ok = ctx.readDuration(*map, "timeout", check.timeout, kAtLeastOneMs);
  ctx.readUint(*map, "unhealthy_threshold", check.unhealthy_threshold, 1);
  ctx.readUint(*map, "healthy_threshold", check.healthy_threshold, 1);
  if (interval_ok && timeout_ok && check.timeout > check.interval) {
    ctx.error(map->find("timeout") ? *map->find("timeout") : node,
              "health_check timeout must not exceed its interval");
  }
  return check;
}

std::optional<CircuitBreakerConfig> parseCircuitBreaker(const YAML::Node& node,
                                                        ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "circuit_breaker", {"consecutive_failures", "open_for"});
  if (!map) return std::nullopt;
  CircuitBreakerConfig breaker;
  ctx.readUint(*map, "consecutive_failures", breaker.consecutive_failures, 1);
  ctx.readDuration(*map, "open_for", breaker.open_for, kAtLeastOneMs);
  return breaker;
}

// One element of retries.on: the word connect_failure or an HTTP status.
void parseRetryOn(const YAML::Node& node, ConfigContext& ctx, RetryConfig& retries) {
  auto text = ctx.string(node);
  if (!text) return;
  if (*text == "connect_failure") {
    retries.on_connect_failure = true;
    return;
  }
  bool digits = text->size() == 3 && text->find_first_not_of("0123456789") == std::string::npos;
  int status = digits ? std::stoi(*text) : 0;
  if (status < 400 || status > 599) {
    ctx.error(node,
              "retries.on takes connect_failure or HTTP statuses 400-599, got " +
                  quoteValue(*text));
    return;
  }
  retries.on_statuses.push_back(status);
}

std::optional<RetryConfig> parseRetries(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "retries", {"attempts", "on", "backoff"});
  if (!map) return std::nullopt;
  // Without the block nothing is retried; with it, what it leaves out takes the defaults
  // reference.yaml writes out: {attempts: 2, on: [connect_failure, 502, 503]}.
  RetryConfig retries;
  retries.attempts = 2;
  ctx.readUint(*map, "attempts", retries.attempts, 0, 10);
  ctx.readDuration(*map, "backoff", retries.backoff);
  const YAML::Node* on = map->find("on");
  if (!on) {
    retries.on_connect_failure = true;
    retries.on_statuses = {502, 503};
  } else if (!on->IsSequence()) {
    ctx.error(*on, "expected a list of retry conditions");
  } else {
    for (const auto& item : *on) parseRetryOn(item, ctx, retries);
  }
  return retries;
}

UpstreamTls readUpstreamTls(const YAML::Node& node, ConfigContext& ctx);

std::optional<UpstreamTls> parseUpstreamTls(const YAML::Node& node, ConfigContext& ctx) {
  size_t errors_before = ctx.errorCount();
  UpstreamTls tls = readUpstreamTls(node, ctx);
  if (ctx.errorCount() == errors_before) {
    if (std::string e = validateUpstreamTls(tls); !e.empty()) ctx.error(node, e);
  }
  return tls;
}

UpstreamTls readUpstreamTls(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "upstream tls", {"sni", "ca", "cert", "key", "verify"});
  if (!map) return {};
  UpstreamTls tls;
  ctx.readString(*map, "sni", tls.sni);
  ctx.readBool(*map, "verify", tls.verify);
  if (const YAML::Node* ca = map->find("ca")) {
    auto path = ctx.readableFile(*ca);
    if (path && checkCertificates(ctx, *ca, *path)) tls.ca = *path;
  }
  const YAML::Node* cert = map->find("cert");
  const YAML::Node* key = map->find("key");
  if (!cert != !key) {
    ctx.error(cert ? *cert : *key, "a client certificate needs both cert and key");
    return tls;
  }
  if (!cert) return tls;
  auto cert_path = ctx.readableFile(*cert);
  auto key_path = ctx.readableFile(*key);
  bool ok = cert_path && checkCertificates(ctx, *cert, *cert_path);
  ok = key_path && checkPrivateKey(ctx, *key, *key_path) && ok;
  if (ok) {
    checkKeyMatchesCertificate(ctx, *key, *cert_path, *key_path);
    tls.cert_file = *cert_path;
    tls.key_file = *key_path;
  }
  return tls;
}

void parseUpstream(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "upstream",
                           {"name", "endpoints", "load_balancing", "protocol", "max_connections", "max_pending",
                            "keepalive", "health_check", "circuit_breaker", "retries", "tls"});
  if (!map) return;
  ctx.require(*map, {"name", "endpoints"});
  UpstreamConfig upstream;
  readName(ctx, *map, upstream);
  ctx.read(*map, "endpoints", upstream.endpoints, [&](const YAML::Node& n) {
    auto list = ctx.list(n, "endpoints", [&](const YAML::Node& e) {
      return parseAddress(ctx, e, /*allow_port_zero=*/false);
    });
    if (list && list->empty()) ctx.error(n, "an upstream needs at least one endpoint");
    return list;
  });
  ctx.read(*map, "load_balancing", upstream.load_balancing, [&](const YAML::Node& n) {
    return ctx.oneOf<LoadBalancing>(n, {{"round_robin", LoadBalancing::RoundRobin},
                                        {"least_request", LoadBalancing::LeastRequest}});
  });
  ctx.read(*map, "protocol", upstream.protocol, [&](const YAML::Node& n) {
    return ctx.oneOf<UpstreamProtocol>(n, {{"http1", UpstreamProtocol::Http1},
                                           {"h2", UpstreamProtocol::H2},
                                           {"auto", UpstreamProtocol::Auto}});
  });
  ctx.readUint(*map, "max_connections", upstream.max_connections, 1);
  ctx.readUint(*map, "max_pending", upstream.max_pending);
  ctx.read(*map, "keepalive", upstream.keepalive,
           [&](const YAML::Node& n) { return parseKeepalive(n, ctx); });
  ctx.read(*map, "retries", upstream.retries,
           [&](const YAML::Node& n) { return parseRetries(n, ctx); });
  if (const YAML::Node* check = map->find("health_check")) {
    upstream.health_check = parseHealthCheck(*check, ctx);
  }
  if (const YAML::Node* breaker = map->find("circuit_breaker")) {
    upstream.circuit_breaker = parseCircuitBreaker(*breaker, ctx);
  }
  if (const YAML::Node* tls = map->find("tls")) {
    upstream.tls = parseUpstreamTls(*tls, ctx);
    upstream.tls->alpn = upstream.protocol == UpstreamProtocol::H2     ? AlpnOffer::H2
                         : upstream.protocol == UpstreamProtocol::Auto ? AlpnOffer::H2OrHttp11
                                                                       : AlpnOffer::Http11;
  }
  config.upstreams.push_back(std::move(upstream));
}

// "host:port", or "unix:/path" where a single server may be named (the nodes a cluster or a
// sentinel names are TCP addresses); a host:port is resolved only when Redis is in use.
std::optional<std::string> parseRedisAddress(const YAML::Node& node, ConfigContext& ctx,
                                             bool resolve, bool allow_unix) {
  auto text = ctx.nonEmptyString(node);
  if (!text) return std::nullopt;
  if (text->rfind("unix:", 0) == 0) {
    if (allow_unix && text->size() > 5 && (*text)[5] == '/') return text;
    ctx.error(node, (allow_unix ? "expected unix:/absolute/path, got " : "expected host:port, got ") +
                        quoteValue(*text));
    return std::nullopt;
  }
  if (!resolve) return text;
  auto resolved = parseAddress(ctx, node, /*allow_port_zero=*/false);
  return resolved ? text : std::nullopt;
}

std::optional<std::vector<std::string>> parseRedisNodes(const YAML::Node& node,
                                                        ConfigContext& ctx, bool resolve) {
  auto nodes = ctx.list(node, "host:port addresses", [&](const YAML::Node& n) {
    return parseRedisAddress(n, ctx, resolve, /*allow_unix=*/false);
  });
  if (nodes && nodes->empty()) {
    ctx.error(node, "expected at least one host:port");
    return std::nullopt;
  }
  return nodes;
}

void parseRedisSentinel(const YAML::Node& node, ConfigContext& ctx, RedisConfig& redis,
                        bool in_use) {
  auto map = ctx.expectMap(node, "redis sentinel", {"master", "addresses"});
  if (!map || !ctx.require(*map, {"master", "addresses"})) return;
  ctx.read(*map, "master", redis.sentinel_master,
           [&](const YAML::Node& n) { return ctx.nonEmptyString(n); });
  ctx.read(*map, "addresses", redis.sentinels,
           [&](const YAML::Node& n) { return parseRedisNodes(n, ctx, in_use); });
}

void parseRedis(const YAML::Node& node, ConfigContext& ctx, RedisConfig& redis, bool in_use) {
  auto map = ctx.expectMap(node, "redis",
                           {"address", "cluster", "sentinel", "timeout", "on_error", "replicas",
                            "key_prefix", "username", "password", "db", "tls"});
  if (!map) return;
  // address has a default, so "exactly one" means: at most one of the three is written.
  const MapNode::Entry* first = nullptr;
  for (const MapNode::Entry& e : map->entries()) {
    if (e.key != "address" && e.key != "cluster" && e.key != "sentinel") continue;
    if (first) {
      ctx.error(e.key_node, "redis takes exactly one of address, cluster and sentinel (" +
                                first->key + " is already given)");
      return;
    }
    first = &e;
  }
  ctx.read(*map, "address", redis.address,
           [&](const YAML::Node& n) { return parseRedisAddress(n, ctx, in_use, /*allow_unix=*/true); });
  if (map->has("cluster")) {
    redis.mode = RedisMode::Cluster;
    ctx.read(*map, "cluster", redis.cluster,
             [&](const YAML::Node& n) { return parseRedisNodes(n, ctx, in_use); });
  }
  if (const YAML::Node* sentinel = map->find("sentinel")) {
    redis.mode = RedisMode::Sentinel;
    parseRedisSentinel(*sentinel, ctx, redis, in_use);
  }
  ctx.readDuration(*map, "timeout", redis.timeout, kAtLeastOneMs);
  ctx.read(*map, "on_error", redis.on_error, [&](const YAML::Node& n) {
    return ctx.oneOf<RedisOnError>(n, {{"allow", RedisOnError::Allow},
                                       {"deny", RedisOnError::Deny},
                                       {"local", RedisOnError::Local}});
  });
  ctx.readUint(*map, "replicas", redis.replicas, 1);
  ctx.readString(*map, "key_prefix", redis.key_prefix);
  ctx.readString(*map, "username", redis.username);
  ctx.readString(*map, "password", redis.password);
  ctx.readUint(*map, "db", redis.db);
  if (const YAML::Node* tls = map->find("tls")) redis.tls = parseUpstreamTls(*tls, ctx);
  if (redis.mode == RedisMode::Cluster && redis.db != 0) {
    ctx.error(*map->find("db"), "a Redis Cluster has only database 0");
  }
}

}  // namespace

void parseUpstreams(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  forEachItem(node, ctx, "upstreams",
              [&](const YAML::Node& item) { parseUpstream(item, ctx, config); });
  checkUniqueNames(ctx, config.upstreams, "upstream");
}

void parseRateLimitStore(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "rate_limit_store", {"type", "redis"});
  if (!map) return;
  config.rate_limit_store_configured = true;
  RateLimitStoreConfig& store = config.rate_limit_store;
  ctx.read(*map, "type", store.type, [&](const YAML::Node& n) {
    return ctx.oneOf<RateLimitStoreType>(
        n, {{"memory", RateLimitStoreType::Memory}, {"redis", RateLimitStoreType::Redis}});
  });
  bool in_use = store.type == RateLimitStoreType::Redis;
  if (const YAML::Node* redis = map->find("redis")) {
    parseRedis(*redis, ctx, store.redis, in_use);
  } else if (in_use) {
    // The default address must resolve too when it is the one that will be used.
    SocketAddress ignored;
    std::string problem = resolveAddress(store.redis.address, false, ignored);
    if (!problem.empty()) ctx.error(map->node(), "redis: " + problem);
  }
}

}  // namespace gw::config_detail
