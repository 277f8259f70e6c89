// What authentication costs per request: a JWT signature check per algorithm, the same
// token answered from the per-worker cache, the whole jwt filter on a hit and on a miss,
// and an API-key lookup. Results: docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include "filters/api_key/api_key_filter.h"
#include "filters/jwt/jwt_filter.h"
#include "filters/jwt/token_cache.h"
#include "tests/filters/auth/fake_request.h"
#include "tests/filters/jwt/jwt_test_util.h"

namespace gw::jwt {
namespace {

using test_util::testKey;

constexpr uint64_t kNowMs = 1700000000000ull;

nlohmann::json claims(int user = 1) {
  return {{"iss", "https://issuer.example"},
          {"aud", "api"},
          {"sub", "user-" + std::to_string(user)},
          {"exp", 1700000000 + 3600},
          {"iat", 1700000000 - 10},
          {"scope", "read write"},
          {"roles", {"admin", "ops"}}};
}

const KeySet& allKeys() {
  static std::shared_ptr<const KeySet> keys = [] {
    std::string doc = R"({"keys":[)";
    for (Algorithm a : test_util::kAllAlgorithms) {
      doc += (a == Algorithm::RS256 ? "" : ",") + testKey(a).jwk().dump();
    }
    return parseJwks(doc + "]}").keys;
  }();
  return *keys;
}

VerifyPolicy policy() {
  VerifyPolicy p;
  p.issuer = "https://issuer.example";
  p.audiences = {"api"};
  for (Algorithm a : test_util::kAllAlgorithms) p.algorithms |= algorithmBit(a);
  p.leeway_ms = 30000;
  return p;
}

// Signature check and claims, no cache: the cost of a token seen for the first time.
void BM_Verify(benchmark::State& state) {
  Algorithm alg = static_cast<Algorithm>(state.range(0));
  std::string token = testKey(alg).sign(claims());
  const KeySet& keys = allKeys();
  VerifyPolicy p = policy();
  for (auto _ : state) {
    VerifyResult r = verifyToken(token, keys, p, kNowMs);
    if (!r.identity) state.SkipWithError("token refused");
    benchmark::DoNotOptimize(r);
  }
  state.SetLabel(std::string(algorithmName(alg)) + ", " + std::to_string(token.size()) + " B");
}

// The same token again: one hash of the token text and one comparison.
void BM_CacheHit(benchmark::State& state) {
  Algorithm alg = static_cast<Algorithm>(state.range(0));
  std::string token = testKey(alg).sign(claims());
  TokenCache cache;
  cache.insert(token, 1, kNowMs, verifyToken(token, allKeys(), policy(), kNowMs).identity);
  for (auto _ : state) benchmark::DoNotOptimize(cache.find(token, 1, kNowMs));
  state.SetLabel(std::string(algorithmName(alg)) + ", " + std::to_string(token.size()) + " B");
}

void algorithms(benchmark::internal::Benchmark* b) {
  for (Algorithm a : test_util::kAllAlgorithms) b->Arg(static_cast<int>(a));
}

BENCHMARK(BM_Verify)->Apply(algorithms);
BENCHMARK(BM_CacheHit)->Apply(algorithms);

// The jwt filter's request phase as the proxy runs it: bearer parsing, the per-worker
// state, the cache (hit: 1,000 users reusing tokens, all cached; miss: every token new),
// require_claims, forward_claims into the header list.
class FilterBench {
 public:
  explicit FilterBench(Algorithm alg, size_t users) {
    JwtProviderConfig p;
    p.name = "bench-" + std::string(algorithmName(alg)) + "-" + std::to_string(users);
    p.issuer = "https://issuer.example";
    p.audiences = {"api"};
    p.algorithms = {std::string(algorithmName(alg))};
    p.forward_claims = {{"sub", "X-User-Id"}};
    p.jwks_file = "bench.json";
    p.jwks_file_content = test_util::jwksOf({&testKey(alg)});
    auto config = std::make_shared<const JwtConfig>(
        p.name, SourceLocation{}, std::vector<JwtConfig::ClaimRequirement>{{"roles", {"ops"}}},
        std::vector<std::string>{"read"});
    filter_ = std::make_shared<JwtFilter>(
        config, std::make_shared<const Provider>(p, acquireKeyStore(p)), "bench");
    for (size_t i = 0; i < users; ++i)
      tokens_.push_back("Bearer " + testKey(alg).sign(claims(int(i))));
  }

  bool run(size_t i) {
    test_util::FakeRequest r(worker_, kNowMs);
    r.headers.addRef("Host", "api.example");
    r.headers.addRef("Authorization", tokens_[i % tokens_.size()]);
    r.headers.addRef("Accept", "*/*");
    return filter_->onRequestHeaders(r.ctx, r.headers) == FilterStatus::Continue;
  }

 private:
  test_util::FakeWorker worker_;
  std::shared_ptr<JwtFilter> filter_;
  std::vector<std::string> tokens_;
};

void BM_FilterCached(benchmark::State& state) {
  Algorithm alg = static_cast<Algorithm>(state.range(0));
  FilterBench bench(alg, 1000);
  for (size_t i = 0; i < 1000; ++i) bench.run(i);  // warm: every user seen once
  size_t i = 0;
  for (auto _ : state) {
    if (!bench.run(i++)) state.SkipWithError("refused");
  }
  state.SetLabel(std::string(algorithmName(alg)) + ", 1000 users");
}

void BM_FilterUncached(benchmark::State& state) {
  Algorithm alg = static_cast<Algorithm>(state.range(0));
  // More distinct tokens than the cache holds, used round-robin: every one is a miss.
  FilterBench bench(alg, TokenCache::kDefaultCapacity + 1);
  size_t i = 0;
  for (auto _ : state) {
    if (!bench.run(i++)) state.SkipWithError("refused");
  }
  state.SetLabel(std::string(algorithmName(alg)) + ", every token new");
}

BENCHMARK(BM_FilterCached)
    ->Arg(int(Algorithm::ES256))
    ->Arg(int(Algorithm::RS256))
    ->Arg(int(Algorithm::EdDSA))
    ->Arg(int(Algorithm::HS256));
BENCHMARK(BM_FilterUncached)
    ->Arg(int(Algorithm::ES256))
    ->Arg(int(Algorithm::RS256))
    ->Arg(int(Algorithm::EdDSA))
    ->Arg(int(Algorithm::HS256));

// api_key: SHA-256 of the header value, then a lookup among 10,000 consumers.
void BM_ApiKey(benchmark::State& state) {
  std::vector<ApiKeyEntry> entries;
  for (int i = 0; i < 10000; ++i) {
    entries.push_back({"consumer-" + std::to_string(i),
                       api_key::sha256("key-" + std::to_string(i) + "-0123456789abcdef")});
  }
  auto config = std::make_shared<const api_key::ApiKeyConfig>("bench", SourceLocation{});
  api_key::ApiKeyFilter filter(config, "X-API-Key",
                               std::make_shared<const api_key::KeyTable>(entries), "bench");
  test_util::FakeWorker worker;
  std::string key = "key-4242-0123456789abcdef";
  for (auto _ : state) {
    test_util::FakeRequest r(worker, kNowMs);
    r.headers.addRef("X-API-Key", key);
    if (filter.onRequestHeaders(r.ctx, r.headers) != FilterStatus::Continue) {
      state.SkipWithError("refused");
    }
  }
}
BENCHMARK(BM_ApiKey);

}  // namespace
}  // namespace gw::jwt
