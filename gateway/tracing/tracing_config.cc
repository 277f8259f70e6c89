#include "gateway/tracing/tracing_config.h"

#include <charconv>

#include "filters/jwt/http_fetch.h"
#include "gateway/config/config_context.h"

namespace gw::tracing {
namespace {

constexpr uint32_t kMaxQueue = 1'000'000;

// Headers the exporter writes itself: a configured one would contradict it.
constexpr std::string_view kReservedHeaders[] = {"host", "content-type", "content-length",
                                                 "connection", "transfer-encoding"};

std::optional<double> parseRatio(const YAML::Node& node, ConfigContext& ctx) {
  auto text = ctx.string(node);
  if (!text) return std::nullopt;
  double value = -1;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size() || !(value >= 0 && value <= 1)) {
    ctx.error(node, "sampler ratio must be a number from 0 to 1, got " + quoteValue(*text));
    return std::nullopt;
  }
  return value;
}

void parseSampler(const YAML::Node& node, ConfigContext& ctx, TracingConfig& config) {
  auto map = ctx.expectMap(node, "sampler", {"ratio"});
  if (!map) return;
  ctx.read(*map, "ratio", config.ratio, [&](const YAML::Node& n) { return parseRatio(n, ctx); });
}

void parseHeaders(const YAML::Node& node, ConfigContext& ctx, TracingConfig& config) {
  auto map = ctx.expectOpenMap(node, "otlp headers");
  if (!map) return;
  for (const auto& entry : map->entries()) {
    if (!isHttpToken(entry.key)) {
      ctx.error(entry.key_node, quoteValue(entry.key) + " is not a valid header name");
      continue;
    }
    std::string lower = toLowerAscii(entry.key);
    bool reserved = false;
    for (std::string_view r : kReservedHeaders) reserved |= lower == r;
    if (reserved) {
      ctx.error(entry.key_node, "the exporter sets " + quoteValue(entry.key) + " itself");
      continue;
    }
    auto value = ctx.string(entry.value);
    if (!value) continue;
    if (!isSafeHeaderValue(*value)) {
      // Not quoted back: such headers usually hold a collector's credentials.
      ctx.error(entry.value, "header value must not contain CR, LF or NUL");
      continue;
    }
    config.headers.emplace_back(entry.key, *value);
  }
}

void parseBatch(const YAML::Node& node, ConfigContext& ctx, TracingConfig& config) {
  auto map = ctx.expectMap(node, "otlp batch", {"max_spans", "max_delay"});
  if (!map) return;
  ctx.readUint(*map, "max_spans", config.max_spans, 1, kMaxQueue);
  ctx.readDuration(*map, "max_delay", config.max_delay, Millis(1));
}

void parseOtlp(const YAML::Node& node, ConfigContext& ctx, TracingConfig& config) {
  auto map = ctx.expectMap(node, "otlp", {"endpoint", "timeout", "headers", "batch", "queue"});
  if (!map) return;
  ctx.read(*map, "endpoint", config.endpoint,
           [&](const YAML::Node& n) -> std::optional<std::string> {
             auto text = ctx.nonEmptyString(n);
             if (!text) return std::nullopt;
             std::string why;
             if (!jwt::parseHttpUrl(*text, &why)) {
               ctx.error(n, "otlp endpoint " + quoteValue(*text) + ": " + why);
               return std::nullopt;
             }
             return text;
           });
  ctx.readDuration(*map, "timeout", config.timeout, Millis(1));
  if (const YAML::Node* headers = map->find("headers")) parseHeaders(*headers, ctx, config);
  if (const YAML::Node* batch = map->find("batch")) parseBatch(*batch, ctx, config);
  ctx.readUint(*map, "queue", config.queue, 1, kMaxQueue);
  if (config.max_spans > config.queue) {
    const YAML::Node* at = map->find("queue");
    ctx.error(at ? *at : node, "otlp queue (" + std::to_string(config.queue) +
                                   ") must hold at least one batch (max_spans " +
                                   std::to_string(config.max_spans) + ")");
  }
}

}  // namespace

std::shared_ptr<const TracingConfig> parseTracing(const YAML::Node& node, ConfigContext& ctx) {
  auto config = std::make_shared<TracingConfig>();
  auto map = ctx.expectMap(node, "tracing", {"service_name", "sampler", "parent_based", "otlp"});
  if (!map) return config;
  ctx.read(*map, "service_name", config->service_name,
           [&](const YAML::Node& n) { return ctx.nonEmptyString(n); });
  if (const YAML::Node* sampler = map->find("sampler")) parseSampler(*sampler, ctx, *config);
  ctx.readBool(*map, "parent_based", config->parent_based);
  if (const YAML::Node* otlp = map->find("otlp")) parseOtlp(*otlp, ctx, *config);
  config->sampler = Sampler(config->ratio, config->parent_based);
  return config;
}

}  // namespace gw::tracing
