#include "filters/api_key/api_key_filter.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "filters/auth/auth_failures.h"
#include "gateway/log.h"

namespace gw::api_key {
namespace {

struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};

// What rate limits and the log see of a consumer: its name, as `sub` and as `api_key`.
class ConsumerIdentity final : public Identity {
 public:
  explicit ConsumerIdentity(std::string name) : name_(std::move(name)) {}
  std::string_view claim(std::string_view claim) const override {
    return claim == "sub" || claim == "api_key" ? std::string_view(name_) : std::string_view();
  }

 private:
  std::string name_;
};

}  // namespace

Digest sha256(std::string_view key) {
  // Fetched once and one context per thread: no provider lookup or allocation per request.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  Digest out{};
  unsigned int length = 0;
  if (!md || !ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), key.data(), key.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &length) != 1 || length != out.size()) {
    // Cannot happen with the default provider; never match anything if it does.
    log::error("SHA-256 is not available");
    std::abort();
  }
  return out;
}

// Timing: the bucket a digest lands in, and which stored digests are compared with it,
// depend only on the digest of the key the client sent. Whatever that reveals about stored
// digests is worthless without a preimage, and a client cannot steer its own digest toward
// a stored one byte by byte as it could a plain key; the final comparison of all 32 bytes
// is constant-time anyway. So a lookup costs O(1) instead of a scan of every key.
size_t KeyTable::DigestHash::operator()(const Digest& d) const {
  size_t h;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

bool KeyTable::DigestEqual::operator()(const Digest& a, const Digest& b) const {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

KeyTable::KeyTable(const std::vector<ApiKeyEntry>& entries) {
  consumers_.reserve(entries.size());
  index_.reserve(entries.size());
  for (const auto& entry : entries) {
    // The loader refuses a digest listed twice; keep the first should one slip through.
    if (!index_.emplace(entry.sha256, consumers_.size()).second) continue;
    consumers_.push_back({entry.name, std::make_shared<const ConsumerIdentity>(entry.name)});
  }
}

const KeyTable::Consumer* KeyTable::find(const Digest& digest) const {
  auto it = index_.find(digest);
  return it == index_.end() ? nullptr : &consumers_[it->second];
}

ApiKeyFilter::ApiKeyFilter(std::shared_ptr<const ApiKeyConfig> config, std::string header,
                           std::shared_ptr<const KeyTable> keys, std::string_view route)
    : config_(std::move(config)),
      header_(std::move(header)),
      challenge_("ApiKey realm=\"gateway\", header=\"" + header_ + "\""),
      keys_(std::move(keys)),
      failures_(route) {}

FilterStatus ApiKeyFilter::onRequestHeaders(RequestContext& ctx, HeaderList& headers) const {
  headers.remove("x-consumer");
  auto refuse = [&](auth::Reason reason, std::string_view message) {
    failures_.count(reason);
    ctx.response_headers_to_add.addRef("WWW-Authenticate", challenge_);
    ctx.sendLocalReply(401, "UNAUTHORIZED", message);
    return FilterStatus::StopReplied;
  };
  size_t count = headers.count(header_);
  if (count > 1) return refuse(auth::Reason::Malformed, "Exactly one API key is required");
  std::string_view key = headers.get(header_);
  if (key.empty()) return refuse(auth::Reason::Missing, "An API key is required");
  const KeyTable::Consumer* consumer = keys_->find(sha256(key));
  if (!consumer) return refuse(auth::Reason::UnknownKey, "The API key is not valid");
  ctx.user = ctx.arena->copy(consumer->name);
  ctx.identity = consumer->identity;
  headers.addRef("X-Consumer", ctx.user);
  return FilterStatus::Continue;
}

void buildApiKeyFilter(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                       const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain) {
  auto api_key = std::static_pointer_cast<const ApiKeyConfig>(config);
  auto it = std::find_if(whole.api_keys.begin(), whole.api_keys.end(),
                         [&](const ApiKeySetConfig& s) { return s.name == api_key->set(); });
  if (it == whole.api_keys.end()) {
    // The loader refuses unknown sets; a route without its key check would fail open.
    log::error("api_key filter names an unknown key set", {{"set", api_key->set()}});
    std::abort();
  }
  chain.push_back(std::make_shared<ApiKeyFilter>(std::move(api_key), it->header,
                                                 std::make_shared<const KeyTable>(it->keys),
                                                 route ? std::string_view(route->name) : ""));
}

}  // namespace gw::api_key
