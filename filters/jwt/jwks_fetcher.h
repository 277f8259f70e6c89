// The thread that keeps jwks_uri key sets current: one libuv loop of its own running every
// fetch (resolve, connect, GET) without blocking anything else, started when the first
// jwks_uri store appears and stopped at process exit.
//
// Why one thread rather than a fetch per worker: a key set is process-wide, so N workers
// fetching it would multiply the load on the identity provider by N and could briefly
// disagree on the keys; and the fetcher must run before any request arrives (the 503 window
// after start), when workers have no reason to touch filter state yet.
//
// Contract: add/remove/refreshNow may be called from any thread; they queue a command and
// wake the loop. Jobs hold weak references: a store that goes away stops its fetches.
#pragma once

#include <cstdint>
#include <memory>

namespace gw::jwt {

class KeyStore;

class JwksFetcher {
 public:
  // The process's fetcher, started on first use.
  static std::shared_ptr<JwksFetcher> instance();
  // Stops the background thread (idempotent); run by the process's shutdown hooks.
  static void stopFetcher();

  virtual ~JwksFetcher() = default;
  // Fetches at once, then every refresh interval.
  virtual void add(const std::shared_ptr<KeyStore>& store) = 0;
  virtual void remove(uint64_t store_id) = 0;
  // Fetches as soon as possible unless attempt number `target` has started already (an
  // attempt started after the request was made answers it too).
  virtual void refreshNow(uint64_t store_id, uint64_t target) = 0;
};

}  // namespace gw::jwt
