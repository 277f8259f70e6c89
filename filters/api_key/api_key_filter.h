// api_key (SPEC §2, filter 6): the request's key header (the set's `header`, default
// X-API-Key) must hold a key of the route's api_keys set, or the answer is 401. The key's
// NAME becomes ctx.user (the access log's `user`, the `api_key` rate-limit key), the
// identity's `sub`, and the upstream's X-Consumer header (an incoming one is removed).
//
// Keys are matched by SHA-256: the keys file holds digests, never keys. The table is built
// once per configuration load, so a reload (SIGHUP) swaps the keys with the rest.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "filters/api_key/api_key_config.h"
#include "filters/auth/auth_failures.h"
#include "gateway/config/config.h"
#include "gateway/filter.h"

namespace gw::api_key {

using Digest = std::array<uint8_t, 32>;

// The SHA-256 of `key`.
Digest sha256(std::string_view key);

// A set's keys, by digest.
class KeyTable {
 public:
  explicit KeyTable(const std::vector<ApiKeyEntry>& entries);

  struct Consumer {
    std::string name;
    std::shared_ptr<const Identity> identity;
  };
  // The consumer whose key hashes to `digest`, or null.
  const Consumer* find(const Digest& digest) const;
  size_t size() const { return consumers_.size(); }

 private:
  struct DigestHash {
    size_t operator()(const Digest& d) const;
  };
  struct DigestEqual {
    bool operator()(const Digest& a, const Digest& b) const;
  };
  std::vector<Consumer> consumers_;
  std::unordered_map<Digest, size_t, DigestHash, DigestEqual> index_;
};

class ApiKeyFilter final : public Filter {
 public:
  ApiKeyFilter(std::shared_ptr<const ApiKeyConfig> config, std::string header,
               std::shared_ptr<const KeyTable> keys, std::string_view route);

  FilterOrder order() const override { return FilterOrder::Auth; }
  std::string_view name() const override { return "api_key"; }
  FilterStatus onRequestHeaders(RequestContext& ctx, HeaderList& headers) const override;

 private:
  std::shared_ptr<const ApiKeyConfig> config_;
  std::string header_;
  std::string challenge_;  // WWW-Authenticate of the 401
  std::shared_ptr<const KeyTable> keys_;
  auth::AuthFailureCounter failures_;
};

// The registry's `build`.
void buildApiKeyFilter(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                       const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain);

}  // namespace gw::api_key
