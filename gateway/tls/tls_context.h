// TLS contexts built from the configuration: one TlsServerContext per listener with a
// `tls` block, one TlsClientContext per upstream with `tls`.
//
// Contract:
// - build() runs on the configuration thread (at start and on each SIGHUP) and never
//   throws: on failure it returns null and sets *error to "FILE: message"; nothing
//   half-built escapes, so the caller can keep serving with the contexts it has.
// - A built context is immutable and shared by every worker thread through
//   std::shared_ptr<const ...>; creating sessions from it is thread-safe. Its few
//   mutable parts (OpenSSL's session cache, the ticket key ring, the client session
//   store) synchronise internally.
// - Every TlsSession holds a reference to its context, so a context outlives each
//   connection made with it, whatever reloads happen meanwhile.
// - Profile: TLS 1.2 and 1.3 (min_version configurable), Mozilla "intermediate" cipher
//   suites and groups, ALPN http/1.1 only, no renegotiation, no compression, no 0-RTT.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gateway/config/config.h"

struct ssl_ctx_st;
struct ssl_session_st;

namespace gw {

class TlsTicketKeys;  // tls_context.cc: the rotating session ticket keys

// What the YAML does not (yet) expose; the defaults are what production uses.
struct TlsServerOptions {
  // Tickets are sealed with the newest key; the older ones still open them (and the
  // client gets a fresh ticket) until they fall off the ring. Resumed sessions are
  // therefore bounded to rotation x (keys - 1), which is also the session lifetime.
  std::chrono::seconds ticket_key_rotation{3600};
  size_t ticket_keys = 3;
  // OpenSSL's server-side session cache (TLS 1.2 clients that resume by session id).
  long session_cache_size = 20 * 1024;
  // ALPN: offer h2 (preferred) beside http/1.1 (SPEC §7, listeners[].http2).
  bool http2 = false;
};

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class TlsServerContext {
 public:
  // Loads every certificate (leaf first, then its chain, from cert_file) and key, and
  // client_ca when set. `previous`, the same listener's context from the configuration
  // being replaced, lends its ticket keys so that clients keep resuming across a
  // reload (only when client_ca is unchanged: sessions are bound to it).
  static std::shared_ptr<const TlsServerContext> build(const ListenerTls& config,
                                                       std::string* error,
                                                       const TlsServerContext* previous = nullptr,
                                                       const TlsServerOptions& options = {});
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // The context new server sessions start from (certificate 0's); SNI may switch a
  // session to another certificate's during the handshake.
  ssl_ctx_st* defaultContext() const { return contexts_.front(); }
  // Index into ListenerTls::certificates of the certificate that serves `server_name`:
  // the first certificate naming it exactly, else the first with a matching `*.`
  // wildcard (one label), else 0. Case-insensitive; a trailing dot is ignored.
  size_t certificateFor(std::string_view server_name) const;
  bool requiresClientCertificate() const { return client_auth_; }
  // Seals new tickets with a fresh key from now on (the ring also rotates by itself).
  void rotateTicketKeys() const;

 private:
  friend struct TlsContextCallbacks;
  TlsServerContext() = default;
  ssl_ctx_st* contextFor(std::string_view server_name) const {
    return contexts_[identity_of_[certificateFor(server_name)]];
  }

  // One SSL_CTX per distinct set of names: an RSA and an ECDSA certificate for the same
  // names share one, and OpenSSL picks whichever the client supports.
  std::vector<ssl_ctx_st*> contexts_;  // owned
  std::vector<size_t> identity_of_;    // certificate index -> index into contexts_
  std::unordered_map<std::string, size_t, StringViewHash, std::equal_to<>> exact_;
  // "example.com" for "*.example.com" -> certificate index
  std::unordered_map<std::string, size_t, StringViewHash, std::equal_to<>> wildcard_;
  std::shared_ptr<TlsTicketKeys> tickets_;
  std::string session_context_;  // what sessions are bound to (a hash of client_ca)
  bool http2_ = false;
  bool client_auth_ = false;
};

class TlsClientContext {
 public:
  // Trusts `ca` (else the system store), presents cert/key when set, and verifies the
  // upstream's certificate and name unless verify is false.
  static std::shared_ptr<const TlsClientContext> build(const UpstreamTls& config,
                                                       std::string* error);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  ssl_ctx_st* context() const { return ctx_; }
  // The configured sni; empty means "the endpoint's host".
  const std::string& serverName() const { return server_name_; }
  bool verifies() const { return verify_; }

 private:
  friend class TlsSession;
  friend struct TlsContextCallbacks;
  TlsClientContext() = default;
  // The SSL ex_data slot where a client session keeps its endpoint (the store's key).
  static int endpointIndex();
  // Resumption: the newest resumable session per endpoint, for every worker.
  ssl_session_st* findSession(std::string_view endpoint) const;  // a new reference, or null
  void storeSession(std::string_view endpoint, ssl_session_st* session) const;  // adopts it

  ssl_ctx_st* ctx_ = nullptr;  // owned
  std::string server_name_;
  bool verify_ = true;
  mutable std::mutex sessions_mutex_;
  mutable std::unordered_map<std::string, ssl_session_st*, StringViewHash, std::equal_to<>>
      sessions_;
};

// For the configuration loader (`gateway --check` and reloads): "" when the block
// builds a working context, else "FILE: message". Call once the PEM checks passed.
std::string validateListenerTls(const ListenerTls& config);
std::string validateUpstreamTls(const UpstreamTls& config);

}  // namespace gw
