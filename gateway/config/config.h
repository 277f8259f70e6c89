// The typed, immutable configuration: what the YAML file says, validated once.
//
// Contract:
// - A Config is built by loadConfig() (config_loader.h) and never mutated after it is
//   published; workers hold it through std::shared_ptr<const Config> and a request keeps
//   the snapshot it started with.
// - Every duration is in milliseconds, every size in bytes.
// - Filter configurations are opaque here (FilterConfig, filter.h); each filter folder
//   parses and validates its own.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace re2 {
class RE2;
}

namespace gw {

using Millis = std::chrono::milliseconds;

class FilterConfig;  // filter.h
class Filter;        // filter.h
namespace tracing {
struct TracingConfig;  // tracing/tracing_config.h
}

// Where a value came from in the configuration file, for messages that point at it.
struct SourceLocation {
  std::string file;
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

// A resolved socket address ("127.0.0.1:9000", "[::1]:80", "localhost:8080").
struct SocketAddress {
  std::string text;  // as written, for logs and labels
  sockaddr_storage storage{};
  socklen_t length = 0;

  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
  int family() const { return storage.ss_family; }
};

// An IPv4 or IPv6 network; IPv4 addresses are held as IPv4-mapped IPv6 so one
// comparison serves both families.
struct Cidr {
  uint8_t address[16]{};
  int prefix_length = 0;  // 0..128 over the mapped form
  std::string text;

  bool contains(const uint8_t (&ip16)[16]) const;
};

struct TlsCertificate {
  std::string cert_file;
  std::string key_file;
};

struct ListenerTls {
  std::vector<TlsCertificate> certificates;  // the first is the default
  std::string min_version = "TLSv1.2";       // TLSv1.2 or TLSv1.3
  std::string client_ca;                     // empty: no client certificates
};

// SPEC §7: the HTTP/2 server's settings, per listener (defaults as reference.yaml).
struct Http2Settings {
  uint32_t max_concurrent_streams = 100;
  uint32_t initial_stream_window = 64 * 1024;
  uint32_t initial_connection_window = 1024 * 1024;
  // 0: limits.max_request_header_bytes (resolved by the loader).
  uint64_t max_header_list_bytes = 0;
  uint32_t max_resets_per_second = 200;
};

struct ListenerConfig {
  std::string name;
  uint16_t metrics_label = 0;  // metrics::labelId(name), set by the loader
  SocketAddress address;
  bool redirect_https = false;
  std::optional<ListenerTls> tls;
  bool http2 = true;  // TLS: offer ALPN h2 beside http/1.1
  bool h2c = false;   // plaintext: HTTP/2 with prior knowledge too
  Http2Settings http2_settings;
  SourceLocation where;
  // Whether a connection on this listener may speak HTTP/2 (by ALPN or prior knowledge).
  bool speaksHttp2() const { return tls ? http2 : h2c; }
};

struct AdminConfig {
  SocketAddress address;  // default 127.0.0.1:9901
};

enum class LogLevel { Trace, Debug, Info, Warn, Error };

struct LoggingConfig {
  LogLevel level = LogLevel::Info;
  std::string access_log = "stdout";  // "stdout", "off", or a file path
};

// The largest head limit accepted (requests and responses): heads are kept whole in one block.
constexpr uint64_t kMaxHeadLimit = 1024 * 1024;

struct LimitsConfig {
  uint64_t max_request_header_bytes = 16 * 1024;
  // An upstream's response head (status line and fields, interim 1xx heads apart); longer
  // ones are answered 502 (nginx's proxy_buffer_size ceiling, Envoy's 60 KiB).
  uint64_t max_response_header_bytes = 64 * 1024;
  uint64_t max_uri_bytes = 8 * 1024;
  uint64_t max_body_bytes = 10 * 1024 * 1024;
  uint64_t max_connections = 100000;
  uint64_t max_connections_per_ip = 0;  // 0 = no limit
};

struct TimeoutsConfig {
  Millis header_read{10000};
  // Between two reads of a request body (reset by progress): a client too slow to send
  // its body gets 408, and the upstream's response timeout starts only once it has all.
  Millis body_read{60000};
  Millis idle{60000};
  Millis upstream_connect{2000};
  Millis upstream_response{30000};
  Millis drain{20000};
};

enum class LoadBalancing { RoundRobin, LeastRequest };

struct KeepaliveConfig {
  uint32_t max_idle = 64;
  Millis idle_timeout{30000};
};

// http: GET `path`, healthy on 2xx/3xx. grpc: grpc.health.v1.Health/Check over h2c for
// `service` (empty: the server as a whole), healthy on SERVING.
enum class HealthCheckType { Http, Grpc };

struct HealthCheckConfig {
  HealthCheckType type = HealthCheckType::Http;
  std::string path = "/healthz";
  std::string service;
  Millis interval{5000};
  Millis timeout{1000};
  uint32_t unhealthy_threshold = 3;
  uint32_t healthy_threshold = 2;
};

struct CircuitBreakerConfig {
  uint32_t consecutive_failures = 5;
  Millis open_for{30000};
};

// Default-constructed: no retries (an upstream without a `retries` block); the block's own
// defaults are set where it is parsed.
struct RetryConfig {
  uint32_t attempts = 0;  // retries after the first try
  bool on_connect_failure = false;
  std::vector<int> on_statuses;  // e.g. 502, 503
  Millis backoff{25};
};

// What a TLS client offers in ALPN, in order of preference.
enum class AlpnOffer { Http11, H2, H2OrHttp11 };

struct UpstreamTls {
  std::string sni;
  std::string ca;  // empty: the system's trust store
  std::string cert_file;
  std::string key_file;
  bool verify = true;
  AlpnOffer alpn = AlpnOffer::Http11;  // from upstreams[].protocol
};

// upstreams[].protocol (SPEC §8). H2: prior knowledge over TCP, ALPN h2 over TLS; Auto:
// what ALPN settles (HTTP/1.1 without TLS).
enum class UpstreamProtocol { Http1, H2, Auto };

struct UpstreamConfig {
  std::string name;
  uint16_t metrics_label = 0;  // metrics::labelId(name), set by the loader
  std::vector<SocketAddress> endpoints;
  LoadBalancing load_balancing = LoadBalancing::RoundRobin;
  UpstreamProtocol protocol = UpstreamProtocol::Http1;
  uint32_t max_connections = 1024;
  uint32_t max_pending = 1024;
  KeepaliveConfig keepalive;
  std::optional<HealthCheckConfig> health_check;
  std::optional<CircuitBreakerConfig> circuit_breaker;
  RetryConfig retries;
  std::optional<UpstreamTls> tls;
  SourceLocation where;
};

enum class RedisOnError { Allow, Deny, Local };

// Which servers hold the buckets (SPEC §9): exactly one of address, cluster, sentinel.
enum class RedisMode { Single, Cluster, Sentinel };

struct RedisConfig {
  RedisMode mode = RedisMode::Single;
  std::string address = "127.0.0.1:6379";  // Single: host:port or unix:/path
  std::vector<std::string> cluster;        // Cluster: seed nodes, host:port
  std::string sentinel_master;             // Sentinel: the master's name at the sentinels
  std::vector<std::string> sentinels;      // Sentinel: the sentinels, host:port
  Millis timeout{50};
  RedisOnError on_error = RedisOnError::Allow;
  uint32_t replicas = 1;
  std::string key_prefix = "gw:";
  std::string username;
  std::string password;
  uint32_t db = 0;
  std::optional<UpstreamTls> tls;  // TLS to every node (not to the sentinels)
};

enum class RateLimitStoreType { Memory, Redis };

struct RateLimitStoreConfig {
  RateLimitStoreType type = RateLimitStoreType::Memory;
  RedisConfig redis;
};

struct JwtProviderConfig {
  std::string name;
  std::string issuer;
  std::vector<std::string> audiences;
  std::string jwks_file;
  std::string jwks_uri;
  Millis jwks_refresh{300000};
  std::vector<std::string> algorithms;  // validated names: RS256, ES256, EdDSA, ...
  Millis leeway{30000};
  std::vector<std::pair<std::string, std::string>> forward_claims;  // claim -> header, file order
  // The jwks_file's text (checked to be JSON with a "keys" array) as read at load time.
  std::string jwks_file_content;
  SourceLocation where;
};

// One line of an api_keys keys_file: NAME SHA256HEX.
struct ApiKeyEntry {
  std::string name;
  std::array<uint8_t, 32> sha256{};
};

struct ApiKeySetConfig {
  std::string name;
  std::string header = "X-API-Key";
  std::string keys_file;
  // The keys_file's entries, read and checked when the configuration was loaded, so a
  // reload swaps keys atomically with the rest of the snapshot.
  std::vector<ApiKeyEntry> keys;
  SourceLocation where;
};

// One filter as configured on a route after merging the route's `filters` over
// `default_filters` (a filter set to `off` on the route is absent).
struct RouteFilter {
  std::string name;                            // registry name, e.g. "cors"
  std::shared_ptr<const FilterConfig> config;  // never null
  // What `gateway --explain` prints: the filter's settings as written (flow YAML), with
  // the values of secret-named keys masked when loaded, so that no secret is kept here.
  std::string settings;
  bool from_route = false;  // the route's own entry, not default_filters'
};

struct RouteMatch {
  std::string host;  // exact, or "*.example.com"; empty = any
  std::string path;  // exact; empty = unset
  std::string path_prefix;
  std::string path_regex;                  // source text; empty = unset
  std::shared_ptr<const re2::RE2> regex;   // compiled path_regex (full match)
  std::vector<std::string> methods;        // upper case; empty = any
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case name -> exact value
};

struct RouteConfig {
  std::string name;
  uint16_t metrics_label = 0;  // metrics::labelId(name), set by the loader
  RouteMatch match;
  std::string upstream;     // name of an UpstreamConfig
  size_t upstream_index = 0;  // index into Config::upstreams
  std::string strip_prefix;
  std::optional<Millis> timeout;  // overrides timeouts.upstream_response
  bool websocket = false;
  bool admin = false;  // serves the admin endpoints instead of an upstream
  std::vector<RouteFilter> filters;  // effective filter configs, in the SPEC's fixed order
  // Runtime filters built from `filters` by the registry, sorted by FilterOrder.
  std::vector<std::shared_ptr<const Filter>> chain;
  SourceLocation where;
};

struct Config {
  std::string source_file;  // the file it was loaded from
  uint32_t workers = 0;     // resolved: `auto` becomes the number of CPU cores
  std::vector<ListenerConfig> listeners;
  AdminConfig admin;
  LoggingConfig logging;
  LimitsConfig limits;
  TimeoutsConfig timeouts;
  std::vector<Cidr> trusted_proxies;
  std::vector<UpstreamConfig> upstreams;
  RateLimitStoreConfig rate_limit_store;
  bool rate_limit_store_configured = false;  // the section was present
  std::vector<JwtProviderConfig> jwt_providers;
  std::vector<ApiKeySetConfig> api_keys;
  std::vector<RouteFilter> default_filters;  // in the SPEC's fixed order
  // Runtime filters of default_filters: used for answers given before a route is known
  // (400, 404), so that they carry the same request id and security headers.
  std::vector<std::shared_ptr<const Filter>> default_chain;
  std::vector<RouteConfig> routes;
  std::shared_ptr<const tracing::TracingConfig> tracing;  // null: no `tracing` section

  const UpstreamConfig* findUpstream(const std::string& name) const;
};

// Parses "250ms", "10s", "5m", "1h" (also "1500" = ms? no: a bare number is an error).
std::optional<Millis> parseDuration(const std::string& text);
// Parses "1024", "16KiB", "10MiB", "1GiB" (also KB/MB/GB as powers of 1000).
std::optional<uint64_t> parseSize(const std::string& text);
// Parses "10.0.0.0/8", "::1/128", "192.168.1.1" (a host = /32 or /128).
std::optional<Cidr> parseCidr(const std::string& text);
// The first 12 bytes of an IPv4 address in the 16-byte form (::ffff:a.b.c.d).
inline constexpr uint8_t kIpv4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
// Maps any IPv4/IPv6 sockaddr to the 16-byte IPv4-mapped form Cidr uses.
void toIp16(const sockaddr* sa, uint8_t (&out)[16]);
// The text of a 16-byte address: a dotted quad for IPv4 (so also for an IPv4 client of a
// dual-stack listener), RFC 5952 form for IPv6. Returns its length.
constexpr size_t kIpTextMax = 46;  // INET6_ADDRSTRLEN
size_t formatIp16(const uint8_t (&ip16)[16], char (&out)[kIpTextMax]);

}  // namespace gw
