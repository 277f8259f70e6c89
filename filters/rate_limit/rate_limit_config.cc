#include "filters/rate_limit/rate_limit_config.h"

namespace gw::rate_limit {
namespace {

bool parseKey(const YAML::Node& node, ConfigContext& ctx, Limit& limit) {
  auto key = ctx.nonEmptyString(node);
  if (!key) return false;
  limit.key = *key;
  static constexpr std::pair<std::string_view, KeyType> kPlainKeys[] = {
      {"client_ip", KeyType::ClientIp}, {"route", KeyType::Route}, {"api_key", KeyType::ApiKey}};
  for (const auto& [word, type] : kPlainKeys) {
    if (*key != word) continue;
    limit.key_type = type;
    return true;
  }
  size_t colon = key->find(':');
  std::string prefix = key->substr(0, colon == std::string::npos ? key->size() : colon + 1);
  std::string name = colon == std::string::npos ? "" : key->substr(colon + 1);
  if (prefix == "header:" && isHttpToken(name)) {
    limit.key_type = KeyType::Header;
    limit.key_name = toLowerAscii(name);
    return true;
  }
  if (prefix == "claim:" && !name.empty()) {
    limit.key_type = KeyType::Claim;
    limit.key_name = name;
    return true;
  }
  ctx.error(node, "bad rate limit key " + quoteValue(*key) +
                      " (expected client_ip, route, header:NAME, claim:NAME or api_key)");
  return false;
}

std::optional<Limit> parseLimit(const YAML::Node& node, ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map =
      ctx.expectMap(node, "rate limit", {"key", "requests", "per", "burst", "shared", "dry_run"});
  if (!map || !ctx.require(*map, {"key", "requests", "per"})) return std::nullopt;
  Limit limit;
  limit.where = ctx.location(node);
  parseKey(*map->find("key"), ctx, limit);
  ctx.readUint(*map, "requests", limit.requests, 1);
  ctx.readDuration(*map, "per", limit.per, Millis(1));
  limit.burst = limit.requests;
  ctx.readUint(*map, "burst", limit.burst, 1);
  ctx.read(*map, "shared", limit.shared,
           [&](const YAML::Node& n) { return ctx.token(n, "shared limit name"); });
  ctx.readBool(*map, "dry_run", limit.dry_run);
  limit.after_auth = limit.key_type == KeyType::Claim || limit.key_type == KeyType::ApiKey;
  if (ctx.errorCount() != errors) return std::nullopt;
  return limit;
}

}  // namespace

bool Limit::sameBucketAs(const Limit& other) const {
  return key_type == other.key_type && key_name == other.key_name && requests == other.requests &&
         per == other.per && burst == other.burst;
}

RateLimitConfig::RateLimitConfig(std::vector<Limit> limits) : limits_(std::move(limits)) {
  for (const Limit& limit : limits_) {
    has_after_auth_ = has_after_auth_ || limit.after_auth;
    has_before_auth_ = has_before_auth_ || !limit.after_auth;
  }
}

std::shared_ptr<const FilterConfig> parseRateLimitConfig(const YAML::Node& node,
                                                         ConfigContext& ctx) {
  size_t errors = ctx.errorCount();
  auto map = ctx.expectMap(node, "rate_limit", {"limits"});
  if (!map || !ctx.require(*map, {"limits"})) return nullptr;
  const YAML::Node& list = *map->find("limits");
  auto limits = ctx.list(list, "limits", [&](const YAML::Node& n) { return parseLimit(n, ctx); });
  if (limits && limits->empty()) ctx.error(list, "limits must not be empty");
  if (limits && limits->size() > kMaxLimits) {
    ctx.error(list, "at most " + std::to_string(kMaxLimits) + " limits per rate_limit");
  }
  if (!limits || ctx.errorCount() != errors) return nullptr;
  return std::make_shared<RateLimitConfig>(std::move(*limits));
}

}  // namespace gw::rate_limit
