#include "filters/jwt/key_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "gateway/admin/health.h"
#include "tests/filters/jwt/jwt_test_util.h"
#include "tests/filters/jwt/test_http_server.h"

namespace gw::jwt {
namespace {

using test_util::testKey;
using testing::HasSubstr;

JwtProviderConfig fileProvider(const std::string& name, const std::string& jwks) {
  JwtProviderConfig p;
  p.name = name;
  p.jwks_file = name + ".json";
  p.jwks_file_content = jwks;
  p.algorithms = {"ES256", "EdDSA"};
  return p;
}

JwtProviderConfig uriProvider(const std::string& name, const std::string& uri) {
  JwtProviderConfig p;
  p.name = name;
  p.jwks_uri = uri;
  p.jwks_refresh = Millis(3600000);
  p.algorithms = {"ES256", "EdDSA"};
  return p;
}

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::vector<std::string> kids(const KeyStore& store) {
  std::vector<std::string> out;
  if (auto keys = store.snapshot(nullptr)) {
    for (const auto& k : keys->keys()) out.push_back(k.kid());
  }
  return out;
}

TEST(KeyStoreTest, FileStoresAreKeptWhileTheirContentIsTheSame) {
  std::string one = test_util::jwksOf({&testKey(Algorithm::ES256)});
  std::string two = test_util::jwksOf({&testKey(Algorithm::EdDSA)});
  auto a = acquireKeyStore(fileProvider("file-a", one));
  EXPECT_NE(a->version(), 0u);
  EXPECT_EQ(a->status().state, JwksState::Ok);
  EXPECT_EQ(a->status().keys, 1u);
  auto again = acquireKeyStore(fileProvider("file-a", one));
  EXPECT_EQ(again, a);  // a reload with the same file: same keys, same version
  auto changed = acquireKeyStore(fileProvider("file-a", two));
  EXPECT_NE(changed, a);
  EXPECT_NE(changed->version(), a->version());
  EXPECT_THAT(kids(*a), testing::ElementsAre("kid-ES256"));  // the old config keeps its keys
  EXPECT_THAT(kids(*changed), testing::ElementsAre("kid-EdDSA"));
  EXPECT_EQ(changed->requestRefresh(1), 0u);  // nothing to refetch from a file
}

TEST(KeyStoreTest, UnusableFileNeverLoads) {
  auto s = acquireKeyStore(fileProvider("file-bad", R"({"keys":[{"kty":"PQC"}]})"));
  EXPECT_EQ(s->version(), 0u);
  EXPECT_EQ(s->snapshot(nullptr), nullptr);
  EXPECT_EQ(s->status().state, JwksState::NeverLoaded);
  EXPECT_THAT(s->status().last_error, HasSubstr("no usable signature key"));
}

TEST(KeyStoreTest, UriStoreLoadsRotatesAndKeepsTheLastGoodSet) {
  test_util::TestHttpServer server;
  server.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256)}));
  auto store = acquireKeyStore(uriProvider("uri-rotate", server.url()));
  ASSERT_TRUE(eventually([&] { return store->version() != 0; }));
  EXPECT_THAT(kids(*store), testing::ElementsAre("kid-ES256"));
  JwksStatus s = store->status();
  EXPECT_EQ(s.state, JwksState::Ok);
  EXPECT_EQ(s.source, server.url());
  EXPECT_EQ(server.requests(), 1);

  // A reload with the same uri keeps the store (no refetch, no 503 window).
  EXPECT_EQ(acquireKeyStore(uriProvider("uri-rotate", server.url())), store);

  // Rotation: an unknown kid asks for a refetch, answered by the next attempt.
  test_util::TestKey next(Algorithm::ES256, "rotated");
  server.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256), &next}));
  uint64_t v1 = store->version();
  uint64_t t0 = 1700000000000ull;
  uint64_t target = store->requestRefresh(t0);
  ASSERT_NE(target, 0u);
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= target; }));
  EXPECT_NE(store->version(), v1);
  EXPECT_THAT(kids(*store), testing::ElementsAre("kid-ES256", "rotated"));
  // At most one kid refetch per 10 s.
  EXPECT_EQ(store->requestRefresh(t0 + 9999), 0u);
  EXPECT_EQ(server.requests(), 2);

  // A failing fetch keeps the keys and reports them stale.
  server.respond(500, "oops");
  uint64_t v2 = store->version();
  target = store->requestRefresh(t0 + 10000);
  ASSERT_NE(target, 0u);
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= target; }));
  EXPECT_EQ(store->version(), v2);
  EXPECT_THAT(kids(*store), testing::ElementsAre("kid-ES256", "rotated"));
  s = store->status();
  EXPECT_EQ(s.state, JwksState::Stale);
  EXPECT_EQ(s.last_error, "HTTP status 500");

  // The same document again: no new version, so workers' caches stay warm.
  server.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256), &next}));
  target = store->requestRefresh(t0 + 20000);
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= target; }));
  EXPECT_EQ(store->version(), v2);
  EXPECT_EQ(store->status().state, JwksState::Ok);
}

TEST(KeyStoreTest, UnreachableUriNeverLoadsAndRetries) {
  int port;
  {
    test_util::TestHttpServer gone;
    port = gone.port();
  }
  auto store = acquireKeyStore(
      uriProvider("uri-down", "http://127.0.0.1:" + std::to_string(port) + "/jwks"));
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= 1; }));
  JwksStatus s = store->status();
  EXPECT_EQ(s.state, JwksState::NeverLoaded);
  EXPECT_THAT(s.last_error, HasSubstr("cannot connect"));
  EXPECT_NE(s.last_attempt_ms, 0u);
  // Retried after about a second, not after jwks_refresh (an hour).
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= 2; }, std::chrono::seconds(5)));
}

TEST(KeyStoreTest, ANewUriIsANewStore) {
  test_util::TestHttpServer one, two;
  one.respond(200, test_util::jwksOf({&testKey(Algorithm::ES256)}));
  two.respond(200, test_util::jwksOf({&testKey(Algorithm::EdDSA)}));
  auto a = acquireKeyStore(uriProvider("uri-move", one.url()));
  auto b = acquireKeyStore(uriProvider("uri-move", two.url()));
  EXPECT_NE(a, b);
  ASSERT_TRUE(eventually([&] { return a->version() && b->version(); }));
  EXPECT_THAT(kids(*b), testing::ElementsAre("kid-EdDSA"));
}

TEST(KeyStoreTest, HttpsFetchFailureIsReported) {
  auto store = acquireKeyStore(uriProvider("uri-https", "https://127.0.0.1:1/jwks"));
  ASSERT_TRUE(eventually([&] { return store->completedFetches() >= 1; }));
  EXPECT_THAT(store->status().last_error, HasSubstr("cannot connect"));
  EXPECT_EQ(store->version(), 0u);
}

TEST(KeyStoreTest, StatusForHealth) {
  Config config;
  config.jwt_providers.push_back(
      fileProvider("health-used", test_util::jwksOf({&testKey(Algorithm::ES256)})));
  config.jwt_providers.push_back(fileProvider("health-unused", "{}"));
  auto used = acquireKeyStore(config.jwt_providers[0]);
  std::vector<JwksStatus> all = jwksStatus(config);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].provider, "health-used");
  EXPECT_EQ(all[0].state, JwksState::Ok);
  EXPECT_EQ(all[0].keys, 1u);
  EXPECT_NE(all[0].loaded_at_ms, 0u);
  EXPECT_EQ(all[1].provider, "health-unused");
  EXPECT_EQ(all[1].state, JwksState::Unused);
  EXPECT_EQ(jwksStateName(JwksState::NeverLoaded), "never_loaded");
  EXPECT_EQ(jwksStateName(JwksState::Stale), "stale");
}

TEST(KeyStoreTest, HealthChecksFollowTheProvidersStores) {
  auto find = [](const std::string& key) {
    health::Report report = health::collect();
    return report.checks.contains(key) ? report.checks[key] : nlohmann::json();
  };
  int port;
  {
    test_util::TestHttpServer gone;
    port = gone.port();
  }
  auto down = acquireKeyStore(
      uriProvider("health-down", "http://127.0.0.1:" + std::to_string(port) + "/jwks"));
  ASSERT_TRUE(eventually([&] { return down->completedFetches() >= 1; }));
  nlohmann::json check = find("jwks:health-down");
  EXPECT_EQ(check["status"], "unhealthy");
  EXPECT_EQ(check["state"], "never_loaded");
  EXPECT_THAT(check["last_error"].get<std::string>(), HasSubstr("cannot connect"));
  EXPECT_FALSE(health::collect().ready);  // a provider without keys is not ready
  down.reset();
  EXPECT_TRUE(find("jwks:health-down").is_null());

  auto file =
      acquireKeyStore(fileProvider("health-file", test_util::jwksOf({&testKey(Algorithm::ES256)})));
  check = find("jwks:health-file");
  EXPECT_EQ(check["status"], "healthy");
  EXPECT_EQ(check["state"], "ok");
  EXPECT_EQ(check["keys"], 1);
  // A reload with another file: the check follows the new store, and stays when the old
  // one goes.
  auto next = acquireKeyStore(fileProvider(
      "health-file", test_util::jwksOf({&testKey(Algorithm::ES256), &testKey(Algorithm::EdDSA)})));
  EXPECT_EQ(find("jwks:health-file")["keys"], 2);
  file.reset();
  EXPECT_EQ(find("jwks:health-file")["keys"], 2);
  next.reset();
  EXPECT_TRUE(find("jwks:health-file").is_null());
}

}  // namespace
}  // namespace gw::jwt
