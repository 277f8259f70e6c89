// The loader end to end: the reference configuration, and each kind of error with the
// exact FILE:LINE:COL message an operator sees.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <re2/re2.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "filters/jwt/jwt_config.h"
#include "filters/rate_limit/rate_limit_config.h"
#include "gateway/config/config_loader.h"
#include "gateway/filter.h"
#include "tests/gateway/config_test_util.h"

namespace gw {
namespace {

using test_util::errorsOf;
using test_util::kMinimal;
using test_util::ScratchDir;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

std::vector<std::string> filterNames(const std::vector<RouteFilter>& filters) {
  std::vector<std::string> names;
  for (const auto& f : filters) names.push_back(f.name);
  return names;
}

const RouteConfig& routeNamed(const Config& config, const std::string& name) {
  for (const auto& route : config.routes) {
    if (route.name == name) return route;
  }
  throw std::runtime_error("no route " + name);
}

template <class T>
const T& filterOf(const RouteConfig& route, const std::string& name) {
  for (const auto& f : route.filters) {
    if (f.name == name) return static_cast<const T&>(*f.config);
  }
  throw std::runtime_error("no filter " + name);
}

std::shared_ptr<const Config> loadOk(const std::string& yaml) {
  LoadResult result = loadConfigString(yaml, "test.yaml");
  for (const auto& e : result.errors) ADD_FAILURE() << e.format();
  return result.config;
}

TEST(ConfigLoaderTest, ReferenceConfigurationLoads) {
  ScratchDir dir;
  test_util::writeReferenceFiles(dir);
  LoadResult result = loadConfigFile(std::string(TEST_DATA_DIR) + "/reference.yaml");
  for (const auto& e : result.errors) ADD_FAILURE() << e.format();
  ASSERT_TRUE(result.ok());
  const Config& c = *result.config;

  EXPECT_EQ(c.workers, std::max(1u, std::thread::hardware_concurrency()));
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].name, "http");
  EXPECT_FALSE(c.listeners[0].tls.has_value());
  ASSERT_TRUE(c.listeners[1].tls.has_value());
  EXPECT_EQ(c.listeners[1].tls->certificates.at(0).cert_file, "conf/tls/server.crt");
  EXPECT_EQ(c.listeners[1].tls->min_version, "TLSv1.2");
  EXPECT_EQ(c.admin.address.text, "127.0.0.1:9901");
  EXPECT_EQ(c.logging.level, LogLevel::Info);
  EXPECT_EQ(c.logging.access_log, "stdout");
  EXPECT_EQ(c.limits.max_request_header_bytes, 16u * 1024);
  EXPECT_EQ(c.limits.max_body_bytes, 10u * 1024 * 1024);
  EXPECT_EQ(c.timeouts.drain, Millis(20000));
  EXPECT_TRUE(c.trusted_proxies.empty());

  ASSERT_EQ(c.upstreams.size(), 1u);
  const UpstreamConfig& api = c.upstreams[0];
  EXPECT_EQ(c.findUpstream("api"), &api);
  EXPECT_EQ(c.findUpstream("nope"), nullptr);
  EXPECT_EQ(api.endpoints.at(0).text, "127.0.0.1:9000");
  EXPECT_EQ(api.endpoints.at(0).family(), AF_INET);
  EXPECT_EQ(api.keepalive.max_idle, 64u);
  EXPECT_EQ(api.keepalive.idle_timeout, Millis(30000));
  ASSERT_TRUE(api.health_check.has_value());
  EXPECT_EQ(api.health_check->path, "/healthz");
  EXPECT_EQ(api.health_check->type, HealthCheckType::Http);
  EXPECT_EQ(api.health_check->service, "");
  ASSERT_TRUE(api.circuit_breaker.has_value());
  EXPECT_EQ(api.circuit_breaker->open_for, Millis(30000));
  EXPECT_EQ(api.retries.attempts, 2u);
  EXPECT_TRUE(api.retries.on_connect_failure);
  EXPECT_THAT(api.retries.on_statuses, ElementsAre(502, 503));
  EXPECT_EQ(api.retries.backoff, Millis(25));

  EXPECT_TRUE(c.rate_limit_store_configured);
  EXPECT_EQ(c.rate_limit_store.type, RateLimitStoreType::Memory);
  EXPECT_EQ(c.rate_limit_store.redis.key_prefix, "gw:");
  EXPECT_EQ(c.rate_limit_store.redis.timeout, Millis(50));

  ASSERT_EQ(c.jwt_providers.size(), 1u);
  EXPECT_THAT(c.jwt_providers[0].algorithms, ElementsAre("RS256", "ES256", "EdDSA"));
  EXPECT_EQ(c.jwt_providers[0].leeway, Millis(30000));
  EXPECT_THAT(c.jwt_providers[0].forward_claims,
              ElementsAre(std::pair<std::string, std::string>("sub", "X-User-Id")));
  EXPECT_EQ(c.jwt_providers[0].jwks_file_content, test_util::kJwks);
  ASSERT_EQ(c.api_keys.size(), 1u);
  ASSERT_EQ(c.api_keys[0].keys.size(), 2u);
  EXPECT_EQ(c.api_keys[0].keys[1].name, "partner-two");
  EXPECT_EQ(c.api_keys[0].keys[1].sha256[0], 0xfe);

  // Defaults in the SPEC's order, whatever the file's.
  EXPECT_THAT(filterNames(c.default_filters),
              ElementsAre("request_id", "cors", "body_limit", "rate_limit", "security_headers"));
  ASSERT_EQ(c.routes.size(), 6u);
  const RouteConfig& admin = routeNamed(c, "admin");
  EXPECT_THAT(filterNames(admin.filters), ElementsAre("request_id", "cors", "body_limit",
                                                      "rate_limit", "jwt", "security_headers"));
  EXPECT_EQ(filterOf<rate_limit::RateLimitConfig>(admin, "rate_limit").limits().at(0).requests,
            100u);
  EXPECT_THAT(filterOf<jwt::JwtConfig>(admin, "jwt").requireClaims().at(0).second,
              ElementsAre("admin"));
  ASSERT_TRUE(admin.match.regex);
  EXPECT_TRUE(RE2::FullMatch("/api/admin/users", *admin.match.regex));

  const RouteConfig& reg = routeNamed(c, "register");
  EXPECT_THAT(reg.match.methods, ElementsAre("POST"));
  const auto& reg_limit = filterOf<rate_limit::RateLimitConfig>(reg, "rate_limit").limits().at(0);
  EXPECT_EQ(reg_limit.requests, 5u);
  EXPECT_EQ(reg_limit.per, Millis(3600000));

  const RouteConfig& partners = routeNamed(c, "partners");
  EXPECT_THAT(filterNames(partners.filters),
              ElementsAre("request_id", "body_limit", "rate_limit", "api_key", "security_headers"));
  EXPECT_EQ(partners.strip_prefix, "/partners");
  const auto& partner_limits = filterOf<rate_limit::RateLimitConfig>(partners, "rate_limit");
  EXPECT_TRUE(partner_limits.hasAfterAuth());
  EXPECT_FALSE(partner_limits.hasBeforeAuth());
  EXPECT_EQ(partner_limits.limits().at(0).burst, 200u);

  const auto& me = filterOf<rate_limit::RateLimitConfig>(routeNamed(c, "me"), "rate_limit");
  EXPECT_EQ(me.limits().size(), 2u);
  EXPECT_EQ(me.limits().at(0).key_name, "sub");
  // A route that does not mention a filter shares the default's parsed object.
  EXPECT_EQ(routeNamed(c, "default").filters.at(1).config, c.default_filters.at(1).config);
  // Chains hold the runtime filters (of those that have one), in FilterOrder.
  auto inOrder = [](const std::vector<std::shared_ptr<const Filter>>& chain) {
    return std::is_sorted(chain.begin(), chain.end(),
                          [](const auto& a, const auto& b) { return a->order() < b->order(); });
  };
  auto chainHas = [](const RouteConfig& route, std::string_view name) {
    return std::any_of(route.chain.begin(), route.chain.end(),
                       [&](const auto& f) { return f->name() == name; });
  };
  EXPECT_FALSE(c.default_chain.empty());
  EXPECT_TRUE(inOrder(c.default_chain));
  for (const auto& route : c.routes) EXPECT_TRUE(inOrder(route.chain)) << route.name;
  EXPECT_TRUE(chainHas(admin, "cors"));
  EXPECT_FALSE(chainHas(partners, "cors"));
}

TEST(ConfigLoaderTest, MinimalConfigGetsDefaults) {
  auto c = loadOk(kMinimal);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->admin.address.text, "127.0.0.1:9901");
  EXPECT_EQ(c->admin.address.family(), AF_INET);
  EXPECT_FALSE(c->rate_limit_store_configured);
  EXPECT_EQ(c->timeouts.idle, Millis(60000));
  EXPECT_TRUE(c->routes.empty());
}

TEST(ConfigLoaderTest, UnknownKeyPointsAtItAndSuggests) {
  EXPECT_THAT(errorsOf("listeners:\n"
                       "  - name: http\n"
                       "    adress: 127.0.0.1:8080\n"),
              ElementsAre("test.yaml:2:5: missing required key 'address' in listener",
                          "test.yaml:3:5: unknown key 'adress' in listener (did you mean "
                          "'address'?)"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "timeout: {idle: 5s}\n"),
              ElementsAre("test.yaml:7:1: unknown key 'timeout' in the configuration (did you "
                          "mean 'timeouts'?)"));
}

TEST(ConfigLoaderTest, AnUnknownKeyLeavesTheKeysAfterItIntact) {
  // Only the typo is reported: the keys after it keep their own values and positions
  // (removing the unknown entry once shifted each later key onto its neighbour's value).
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "routes:\n"
                       "  - name: r\n"
                       "    upstrem: api\n"
                       "    match: {path_prefix: /}\n"
                       "    timeout: 5s\n"
                       "    websocket: true\n"),
              ElementsAre("test.yaml:8:5: missing required key 'upstream' in route",
                          "test.yaml:9:5: unknown key 'upstrem' in route (did you mean "
                          "'upstream'?)"));
  EXPECT_THAT(errorsOf("foo: 1\nbar: 2\n" + std::string(kMinimal)),
              ElementsAre("test.yaml:1:1: unknown key 'foo' in the configuration",
                          "test.yaml:2:1: unknown key 'bar' in the configuration"));
}

TEST(ConfigLoaderTest, BadDurationAndSize) {
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "timeouts:\n  idle: 10\n  drain: -1s\n"),
              ElementsAre("test.yaml:8:9: bad duration '10' (expected a whole number with a "
                          "unit: 250ms, 10s, 5m, 1h)",
                          "test.yaml:9:10: bad duration '-1s' (expected a whole number with a "
                          "unit: 250ms, 10s, 5m, 1h)"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "limits: {max_body_bytes: 10XB}\n"),
              ElementsAre("test.yaml:7:26: bad size '10XB' (expected bytes as an integer, or "
                          "16KiB, 10MiB, 1GiB)"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "timeouts: {idle: 99999999999999999999h}\n"),
              ElementsAre(StartsWith("test.yaml:7:18: bad duration")));
}

TEST(ConfigLoaderTest, UnknownUpstreamAndDuplicateNames) {
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "  - name: api\n"
                                               "    endpoints: [127.0.0.1:9001]\n"
                                               "routes:\n"
                                               "  - {name: a, match: {path: /}, upstream: web}\n"
                                               "  - {name: a, match: {path: /x}, upstream: api}\n"),
              ElementsAre("test.yaml:7:11: duplicate upstream name 'api' (first defined at "
                          "line 5)",
                          "test.yaml:10:43: unknown upstream 'web'",
                          "test.yaml:11:12: duplicate route name 'a' (first defined at line 10)"));
}

TEST(ConfigLoaderTest, MissingFilesAreReportedAtTheirValue) {
  ScratchDir dir;
  EXPECT_THAT(errorsOf("listeners:\n"
                       "  - name: https\n"
                       "    address: 127.0.0.1:8443\n"
                       "    tls:\n"
                       "      certificates:\n"
                       "        - {cert: missing.crt, key: missing.key}\n"),
              ElementsAre("test.yaml:6:18: cannot read file 'missing.crt': No such file or "
                          "directory",
                          "test.yaml:6:36: cannot read file 'missing.key': No such file or "
                          "directory"));
  // What is not a regular file is refused before anything is read (a FIFO would block
  // open(), /dev/zero would be read until memory runs out).
  EXPECT_THAT(errorsOf("api_keys: [{name: k, keys_file: /dev/zero}]\n"),
              Contains("test.yaml:1:33: cannot read file '/dev/zero': not a regular file (a "
                       "character device)"));
  LoadResult unreadable = loadConfigFile("no/such/gateway.yaml");
  ASSERT_EQ(unreadable.errors.size(), 1u);
  EXPECT_EQ(unreadable.errors[0].format(),
            "no/such/gateway.yaml:0:0: cannot read configuration file: No such file or "
            "directory");
  EXPECT_FALSE(unreadable.ok());
}

TEST(ConfigLoaderTest, TlsFilesAreParsedAndMatched) {
  ScratchDir dir;
  auto [cert, key] = test_util::makeSelfSigned("a");
  auto [other_cert, other_key] = test_util::makeSelfSigned("b");
  dir.write("a.crt", cert);
  dir.write("a.key", key);
  dir.write("b.key", other_key);
  dir.write("garbage.crt", "not a certificate\n");
  std::string head = "listeners:\n  - name: https\n    address: 127.0.0.1:8443\n    tls:\n";
  EXPECT_TRUE(loadOk(head + "      certificates: [{cert: a.crt, key: a.key}]\n"
                            "      min_version: TLSv1.3\n"));
  EXPECT_THAT(errorsOf(head + "      certificates: [{cert: a.crt, key: b.key}]\n"),
              ElementsAre("test.yaml:5:41: private key 'b.key' does not match certificate "
                          "'a.crt'"));
  EXPECT_THAT(errorsOf(head + "      certificates: [{cert: garbage.crt, key: a.key}]\n"),
              ElementsAre(StartsWith("test.yaml:5:29: 'garbage.crt' holds no PEM certificate")));
  EXPECT_THAT(errorsOf(head + "      certificates: []\n"),
              ElementsAre("test.yaml:5:21: a TLS listener needs at least one certificate"));
}

TEST(ConfigLoaderTest, UnresolvableAddress) {
  EXPECT_THAT(errorsOf("listeners:\n"
                       "  - {name: http, address: 127.0.0.1:8080}\n"
                       "upstreams:\n"
                       "  - {name: api, endpoints: [no-such-host.invalid:80, '[::1]:70000', "
                       "'::1:80']}\n"),
              ElementsAre(StartsWith("test.yaml:4:29: cannot resolve 'no-such-host.invalid': "),
                          "test.yaml:4:54: bad address '[::1]:70000' (expected host:port with a "
                          "port from 1 to 65535)",
                          "test.yaml:4:69: bad address '::1:80' (write an IPv6 address in "
                          "brackets: [::1]:80)"));
}

TEST(ConfigLoaderTest, EnvironmentSubstitution) {
  setenv("GW_TEST_PORT", "8181", 1);
  unsetenv("GW_TEST_UNSET");
  auto c = loadOk(
      "listeners:\n"
      "  - name: http\n"
      "    address: 127.0.0.1:${GW_TEST_PORT}\n"
      "logging: {level: \"${GW_TEST_UNSET:-debug}\", access_log: 'x$${y}'}\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->listeners[0].address.text, "127.0.0.1:8181");
  EXPECT_EQ(c->logging.level, LogLevel::Debug);
  EXPECT_EQ(c->logging.access_log, "x${y}");
  EXPECT_THAT(errorsOf("listeners:\n"
                       "  - name: http\n"
                       "    address: ${GW_TEST_UNSET}:80\n"
                       "workers: ${GW_TEST_UNSET:-3}${oops\n"),
              ElementsAre("test.yaml:3:14: environment variable 'GW_TEST_UNSET' is not set (use "
                          "${GW_TEST_UNSET:-default} to give a default)",
                          "test.yaml:4:10: unterminated '${' in value"));
}

TEST(ConfigLoaderTest, OffAndOnStayStrings) {
  auto c = loadOk(std::string(kMinimal) +
                  "    retries: {attempts: 1, on: [connect_failure, 503]}\n"
                  "logging: {access_log: off}\n"
                  "default_filters:\n"
                  "  cors: {allow_origins: ['*']}\n"
                  "  request_id: {}\n"
                  "routes:\n"
                  "  - name: r\n"
                  "    match: {path_prefix: /}\n"
                  "    upstream: api\n"
                  "    filters: {cors: off}\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->logging.access_log, "off");
  EXPECT_THAT(c->upstreams[0].retries.on_statuses, ElementsAre(503));
  EXPECT_THAT(filterNames(c->default_filters), ElementsAre("request_id", "cors"));
  EXPECT_THAT(filterNames(c->routes[0].filters), ElementsAre("request_id"));
  EXPECT_THAT(errorsOf("listeners:\n  - {name: a, address: 127.0.0.1:80, redirect_https: on}\n"),
              ElementsAre("test.yaml:2:54: expected true or false, got 'on'"));
}

TEST(ConfigLoaderTest, YamlSyntaxError) {
  EXPECT_THAT(errorsOf("listeners: [\n  {name: a\n"),
              ElementsAre(StartsWith("test.yaml:3:1: YAML syntax error: ")));
  EXPECT_THAT(errorsOf("a: b: c\n"),
              ElementsAre("test.yaml:1:5: YAML syntax error: illegal map value"));
  EXPECT_THAT(errorsOf(""), ElementsAre("test.yaml:0:0: the configuration is empty"));
  EXPECT_THAT(errorsOf("- 1\n"),
              ElementsAre("test.yaml:1:1: expected a map for the configuration, got a list"));
}

TEST(ConfigLoaderTest, StructureErrors) {
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "workers: 0\nworkers: 2\n"),
              ElementsAre("test.yaml:7:10: must be at least 1, got 0",
                          "test.yaml:8:1: duplicate key 'workers' in the configuration"));
  // A key with no value is reported at the key, not wherever the parser went next.
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "admin:\n  address:\nlogging: {}\n"),
              ElementsAre("test.yaml:8:3: expected a string, got nothing"));
  EXPECT_THAT(errorsOf("listeners: []\n"),
              ElementsAre("test.yaml:1:12: at least one listener is required"));
  std::string many = "listeners:\n";
  for (int i = 0; i < 1025; ++i) {
    many += "  - {name: l" + std::to_string(i) + ", address: 127.0.0.1:" + std::to_string(20000 + i) + "}\n";
  }
  EXPECT_THAT(errorsOf(many + "upstreams: []\nroutes: []\n"),
              Contains("test.yaml:2:3: at most 1024 listeners are supported, got 1025"));
  EXPECT_THAT(errorsOf("upstreams: []\n"),
              ElementsAre("test.yaml:1:1: missing required key 'listeners' in the "
                          "configuration"));
}

TEST(ConfigLoaderTest, RouteMatchIsNormalised) {
  auto c = loadOk(std::string(kMinimal) +
                  "routes:\n"
                  "  - name: r\n"
                  "    match:\n"
                  "      host: API.Example.com\n"
                  "      path_regex: '/v[0-9]+/.*'\n"
                  "      methods: [get, Post]\n"
                  "      headers: {X-Tenant: Acme}\n"
                  "    upstream: api\n"
                  "    timeout: 3s\n"
                  "    websocket: true\n");
  ASSERT_TRUE(c);
  const RouteConfig& r = c->routes[0];
  EXPECT_EQ(r.match.host, "api.example.com");
  EXPECT_THAT(r.match.methods, ElementsAre("GET", "POST"));
  EXPECT_THAT(r.match.headers,
              ElementsAre(std::pair<std::string, std::string>("x-tenant", "Acme")));
  EXPECT_EQ(r.timeout, Millis(3000));
  EXPECT_TRUE(r.websocket);
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "routes:\n"
                       "  - name: r\n"
                       "    match: {path_regex: '/(a', methods: ['GE T'], path: x}\n"
                       "    upstream: api\n"
                       "    strip_prefix: /y\n"),
              ElementsAre("test.yaml:9:12: use only one of path, path_prefix, path_regex",
                          "test.yaml:9:25: bad path_regex '/(a': missing ): /(a",
                          "test.yaml:9:42: 'GE T' is not a valid method",
                          "test.yaml:9:57: a path must start with '/' and contain no spaces, "
                          "'?' or '#'"));
}

TEST(ConfigLoaderTest, FilterReferencesAreChecked) {
  std::string head = std::string(kMinimal) +
                     "routes:\n  - name: r\n    match: {path: /}\n"
                     "    upstream: api\n    filters:\n";
  EXPECT_THAT(errorsOf(head + "      jwt: {provider: main}\n"
                              "      api_key: {set: partners}\n"
                              "      rate_limit: {limits: [{key: 'claim:sub', requests: 1, "
                              "per: 1s, shared: s}]}\n"),
              ElementsAre("test.yaml:8:11: route 'r' has both jwt and api_key; set one of them "
                          "to off",
                          "test.yaml:12:23: unknown jwt provider 'main'",
                          "test.yaml:13:22: unknown api key set 'partners'"));
  // A misspelt filter name is reported alone: the checks across filters would only add
  // confusing follow-ups ("claim:sub needs the jwt filter").
  EXPECT_THAT(errorsOf(head + "      jwtt: {provider: main}\n"
                              "      rate_limit: {limits: [{key: 'claim:sub', requests: 1, "
                              "per: 1s}]}\n"),
              ElementsAre("test.yaml:12:7: unknown filter 'jwtt' (did you mean 'jwt'?)"));
  EXPECT_THAT(errorsOf(head + "      rate_limit: {limits: [{key: 'claim:sub', requests: 1, "
                              "per: 1s}]}\n"),
              ElementsAre("test.yaml:12:29: rate limit keyed by 'claim:sub' on route 'r' needs "
                          "the jwt filter there"));
}

TEST(ConfigLoaderTest, SharedLimitsMustAgree) {
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "default_filters:\n"
                       "  rate_limit: {limits: [{key: client_ip, requests: 5, per: 1s, "
                       "shared: pool}]}\n"
                       "routes:\n"
                       "  - name: r\n"
                       "    match: {path: /}\n"
                       "    upstream: api\n"
                       "    filters:\n"
                       "      rate_limit: {limits: [{key: client_ip, requests: 6, per: 1s, "
                       "shared: pool}]}\n"),
              ElementsAre("test.yaml:14:29: shared limit 'pool' must have the same key, "
                          "requests, per and burst everywhere (first defined at line 8)"));
}

TEST(ConfigLoaderTest, ApiKeysFileLinesAreChecked) {
  ScratchDir dir;
  dir.write("keys.txt", std::string(test_util::kApiKeys) + "bad-line\nx 123\n");
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "api_keys:\n  - {name: p, keys_file: keys.txt}\n"),
              ElementsAre("test.yaml:8:26: keys file 'keys.txt' line 5: expected NAME SHA256HEX",
                          "test.yaml:8:26: keys file 'keys.txt' line 6: expected 64 hex digits "
                          "(a SHA-256) after the name, got 3 characters"));
}

TEST(ConfigLoaderTest, JwtProviderChecks) {
  ScratchDir dir;
  dir.write("jwks.json", test_util::kJwks);
  dir.write("bad.json", "{\"keys\": 1}");
  std::string head = std::string(kMinimal) + "jwt_providers:\n";
  auto c = loadOk(head +
                  "  - {name: a, jwks_uri: 'https://idp/jwks', jwks_refresh: 1m}\n"
                  "  - {name: b, jwks_file: jwks.json, algorithms: [HS256]}\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->jwt_providers[0].algorithms.size(), 10u);  // public-key algorithms only
  EXPECT_EQ(c->jwt_providers[0].jwks_refresh, Millis(60000));
  EXPECT_THAT(errorsOf(head + "  - {name: a, jwks_file: bad.json, algorithms: [none, RS1]}\n"),
              ElementsAre("test.yaml:8:26: JWKS file 'bad.json': expected a JSON object with a "
                          "\"keys\" array",
                          "test.yaml:8:49: algorithm 'none' is never accepted",
                          StartsWith("test.yaml:8:55: unknown JWT algorithm 'RS1'")));
  EXPECT_THAT(errorsOf(head + "  - {name: a}\n"),
              ElementsAre("test.yaml:8:5: a jwt provider needs exactly one of jwks_file, "
                          "jwks_uri"));
}

TEST(ConfigLoaderTest, UpstreamAndStoreSections) {
  auto c = loadOk(std::string(kMinimal) +
                  "    load_balancing: least_request\n"
                  "    retries: {attempts: 3}\n"
                  "rate_limit_store:\n"
                  "  type: redis\n"
                  "  redis: {address: 'localhost:6379', on_error: local, replicas: 3}\n"
                  "trusted_proxies: [10.0.0.0/8, '::1']\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->upstreams[0].load_balancing, LoadBalancing::LeastRequest);
  // conditions left out take reference.yaml's defaults
  EXPECT_EQ(c->upstreams[0].retries.attempts, 3u);
  EXPECT_TRUE(c->upstreams[0].retries.on_connect_failure);
  EXPECT_THAT(c->upstreams[0].retries.on_statuses, ElementsAre(502, 503));
  auto defaults = loadOk(std::string(kMinimal) + "    retries: {}\n");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->upstreams[0].retries.attempts, 2u);
  EXPECT_THAT(defaults->upstreams[0].retries.on_statuses, ElementsAre(502, 503));
  auto none = loadOk(kMinimal);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->upstreams[0].retries.attempts, 0u);  // no block, no retries
  EXPECT_EQ(c->rate_limit_store.redis.on_error, RedisOnError::Local);
  EXPECT_EQ(c->rate_limit_store.redis.replicas, 3u);
  EXPECT_EQ(c->trusted_proxies.size(), 2u);
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "    load_balancing: random\n"
                       "    retries: {on: [200, reset]}\n"
                       "rate_limit_store: {type: redis, redis: {on_error: retry}}\n"),
              ElementsAre("test.yaml:7:21: 'random' is not one of: round_robin, least_request",
                          "test.yaml:8:20: retries.on takes connect_failure or HTTP statuses "
                          "400-599, got '200'",
                          "test.yaml:8:25: retries.on takes connect_failure or HTTP statuses "
                          "400-599, got 'reset'",
                          "test.yaml:9:51: 'retry' is not one of: allow, deny, local"));
}

// Issue 20: YAML aliases that multiply a small file, values that forge lines of
// `--check`, port 0 refused for admin.

// `copies` uses of an anchored list of `items` scalars.
std::string aliasedList(size_t items, size_t copies) {
  std::string yaml = std::string(kMinimal) + "trusted_proxies: &cidrs [";
  for (size_t i = 0; i < items; ++i) {
    yaml += (i ? ", 10.0.0." : "10.0.0.") + std::to_string(i % 256);
  }
  yaml += "]\nroutes:\n";
  for (size_t i = 0; i < copies; ++i) {
    yaml += "  - {name: r" + std::to_string(i) +
            ", match: {path_prefix: /}, upstream: api, filters: {ip_access: {allow: *cidrs}}}\n";
  }
  return yaml;
}

TEST(ConfigExpansionTest, AliasesMayNotExpandPastTheNodeLimit) {
  // 1,000 CIDRs in 900 routes: 900,000 nodes, within the limit (and loads).
  LoadResult within = loadConfigString(aliasedList(1000, 900), "test.yaml");
  EXPECT_THAT(within.errors, IsEmpty());
  // 10,000 CIDRs in 1,000 routes: 10 million. Refused before any section is parsed (no
  // error about a route), at the top-level key where the limit was passed.
  EXPECT_THAT(errorsOf(aliasedList(10000, 1000)),
              ElementsAre("test.yaml:8:1: more than 1000000 YAML nodes once aliases are "
                          "expanded (the limit of a configuration; each use of an *alias "
                          "counts all the nodes of its &anchor again)"));
}

TEST(ConfigExpansionTest, AnAliasInsideItsOwnAnchorIsRefused) {
  // yaml-cpp resolves it to the node being defined: a cycle.
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "trusted_proxies: &loop [10.0.0.1, *loop]\n"),
              ElementsAre(HasSubstr("test.yaml:7:1: nested more than 1000 levels deep once "
                                    "aliases are expanded")));
}

TEST(ConfigValuesInMessagesTest, AnEnvironmentValueCannotAddALine) {
  setenv("GW_HARDEN_ADDRESS", "x\nconfiguration OK\x1b[2J", 1);
  auto errors = errorsOf(
      "listeners: [{name: http, address: '${GW_HARDEN_ADDRESS}'}]\n"
      "upstreams: [{name: api, endpoints: [127.0.0.1:9000]}]\n");
  unsetenv("GW_HARDEN_ADDRESS");
  EXPECT_THAT(errors, ElementsAre("test.yaml:1:35: bad address 'x\\nconfiguration "
                                  "OK\\x1b[2J' (expected host:port)"));
  // A key is a value too (YAML escapes in a double-quoted key).
  EXPECT_THAT(errorsOf(std::string(kMinimal) + "\"a\\nb\\0c\": 1\n"),
              Contains(HasSubstr("unknown key 'a\\nb\\x00c' in the configuration")));
}

TEST(PortZeroTest, PortZeroNeverCollides) {
  const std::string rest = "upstreams: [{name: api, endpoints: [127.0.0.1:9000]}]\n";
  EXPECT_THAT(errorsOf("listeners: [{name: h, address: 127.0.0.1:0}]\n"
                       "admin: {address: 127.0.0.1:0}\n" + rest),
              IsEmpty());
  EXPECT_THAT(errorsOf("listeners: [{name: a, address: 127.0.0.1:0}, "
                       "{name: b, address: 127.0.0.1:0}]\n" + rest),
              IsEmpty());
  // A fixed port is still one socket.
  EXPECT_THAT(errorsOf("listeners: [{name: h, address: 127.0.0.1:8080}]\n"
                       "admin: {address: 127.0.0.1:8080}\n" + rest),
              ElementsAre("test.yaml:2:18: admin address is also the address of listener 'h'"));
  EXPECT_THAT(errorsOf("listeners: [{name: a, address: 127.0.0.1:8080}, "
                       "{name: b, address: '127.0.0.1:8080'}]\n" + rest),
              Not(IsEmpty()));
}

TEST(ConfigLoaderTest, RedisClusterAndSentinel) {
  auto cluster = loadOk(std::string(kMinimal) +
                        "rate_limit_store:\n"
                        "  type: redis\n"
                        "  redis: {cluster: ['127.0.0.1:7000', '127.0.0.1:7001'], "
                        "username: gw, password: pw}\n");
  ASSERT_TRUE(cluster);
  EXPECT_EQ(cluster->rate_limit_store.redis.mode, RedisMode::Cluster);
  EXPECT_THAT(cluster->rate_limit_store.redis.cluster, ElementsAre("127.0.0.1:7000",
                                                                   "127.0.0.1:7001"));
  auto sentinel = loadOk(std::string(kMinimal) +
                         "rate_limit_store:\n"
                         "  type: redis\n"
                         "  redis:\n"
                         "    sentinel: {master: gw, addresses: ['127.0.0.1:26379']}\n");
  ASSERT_TRUE(sentinel);
  EXPECT_EQ(sentinel->rate_limit_store.redis.mode, RedisMode::Sentinel);
  EXPECT_EQ(sentinel->rate_limit_store.redis.sentinel_master, "gw");
  EXPECT_THAT(sentinel->rate_limit_store.redis.sentinels, ElementsAre("127.0.0.1:26379"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "rate_limit_store:\n"
                       "  type: redis\n"
                       "  redis:\n"
                       "    address: 127.0.0.1:6379\n"
                       "    sentinel: {master: gw, addresses: ['127.0.0.1:26379']}\n"),
              ElementsAre("test.yaml:11:5: redis takes exactly one of address, cluster and "
                          "sentinel (address is already given)"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "rate_limit_store:\n"
                       "  type: redis\n"
                       "  redis: {cluster: [], db: 1}\n"),
              ElementsAre("test.yaml:9:20: expected at least one host:port",
                          "test.yaml:9:28: a Redis Cluster has only database 0"));
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "rate_limit_store:\n"
                       "  type: redis\n"
                       "  redis: {cluster: ['unix:/tmp/r.sock'], sentinel: {master: gw}}\n"),
              ElementsAre(StartsWith("test.yaml:9:42: redis takes exactly one of")));
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "rate_limit_store:\n"
                       "  type: redis\n"
                       "  redis: {sentinel: {master: gw}}\n"),
              ElementsAre(StartsWith("test.yaml:9:21: ")));
  EXPECT_THAT(errorsOf(std::string(kMinimal) +
                       "rate_limit_store:\n"
                       "  type: redis\n"
                       "  redis: {cluster: ['unix:/tmp/r.sock']}\n"),
              ElementsAre("test.yaml:9:21: expected host:port, got 'unix:/tmp/r.sock'"));
}

}  // namespace
}  // namespace gw
