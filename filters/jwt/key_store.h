// The keys of each jwt provider, process-wide, and how they stay current.
//
// Contract:
// - A KeyStore holds one provider's current KeySet as an immutable snapshot. Readers on the
//   request path compare version() (one atomic load) with the version they cached and take
//   the mutex only when it changed; the fetcher publishes a new snapshot under the mutex
//   and then bumps the version. Versions are unique process-wide, 0 = never loaded.
// - Stores are kept by provider name across configuration reloads: acquireKeyStore() hands
//   back the live store when the provider's key source (jwks_uri, or the jwks_file's
//   content) is unchanged, so a reload neither refetches nor loses keys; a changed source
//   gets a new store, while requests of the old configuration keep the old one.
// - A jwks_uri store is fetched by the JwksFetcher thread (jwks_fetcher.h) at once, every
//   jwks_refresh, after failures with backoff, and on request (an unknown kid) at most once
//   per kKidRefreshIntervalMs. A failed fetch keeps the last good key set.
// - Every method is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "filters/jwt/http_fetch.h"
#include "filters/jwt/jwk.h"
#include "gateway/config/config.h"

namespace gw::jwt {

inline constexpr uint64_t kKidRefreshIntervalMs = 10000;

enum class JwksState {
  Ok,           // a key set is loaded and the last fetch (if any) succeeded
  Stale,        // a key set is loaded but the last fetch failed: it is still used
  NeverLoaded,  // no key set yet: the provider's routes answer 503
  Unused,       // no route refers to the provider: its keys are not loaded
};
std::string_view jwksStateName(JwksState state);  // "ok", "stale", "never_loaded", "unused"

// For /health's "jwks:NAME" check. Suggested check status: Ok and Unused → healthy,
// Stale → degraded, NeverLoaded → unhealthy (and not ready).
struct JwksStatus {
  std::string provider;
  JwksState state = JwksState::NeverLoaded;
  std::string source;            // the jwks_uri or jwks_file
  size_t keys = 0;               // usable keys in the current set
  uint64_t loaded_at_ms = 0;     // wall clock when the current set was loaded; 0 = never
  uint64_t last_attempt_ms = 0;  // last fetch attempt (jwks_uri only)
  std::string last_error;        // of the last attempt, empty when it succeeded
};

class JwksFetcher;

class KeyStore {
 public:
  // Use acquireKeyStore().
  KeyStore(const JwtProviderConfig& provider, std::shared_ptr<JwksFetcher> fetcher);
  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  uint64_t id() const { return id_; }
  const std::string& provider() const { return provider_; }
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // The current key set and its version; null (version 0) before the first load.
  std::shared_ptr<const KeySet> snapshot(uint64_t* version) const;

  // An unknown kid was seen at now_ms (wall clock). Returns the number of the fetch that
  // will answer it (wait until completedFetches() reaches it), or 0 when there will be none
  // (a jwks_file provider, or another kid refetch less than kKidRefreshIntervalMs ago that
  // has already completed).
  uint64_t requestRefresh(uint64_t now_ms);
  uint64_t completedFetches() const { return completed_.load(std::memory_order_acquire); }

  JwksStatus status() const;

  // --- the fetcher's side ---
  bool hasUri() const { return !uri_.empty(); }
  const std::string& uri() const { return uri_; }
  uint64_t refreshMs() const { return refresh_ms_.load(std::memory_order_relaxed); }
  void setRefreshMs(uint64_t ms) { refresh_ms_.store(ms, std::memory_order_relaxed); }
  // Numbers the attempt (for requestRefresh()'s waiters).
  uint64_t fetchStarted(uint64_t now_ms);
  // Takes the body of a successful fetch, or records the failure; wakes waiters either way.
  // Returns whether a key set was loaded (new or unchanged).
  bool fetchCompleted(const HttpResult& result, uint64_t now_ms);
  // A jwks_file's content: the same content as this store's (for reuse across reloads).
  bool sameFileContent(const std::string& content) const { return file_content_ == content; }

 private:
  // Installs `keys` parsed from `text` unless `text` is what is loaded already.
  void publish(std::shared_ptr<const KeySet> keys, const std::string& text, uint64_t now_ms);

  const uint64_t id_;
  const std::string provider_;
  const std::string uri_;
  const std::string file_;
  const std::string file_content_;
  std::shared_ptr<JwksFetcher> fetcher_;
  std::atomic<uint64_t> refresh_ms_;
  std::atomic<uint64_t> version_{0};
  std::atomic<uint64_t> completed_{0};

  mutable std::mutex mutex_;
  std::shared_ptr<const KeySet> keys_;
  std::string loaded_text_;
  uint64_t loaded_at_ms_ = 0;
  uint64_t started_ = 0;
  uint64_t last_attempt_ms_ = 0;
  std::string last_error_;
  bool kid_refreshed_ = false;
  uint64_t last_kid_refresh_ms_ = 0;
  uint64_t kid_target_ = 0;
};

// The store for `provider` (see the contract above). Called while building filters, i.e.
// at configuration load, never on the request path.
std::shared_ptr<KeyStore> acquireKeyStore(const JwtProviderConfig& provider);

// One status per provider of `config`, in its order.
std::vector<JwksStatus> jwksStatus(const Config& config);

}  // namespace gw::jwt
