// The sections about the gateway's own sockets and limits: listeners, admin, logging,
// limits, timeouts; and address resolution, which upstreams share.
#include <netdb.h>
#include <sys/stat.h>

#include <cstring>

#include "gateway/config/config_sections.h"
#include "gateway/tls/tls_context.h"

namespace gw::config_detail {
namespace {

constexpr Millis kAtLeastOneMs{1};

// "1.2.3.4#80" whatever way the address was written, to find two sockets of the
// configuration (listeners, admin) that would collide. None for an address not set, or
// with port 0: the kernel gives each socket bound there a free port of its own, so two of
// them never collide.
std::optional<std::string> fixedSocketKey(const SocketAddress& address) {
  if (address.length == 0) return std::nullopt;
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  if (getnameinfo(address.sa(), address.length, host, sizeof(host), port, sizeof(port),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return address.text;
  }
  if (std::string_view(port) == "0") return std::nullopt;
  return std::string(host) + "#" + port;
}

std::optional<TlsCertificate> parseCertificate(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "certificate", {"cert", "key"});
  if (!map || !ctx.require(*map, {"cert", "key"})) return std::nullopt;
  auto cert = ctx.readableFile(*map->find("cert"));
  auto key = ctx.readableFile(*map->find("key"));
  bool ok = cert && checkCertificates(ctx, *map->find("cert"), *cert);
  ok = key && checkPrivateKey(ctx, *map->find("key"), *key) && ok;
  if (ok) checkKeyMatchesCertificate(ctx, *map->find("key"), *cert, *key);
  if (!cert || !key) return std::nullopt;
  return TlsCertificate{*cert, *key};
}

std::optional<ListenerTls> parseListenerTls(const YAML::Node& node, ConfigContext& ctx) {
  auto map = ctx.expectMap(node, "listener tls", {"certificates", "min_version", "client_ca"});
  if (!map || !ctx.require(*map, {"certificates"})) return std::nullopt;
  size_t errors_before = ctx.errorCount();
  ListenerTls tls;
  const YAML::Node& certs = *map->find("certificates");
  auto parsed = ctx.list(certs, "certificates",
                         [&](const YAML::Node& c) { return parseCertificate(c, ctx); });
  if (parsed && parsed->empty()) ctx.error(certs, "a TLS listener needs at least one certificate");
  if (parsed) tls.certificates = std::move(*parsed);
  ctx.read(*map, "min_version", tls.min_version, [&](const YAML::Node& n) {
    return ctx.oneOf<std::string>(n, {{"TLSv1.2", "TLSv1.2"}, {"TLSv1.3", "TLSv1.3"}});
  });
  if (const YAML::Node* ca = map->find("client_ca")) {
    auto path = ctx.readableFile(*ca);
    if (path && checkCertificates(ctx, *ca, *path)) tls.client_ca = *path;
  }
  // The files parse: now build the context itself, as the server will (weak keys, a key
  // that does not match its certificate, a damaged chain).
  if (ctx.errorCount() == errors_before) {
    if (std::string e = validateListenerTls(tls); !e.empty()) ctx.error(node, e);
  }
  return tls;
}

void parseHttp2Settings(const YAML::Node& node, ConfigContext& ctx, Http2Settings& out) {
  auto map = ctx.expectMap(node, "http2_settings",
                           {"max_concurrent_streams", "initial_stream_window", "initial_connection_window",
                            "max_header_list_bytes", "max_resets_per_second"});
  if (!map) return;
  // RFC 9113 §6.5.2/§6.9.1: windows are at most 2^31-1. A stream limit of 0 would refuse
  // every request; more than a few thousand is only a way to pin memory.
  constexpr uint64_t kMaxWindow = (uint64_t(1) << 31) - 1;
  ctx.readUint(*map, "max_concurrent_streams", out.max_concurrent_streams, 1, 10000);
  auto window = [&](std::string_view key, uint32_t& value, uint64_t min) {
    uint64_t v = value;
    if (map->has(key) && ctx.readSize(*map, key, v)) {
      if (v < min || v > kMaxWindow) {
        ctx.error(*map->find(key), std::string(key) + " must be between " + std::to_string(min) +
                                       " and 2147483647 bytes, got " + std::to_string(v));
      } else {
        value = uint32_t(v);
      }
    }
  };
  window("initial_stream_window", out.initial_stream_window, 1024);
  window("initial_connection_window", out.initial_connection_window, 65535);
  uint64_t list = out.max_header_list_bytes;
  if (map->has("max_header_list_bytes") && ctx.readSize(*map, "max_header_list_bytes", list)) {
    if (list < 1024 || list > kMaxHeadLimit) {
      ctx.error(*map->find("max_header_list_bytes"),
                "max_header_list_bytes must be between 1KiB and 1MiB, got " + std::to_string(list));
    } else {
      out.max_header_list_bytes = list;
    }
  }
  ctx.readUint(*map, "max_resets_per_second", out.max_resets_per_second, 1, 1000000);
}

void parseListener(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "listener",
                           {"name", "address", "redirect_https", "tls", "http2", "h2c", "http2_settings"});
  if (!map) return;
  ctx.require(*map, {"name", "address"});
  ListenerConfig listener;
  readName(ctx, *map, listener);
  ctx.read(*map, "address", listener.address,
           [&](const YAML::Node& n) { return parseAddress(ctx, n, /*allow_port_zero=*/true); });
  ctx.readBool(*map, "redirect_https", listener.redirect_https);
  if (const YAML::Node* tls = map->find("tls")) listener.tls = parseListenerTls(*tls, ctx);
  ctx.readBool(*map, "http2", listener.http2);
  ctx.readBool(*map, "h2c", listener.h2c);
  if (listener.h2c && listener.tls) {
    ctx.error(*map->find("h2c"), "h2c is for plaintext listeners; a TLS listener offers h2 by ALPN (http2)");
  }
  if (const YAML::Node* h2 = map->find("http2_settings")) parseHttp2Settings(*h2, ctx, listener.http2_settings);
  config.listeners.push_back(std::move(listener));
}

}  // namespace

std::string resolveAddress(const std::string& text, bool allow_port_zero, SocketAddress& out) {
  std::string host;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return "bad address " + quoteValue(text) + " (expected [IPv6]:port)";
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return "bad address " + quoteValue(text) + " (expected host:port)";
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return "bad address " + quoteValue(text) + " (write an IPv6 address in brackets: [::1]:80)";
    }
  }
  bool digits = !port.empty() && port.size() <= 5 &&
                port.find_first_not_of("0123456789") == std::string::npos;
  int port_number = digits ? std::stoi(port) : -1;
  if (host.empty() || port_number < (allow_port_zero ? 0 : 1) || port_number > 65535) {
    return "bad address " + quoteValue(text) + " (expected host:port with a port from " +
           (allow_port_zero ? "0" : "1") + " to 65535)";
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0 || !result) {
    return "cannot resolve " + quoteValue(host) + ": " +
           (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc));
  }
  // The first answer, as connect() would try it: the runtime resolves names again.
  std::memcpy(&out.storage, result->ai_addr, result->ai_addrlen);
  out.length = static_cast<socklen_t>(result->ai_addrlen);
  out.text = text;
  freeaddrinfo(result);
  return {};
}

std::optional<SocketAddress> parseAddress(ConfigContext& ctx, const YAML::Node& node,
                                          bool allow_port_zero) {
  auto text = ctx.string(node);
  if (!text) return std::nullopt;
  SocketAddress address;
  std::string problem = resolveAddress(*text, allow_port_zero, address);
  if (!problem.empty()) {
    ctx.error(node, problem);
    return std::nullopt;
  }
  return address;
}

void parseListeners(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  forEachItem(node, ctx, "listeners",
              [&](const YAML::Node& item) { parseListener(item, ctx, config); });
  if (config.listeners.empty() && (node.IsSequence() || node.IsNull())) {
    ctx.error(node, "at least one listener is required");
  }
  // A connection keeps its listener's index in 16 bits, and each listener takes a metric
  // label of the 65,536 the process has.
  constexpr size_t kMaxListeners = 1024;
  if (config.listeners.size() > kMaxListeners) {
    ctx.error(node, "at most " + std::to_string(kMaxListeners) + " listeners are supported, got " +
                        std::to_string(config.listeners.size()));
  }
  checkUniqueNames(ctx, config.listeners, "listener");
  std::map<std::string, const ListenerConfig*> by_address;
  bool any_tls = false;
  for (const auto& listener : config.listeners) {
    any_tls = any_tls || listener.tls.has_value();
    auto key = fixedSocketKey(listener.address);
    if (!key) continue;
    auto [it, inserted] = by_address.emplace(*key, &listener);
    if (!inserted) {
      ctx.error(listener.where, "listener " + quoteValue(listener.name) +
                                    " uses the same address as " + quoteValue(it->second->name));
    }
  }
  for (const auto& listener : config.listeners) {
    if (listener.redirect_https && !any_tls) {
      ctx.error(listener.where,
                "listener " + quoteValue(listener.name) +
                    " has redirect_https but no listener has tls");
    }
  }
}

void parseAdmin(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "admin", {"address"});
  resolveAddress("127.0.0.1:9901", false, config.admin.address);
  if (!map) return;
  ctx.read(*map, "address", config.admin.address,
           [&](const YAML::Node& n) { return parseAddress(ctx, n, /*allow_port_zero=*/true); });
  auto admin_key = fixedSocketKey(config.admin.address);
  for (const auto& listener : config.listeners) {
    if (admin_key && fixedSocketKey(listener.address) == admin_key) {
      const YAML::Node* at = map->find("address");
      std::string message =
          "admin address is also the address of listener " + quoteValue(listener.name);
      if (at) {
        ctx.error(*at, message);
      } else {
        ctx.error(listener.where, message);
      }
    }
  }
}

void parseLogging(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "logging", {"level", "access_log"});
  if (!map) return;
  LoggingConfig& logging = config.logging;
  ctx.read(*map, "level", logging.level, [&](const YAML::Node& n) {
    return ctx.oneOf<LogLevel>(n, {{"trace", LogLevel::Trace},
                                   {"debug", LogLevel::Debug},
                                   {"info", LogLevel::Info},
                                   {"warn", LogLevel::Warn},
                                   {"error", LogLevel::Error}});
  });
  const YAML::Node* access_log = map->find("access_log");
  if (!access_log) return;
  auto path = ctx.nonEmptyString(*access_log);
  if (!path) return;
  logging.access_log = *path;
  if (*path == "stdout" || *path == "off") return;
  // The file itself may not exist yet; the directory it goes in must.
  size_t slash = path->rfind('/');
  std::string directory = slash == std::string::npos ? "." : path->substr(0, slash + 1);
  struct stat st {};
  if (stat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    ctx.error(*access_log, "access_log directory " + quoteValue(directory) + " does not exist");
  }
}

void parseLimits(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "limits",
                           {"max_request_header_bytes", "max_response_header_bytes",
                            "max_uri_bytes", "max_body_bytes", "max_connections",
                            "max_connections_per_ip"});
  if (!map) return;
  LimitsConfig& limits = config.limits;
  // A zero head or URI limit would refuse every request: surely a mistake. A head is kept
  // whole in one block while it arrives, so its limit also bounds that block.
  auto readHeadSize = [&](std::string_view key, uint64_t& out) {
    ctx.read(*map, key, out, [&](const YAML::Node& n) -> std::optional<uint64_t> {
      auto v = ctx.size(n);
      if (v && (*v == 0 || *v > kMaxHeadLimit)) {
        ctx.error(n, std::string(key) + " must be greater than 0 and at most 1MiB");
        return std::nullopt;
      }
      return v;
    });
  };
  readHeadSize("max_request_header_bytes", limits.max_request_header_bytes);
  readHeadSize("max_response_header_bytes", limits.max_response_header_bytes);
  readHeadSize("max_uri_bytes", limits.max_uri_bytes);
  ctx.readSize(*map, "max_body_bytes", limits.max_body_bytes);
  ctx.readUint(*map, "max_connections", limits.max_connections, 1);
  ctx.readUint(*map, "max_connections_per_ip", limits.max_connections_per_ip);
}

void parseTimeouts(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(
      node, "timeouts",
      {"header_read", "body_read", "idle", "upstream_connect", "upstream_response", "drain"});
  if (!map) return;
  TimeoutsConfig& t = config.timeouts;
  ctx.readDuration(*map, "header_read", t.header_read, kAtLeastOneMs);
  ctx.readDuration(*map, "body_read", t.body_read, kAtLeastOneMs);
  ctx.readDuration(*map, "idle", t.idle, kAtLeastOneMs);
  ctx.readDuration(*map, "upstream_connect", t.upstream_connect, kAtLeastOneMs);
  ctx.readDuration(*map, "upstream_response", t.upstream_response, kAtLeastOneMs);
  ctx.readDuration(*map, "drain", t.drain);
}

}  // namespace gw::config_detail
