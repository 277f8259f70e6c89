// The credential sections: jwt_providers and api_keys, with the files they name.
#include "filters/api_key/api_key_file.h"
#include "filters/jwt/jwk.h"
#include "gateway/config/config_sections.h"

namespace gw::config_detail {
namespace {

constexpr std::string_view kAlgorithms[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                            "PS512", "ES256", "ES384", "ES512", "EdDSA",
                                            "HS256", "HS384", "HS512"};
// Without an explicit list, only public-key algorithms: an HMAC secret must be asked for.
constexpr std::string_view kDefaultAlgorithms[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
                                                   "PS512", "ES256", "ES384", "ES512", "EdDSA"};

std::optional<std::string> parseAlgorithm(const YAML::Node& node, ConfigContext& ctx) {
  auto name = ctx.string(node);
  if (!name) return std::nullopt;
  for (std::string_view known : kAlgorithms) {
    if (*name == known) return name;
  }
  if (toLowerAscii(*name) == "none") {
    ctx.error(node, "algorithm 'none' is never accepted");
  } else {
    std::vector<std::string> all(std::begin(kAlgorithms), std::end(kAlgorithms));
    ctx.error(node, "unknown JWT algorithm " + quoteValue(*name) + " (expected one of " +
                        joinStrings(all, ", ") + ")");
  }
  return std::nullopt;
}

std::optional<std::string> parseJwksUri(const YAML::Node& node, ConfigContext& ctx) {
  auto uri = ctx.string(node);
  if (!uri) return std::nullopt;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (uri->size() > scheme.size() && uri->compare(0, scheme.size(), scheme) == 0) return uri;
  }
  ctx.error(node, "jwks_uri must be an http:// or https:// URL, got " + quoteValue(*uri));
  return std::nullopt;
}

void parseForwardClaims(const YAML::Node& node, ConfigContext& ctx, JwtProviderConfig& provider) {
  auto map = ctx.expectOpenMap(node, "forward_claims");
  if (!map) return;
  for (const auto& entry : map->entries()) {
    auto header = ctx.token(entry.value, "header name");
    if (header) provider.forward_claims.emplace_back(entry.key, *header);
  }
}

void parseJwtProvider(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "jwt provider",
                           {"name", "issuer", "audiences", "jwks_file", "jwks_uri", "jwks_refresh",
                            "algorithms", "leeway", "forward_claims"});
  if (!map) return;
  ctx.require(*map, {"name"});
  JwtProviderConfig provider;
  readName(ctx, *map, provider);
  ctx.readString(*map, "issuer", provider.issuer);
  ctx.readStringList(*map, "audiences", provider.audiences);
  const YAML::Node* file = map->find("jwks_file");
  const YAML::Node* uri = map->find("jwks_uri");
  if (!file == !uri) {
    ctx.error(file ? *file : node, "a jwt provider needs exactly one of jwks_file, jwks_uri");
  }
  if (file) {
    auto path = ctx.readableFile(*file);
    if (path) provider.jwks_file = *path;
    if (path) provider.jwks_file_content = readJwksFile(ctx, *file, *path).value_or("");
  }
  ctx.read(*map, "jwks_uri", provider.jwks_uri,
           [&](const YAML::Node& n) { return parseJwksUri(n, ctx); });
  ctx.readDuration(*map, "jwks_refresh", provider.jwks_refresh, Millis(1000));
  provider.algorithms.assign(std::begin(kDefaultAlgorithms), std::end(kDefaultAlgorithms));
  ctx.read(*map, "algorithms", provider.algorithms, [&](const YAML::Node& n) {
    auto list =
        ctx.list(n, "algorithms", [&](const YAML::Node& a) { return parseAlgorithm(a, ctx); });
    if (list && list->empty()) {
      ctx.error(n, "algorithms must not be empty");
      return decltype(list)();
    }
    return list;
  });
  ctx.readDuration(*map, "leeway", provider.leeway);
  if (const YAML::Node* claims = map->find("forward_claims")) {
    parseForwardClaims(*claims, ctx, provider);
  }
  if (file && !provider.jwks_file_content.empty()) {
    for (const auto& problem : jwt::checkJwks(provider.jwks_file_content, provider.algorithms)) {
      ctx.error(*file, "JWKS file " + quoteValue(provider.jwks_file) + ": " + problem);
    }
  }
  config.jwt_providers.push_back(std::move(provider));
}

void loadKeysFile(const YAML::Node& at, ConfigContext& ctx, ApiKeySetConfig& set) {
  auto path = ctx.readableFile(at);
  if (!path) return;
  set.keys_file = *path;
  std::string text;
  std::string problem;
  if (!readBoundedFile(*path, text, problem)) {
    ctx.error(at, "cannot read keys file " + quoteValue(*path) + ": " + problem);
    return;
  }
  api_key::ApiKeyFile file = api_key::parseApiKeyFile(text);
  for (const auto& [line, problem] : file.problems) {
    ctx.error(at, "keys file " + quoteValue(*path) + " line " + std::to_string(line) + ": " +
                      problem);
  }
  set.keys = std::move(file.entries);
}

void parseApiKeySet(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  auto map = ctx.expectMap(node, "api key set", {"name", "header", "keys_file"});
  if (!map) return;
  ctx.require(*map, {"name", "keys_file"});
  ApiKeySetConfig set;
  readName(ctx, *map, set);
  ctx.read(*map, "header", set.header,
           [&](const YAML::Node& n) { return ctx.token(n, "header name"); });
  if (const YAML::Node* file = map->find("keys_file")) loadKeysFile(*file, ctx, set);
  config.api_keys.push_back(std::move(set));
}

}  // namespace

void parseJwtProviders(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  forEachItem(node, ctx, "jwt providers",
              [&](const YAML::Node& item) { parseJwtProvider(item, ctx, config); });
  checkUniqueNames(ctx, config.jwt_providers, "jwt provider");
}

void parseApiKeySets(const YAML::Node& node, ConfigContext& ctx, Config& config) {
  forEachItem(node, ctx, "api key sets",
              [&](const YAML::Node& item) { parseApiKeySet(item, ctx, config); });
  checkUniqueNames(ctx, config.api_keys, "api key set");
}

}  // namespace gw::config_detail
