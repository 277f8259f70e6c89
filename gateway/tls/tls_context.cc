#include "gateway/tls/tls_context.h"

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>

#include "gateway/config/config_context.h"
#include "gateway/tls/openssl_util.h"

namespace gw {

namespace {

// Mozilla "intermediate" (server side guidelines v5.7): AEAD suites with forward secrecy
// only, in Mozilla's order, and DHE with the RFC 7919 groups for the rare client without
// ECDHE. Mozilla leaves the choice to the client; the server picks here (see
// kServerPreference), as scanners such as testssl.sh rate "no cipher order" HIGH.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Ciphers =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";
// The server's order (AES-128-GCM first: fast with AES-NI, ample strength), except that a
// client listing ChaCha20 first (phones without AES instructions) gets ChaCha20.
constexpr uint64_t kServerPreference = SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA;
// ALPN wire format, in the server's order of preference.
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH2Http11[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr size_t kMaxHostName = 255;
// Enough for the upstream endpoints of any sane configuration; when full, one arbitrary
// entry goes (it only costs that endpoint one full handshake).
constexpr size_t kMaxClientSessions = 4096;

std::string lowerHostName(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return toLowerAscii(name);
}

// A certificate file: the leaf first, then the chain sent with it.
struct LoadedCertificate {
  X509Ptr leaf;
  X509StackPtr chain;
  PkeyPtr key;
  std::vector<std::string> names;  // lower case: DNS SANs, else the CN
};

std::string fileError(const std::string& path, const std::string& message) {
  return quoteValue(path) + ": " + message;
}

std::string readCertificateFile(const std::string& path, LoadedCertificate& out) {
  std::string problem;
  BioPtr bio = boundedFileBio(path, problem);
  if (!bio) return fileError(path, "cannot read (" + problem + ")");
  out.leaf.reset(PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr));
  if (!out.leaf) return fileError(path, "no PEM certificate (" + takeOpensslError() + ")");
  out.chain.reset(sk_X509_new_null());
  if (!out.chain) return fileError(path, takeOpensslError());
  while (X509Ptr next{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (!sk_X509_push(out.chain.get(), next.get())) return fileError(path, takeOpensslError());
    next.release();
  }
  // The loop ends on "no start line" at the end of the file; anything else is a damaged
  // chain certificate, which clients would reject later and less clearly.
  unsigned long last = ERR_peek_last_error();
  if (last && ERR_GET_REASON(last) != PEM_R_NO_START_LINE) {
    return fileError(path, "bad certificate in the chain (" + takeOpensslError() + ")");
  }
  ERR_clear_error();
  return {};
}

std::string readKeyFile(const std::string& path, PkeyPtr& out) {
  std::string problem;
  BioPtr bio = boundedFileBio(path, problem);
  if (!bio) return fileError(path, "cannot read (" + problem + ")");
  // No passphrase callback: an encrypted key fails here instead of prompting.
  auto no_passphrase = [](char*, int, int, void*) noexcept { return 0; };
  out.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!out) return fileError(path, "no unencrypted PEM private key (" + takeOpensslError() + ")");
  return {};
}

std::string asn1Text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     size_t(ASN1_STRING_length(s)));
}

bool plausibleHostName(std::string_view name) {
  if (name.empty() || name.size() > kMaxHostName) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*' ||
           c == '_';
  });
}

// The names SNI may choose this certificate by: its DNS subjectAltNames, or its common
// name when it has none (RFC 6125 6.4.4; what browsers no longer do, but old internal
// certificates still rely on).
std::vector<std::string> certificateNames(X509* cert) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type != GEN_DNS) continue;
    std::string text = lowerHostName(asn1Text(name->d.dNSName));
    if (plausibleHostName(text)) names.push_back(std::move(text));
  }
  GENERAL_NAMES_free(sans);
  if (names.empty()) {
    X509_NAME* subject = X509_get_subject_name(cert);
    int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (at >= 0) {
      std::string text =
          lowerHostName(asn1Text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at))));
      if (plausibleHostName(text)) names.push_back(std::move(text));
    }
  }
  ERR_clear_error();  // a certificate without the extension leaves a benign error behind
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::string loadCertificate(const TlsCertificate& files, LoadedCertificate& out) {
  if (std::string e = readCertificateFile(files.cert_file, out); !e.empty()) return e;
  if (std::string e = readKeyFile(files.key_file, out.key); !e.empty()) return e;
  if (X509_check_private_key(out.leaf.get(), out.key.get()) != 1) {
    ERR_clear_error();
    return fileError(files.key_file,
                     "private key does not match certificate " + quoteValue(files.cert_file));
  }
  out.names = certificateNames(out.leaf.get());
  return {};
}

// Installs a certificate in `ctx` beside any of another key type: OpenSSL keeps one
// per key type and chooses by what the client supports. Also enforces the security
// level (e.g. "ee key too small" for RSA under 2048 bits).
std::string installCertificate(SSL_CTX* ctx, LoadedCertificate& cert, const std::string& path) {
  if (SSL_CTX_use_cert_and_key(ctx, cert.leaf.get(), cert.key.get(), cert.chain.get(), 1) != 1) {
    return fileError(path, "certificate refused (" + takeOpensslError() + ")");
  }
  return {};
}

// What both sides share: protocol versions, suites, groups, no renegotiation.
std::string configureCommon(SSL_CTX* ctx, int min_version) {
  // Level 2 (112-bit: RSA and DH >= 2048 bits, no SHA-1 signatures) whatever the
  // system's openssl.cnf says, so behaviour does not depend on the host.
  SSL_CTX_set_security_level(ctx, 2);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  bool ok = SSL_CTX_set_min_proto_version(ctx, min_version) == 1 &&
            SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) == 1 &&
            SSL_CTX_set_ciphersuites(ctx, kTls13Ciphers) == 1 &&
            SSL_CTX_set1_groups_list(ctx, kGroups) == 1;
  if (!ok) return "cannot set up the TLS profile (" + takeOpensslError() + ")";
  return {};
}

int protocolVersion(const std::string& name) {
  return name == "TLSv1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
}

}  // namespace

// ---------------------------------------------------------------- ticket keys

// The session ticket keys of one listener, newest first. Workers read them on every
// full handshake (to seal) and every resumption (to open), hence the mutex around
// a copy of one key; rotation happens lazily on first use after it is due.
class TlsTicketKeys {
 public:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
  };

  TlsTicketKeys(std::chrono::seconds rotation, size_t count)
      : rotation_(rotation), ring_(std::max<size_t>(count, 1)) {}
  ~TlsTicketKeys() { OPENSSL_cleanse(ring_.data(), ring_.size() * sizeof(Key)); }

  bool start() {
    std::lock_guard lock(mutex_);
    return rotateLocked();
  }
  void rotate() {
    std::lock_guard lock(mutex_);
    rotateLocked();
  }
  // The key new tickets are sealed with.
  bool current(Key* out) {
    std::lock_guard lock(mutex_);
    if (Clock::now() >= next_rotation_ && !rotateLocked()) return false;
    *out = ring_[newest_];
    return true;
  }
  // The key named `name`, if still on the ring; *newest says whether it is the
  // current one (else the ticket should be renewed).
  bool find(const unsigned char* name, Key* out, bool* newest) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < live_; ++i) {
      const Key& k = ring_[(newest_ + ring_.size() - i) % ring_.size()];
      if (CRYPTO_memcmp(k.name, name, sizeof k.name) == 0) {
        *out = k;
        *newest = i == 0;
        return true;
      }
    }
    return false;
  }
  std::chrono::seconds lifetime() const {
    return rotation_ * std::max<size_t>(ring_.size() - 1, 1);
  }

 private:
  using Clock = std::chrono::steady_clock;

  bool rotateLocked() {
    size_t slot = live_ == 0 ? 0 : (newest_ + 1) % ring_.size();
    Key fresh;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&fresh), sizeof fresh) != 1) {
      ERR_clear_error();
      return false;
    }
    ring_[slot] = fresh;
    OPENSSL_cleanse(&fresh, sizeof fresh);
    newest_ = slot;
    live_ = std::min(live_ + 1, ring_.size());
    next_rotation_ = Clock::now() + rotation_;
    return true;
  }

  std::mutex mutex_;
  std::chrono::seconds rotation_;
  std::vector<Key> ring_;
  size_t newest_ = 0;
  size_t live_ = 0;
  Clock::time_point next_rotation_{};
};

// ---------------------------------------------------------------- OpenSSL callbacks

struct TlsContextCallbacks {
  static const TlsServerContext* serverOf(SSL* ssl) {
    return static_cast<const TlsServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  }

  // SNI: move the connection to the context of the certificate that serves the name.
  static int onServerName(SSL* ssl, int*, void* arg) noexcept {
    const auto* self = static_cast<const TlsServerContext*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK;
    SSL_CTX* chosen = self->contextFor(name);
    if (chosen != SSL_get_SSL_CTX(ssl) && !SSL_set_SSL_CTX(ssl, chosen)) {
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
  }

  // A client that offers ALPN with nothing we speak (say "h2" alone where http2 is off)
  // gets no ALPN answer rather than a fatal alert: an HTTP/1.0 client offering "http/1.0"
  // is served fine, and an h2-only client learns from the missing answer that it must
  // give up.
  static int onAlpn(SSL*, const unsigned char** out, unsigned char* out_len,
                    const unsigned char* in, unsigned int in_len, void* arg) noexcept {
    const auto* self = static_cast<const TlsServerContext*>(arg);
    const unsigned char* ours = self->http2_ ? kAlpnH2Http11 : kAlpnHttp11;
    unsigned ours_len = self->http2_ ? sizeof kAlpnH2Http11 : sizeof kAlpnHttp11;
    unsigned char* selected = nullptr;
    unsigned char selected_len = 0;
    if (SSL_select_next_proto(&selected, &selected_len, ours, ours_len, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED) {
      return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    *out_len = selected_len;
    return SSL_TLSEXT_ERR_OK;
  }

  // Session tickets (TLS 1.2 and 1.3) sealed with AES-256-CBC + HMAC-SHA256 under the
  // listener's rotating keys. Returns 1 (ok), 2 (ok, renew the ticket), 0 (unknown key:
  // full handshake), -1 (error).
  static int onTicketKey(SSL* ssl, unsigned char* name, unsigned char* iv,
                         EVP_CIPHER_CTX* cipher_ctx, EVP_MAC_CTX* mac_ctx, int enc) noexcept {
    static EVP_CIPHER* const aes = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    const TlsServerContext* self = serverOf(ssl);
    if (!self || !aes) return -1;
    TlsTicketKeys::Key key;
    int result = 1;
    if (enc) {
      if (!self->tickets_->current(&key) || RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
      std::memcpy(name, key.name, sizeof key.name);
      if (EVP_EncryptInit_ex(cipher_ctx, aes, nullptr, key.aes, iv) != 1) result = -1;
    } else {
      bool newest = false;
      if (!self->tickets_->find(name, &key, &newest)) return 0;
      if (EVP_DecryptInit_ex(cipher_ctx, aes, nullptr, key.aes, iv) != 1) result = -1;
      // Renew a ticket sealed with an older key; and always in TLS 1.3, where OpenSSL
      // sends no new ticket otherwise and clients use each ticket once (RFC 8446 C.4).
      if (result > 0 && (!newest || SSL_version(ssl) == TLS1_3_VERSION)) result = 2;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac, sizeof key.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end()};
    if (result > 0 && EVP_MAC_CTX_set_params(mac_ctx, params) != 1) result = -1;
    OPENSSL_cleanse(&key, sizeof key);
    return result;
  }

  // Client side: keep the newest resumable session of each endpoint.
  static int onClientSession(SSL* ssl, SSL_SESSION* session) noexcept {
    const auto* self =
        static_cast<const TlsClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    const auto* endpoint =
        static_cast<const std::string*>(SSL_get_ex_data(ssl, TlsClientContext::endpointIndex()));
    if (!self || !endpoint || !SSL_SESSION_is_resumable(session)) return 0;
    self->storeSession(*endpoint, session);
    return 1;  // the store adopted OpenSSL's reference
  }
};

// ---------------------------------------------------------------- server

namespace {

// Sessions are bound to the client CA file: a session established without a client
// certificate, or under another CA, must never resume on a listener that demands one.
std::string sessionContextOf(const ListenerTls& config, std::string* error) {
  std::string material = "gw-tls-session/1\n";
  if (!config.client_ca.empty()) {
    std::string content;
    std::string problem;
    if (!readBoundedFile(config.client_ca, content, problem)) {
      *error = fileError(config.client_ca, "cannot read (" + problem + ")");
      return {};
    }
    material += content;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(material.data(), material.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    *error = "cannot hash the session context (" + takeOpensslError() + ")";
    return {};
  }
  return std::string(reinterpret_cast<char*>(digest),
                     std::min<size_t>(length, SSL_MAX_SID_CTX_LENGTH));
}

struct ClientAuth {
  X509StorePtr store;
  X509NameStackPtr names;  // sent in the CertificateRequest
};

std::string loadClientAuth(const std::string& path, ClientAuth& out) {
  out.store.reset(X509_STORE_new());
  if (!out.store || X509_STORE_load_file(out.store.get(), path.c_str()) != 1) {
    return fileError(path, "no usable CA certificate (" + takeOpensslError() + ")");
  }
  out.names.reset(SSL_load_client_CA_file(path.c_str()));
  if (!out.names) return fileError(path, "no CA certificate (" + takeOpensslError() + ")");
  return {};
}

}  // namespace

std::shared_ptr<const TlsServerContext> TlsServerContext::build(const ListenerTls& config,
                                                                std::string* error,
                                                                const TlsServerContext* previous,
                                                                const TlsServerOptions& options) {
  auto fail = [&](std::string message) {
    *error = std::move(message);
    return nullptr;
  };
  if (config.certificates.empty()) return fail("a TLS listener needs a certificate");
  std::shared_ptr<TlsServerContext> self(new TlsServerContext);
  self->client_auth_ = !config.client_ca.empty();
  self->http2_ = options.http2;
  self->session_context_ = sessionContextOf(config, error);
  if (self->session_context_.empty()) return nullptr;

  ClientAuth client_auth;
  if (self->client_auth_) {
    if (std::string e = loadClientAuth(config.client_ca, client_auth); !e.empty()) return fail(e);
  }

  if (previous && previous->session_context_ == self->session_context_) {
    self->tickets_ = previous->tickets_;
  } else {
    self->tickets_ = std::make_shared<TlsTicketKeys>(options.ticket_key_rotation,
                                                     options.ticket_keys);
    if (!self->tickets_->start()) return fail("cannot make session ticket keys");
  }

  // Certificates with the same names share a context; the first one listing a name
  // serves it.
  std::map<std::vector<std::string>, size_t> identity_by_names;
  std::vector<std::map<int, size_t>> key_types;  // per context: key type -> certificate
  for (size_t i = 0; i < config.certificates.size(); ++i) {
    const TlsCertificate& files = config.certificates[i];
    LoadedCertificate cert;
    if (std::string e = loadCertificate(files, cert); !e.empty()) return fail(e);
    auto [it, fresh] = identity_by_names.emplace(cert.names, self->contexts_.size());
    size_t identity = it->second;
    if (fresh) {
      SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
      if (!ctx) return fail("cannot create a TLS context (" + takeOpensslError() + ")");
      self->contexts_.push_back(ctx);
      key_types.emplace_back();
    }
    int key_type = EVP_PKEY_get_base_id(cert.key.get());
    auto [same, added] = key_types[identity].emplace(key_type, i);
    if (!added) {
      return fail(fileError(files.cert_file,
                            "same names and key type as " +
                                quoteValue(config.certificates[same->second].cert_file) +
                                " (one certificate per key type for a set of names)"));
    }
    if (std::string e = installCertificate(self->contexts_[identity], cert, files.cert_file);
        !e.empty()) {
      return fail(e);
    }
    self->identity_of_.push_back(identity);
    for (const std::string& name : cert.names) {
      if (name.starts_with("*.")) {
        self->wildcard_.emplace(name.substr(2), i);
      } else if (name.find('*') == std::string::npos) {
        self->exact_.emplace(name, i);
      }
    }
  }

  // Every context gets the same settings: after an SNI switch OpenSSL reads some of
  // them (ALPN, client verification) from the new context, others (tickets, session
  // cache) from the first.
  for (SSL_CTX* ctx : self->contexts_) {
    if (std::string e = configureCommon(ctx, protocolVersion(config.min_version)); !e.empty()) {
      return fail(e);
    }
    SSL_CTX_set_app_data(ctx, self.get());
    SSL_CTX_set_options(ctx, kServerPreference);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, TlsContextCallbacks::onAlpn, self.get());
    SSL_CTX_set_tlsext_servername_callback(ctx, TlsContextCallbacks::onServerName);
    SSL_CTX_set_tlsext_servername_arg(ctx, self.get());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, TlsContextCallbacks::onTicketKey);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, options.session_cache_size);
    SSL_CTX_set_timeout(ctx, long(self->tickets_->lifetime().count()));
    const auto* sid = reinterpret_cast<const unsigned char*>(self->session_context_.data());
    if (SSL_CTX_set_session_id_context(ctx, sid, unsigned(self->session_context_.size())) != 1) {
      return fail("cannot set the session context (" + takeOpensslError() + ")");
    }
    if (self->client_auth_) {
      SSL_CTX_set1_cert_store(ctx, client_auth.store.get());
      SSL_CTX_set_client_CA_list(ctx, SSL_dup_CA_list(client_auth.names.get()));
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  return self;
}

TlsServerContext::~TlsServerContext() {
  for (SSL_CTX* ctx : contexts_) SSL_CTX_free(ctx);
}

size_t TlsServerContext::certificateFor(std::string_view server_name) const {
  if (server_name.empty() || server_name.size() > kMaxHostName + 1) return 0;
  char lower[kMaxHostName + 1];
  size_t n = server_name.size();
  if (server_name.back() == '.') --n;
  for (size_t i = 0; i < n; ++i) {
    char c = server_name[i];
    lower[i] = c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  }
  std::string_view host(lower, n);
  if (auto it = exact_.find(host); it != exact_.end()) return it->second;
  size_t dot = host.find('.');
  if (dot != std::string_view::npos && dot > 0) {
    if (auto it = wildcard_.find(host.substr(dot + 1)); it != wildcard_.end()) return it->second;
  }
  return 0;
}

void TlsServerContext::rotateTicketKeys() const { tickets_->rotate(); }

// ---------------------------------------------------------------- client

std::shared_ptr<const TlsClientContext> TlsClientContext::build(const UpstreamTls& config,
                                                                std::string* error) {
  auto fail = [&](std::string message) {
    *error = std::move(message);
    return nullptr;
  };
  std::shared_ptr<TlsClientContext> self(new TlsClientContext);
  self->server_name_ = config.sni;
  self->verify_ = config.verify;
  self->ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX* ctx = self->ctx_;
  if (!ctx) return fail("cannot create a TLS context (" + takeOpensslError() + ")");
  if (std::string e = configureCommon(ctx, TLS1_2_VERSION); !e.empty()) return fail(e);
  static constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};
  const unsigned char* offer = config.alpn == AlpnOffer::H2           ? kAlpnH2
                               : config.alpn == AlpnOffer::H2OrHttp11 ? kAlpnH2Http11
                                                                      : kAlpnHttp11;
  unsigned offer_len = config.alpn == AlpnOffer::H2           ? sizeof kAlpnH2
                       : config.alpn == AlpnOffer::H2OrHttp11 ? sizeof kAlpnH2Http11
                                                              : sizeof kAlpnHttp11;
  if (SSL_CTX_set_alpn_protos(ctx, offer, offer_len) != 0) {
    return fail("cannot set ALPN (" + takeOpensslError() + ")");
  }
  if (!config.ca.empty()) {
    if (SSL_CTX_load_verify_file(ctx, config.ca.c_str()) != 1) {
      return fail(fileError(config.ca, "no usable CA certificate (" + takeOpensslError() + ")"));
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return fail("cannot load the system trust store (" + takeOpensslError() + ")");
  }
  SSL_CTX_set_verify(ctx, config.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (!config.cert_file.empty()) {
    LoadedCertificate cert;
    if (std::string e = loadCertificate({config.cert_file, config.key_file}, cert); !e.empty()) {
      return fail(e);
    }
    if (std::string e = installCertificate(ctx, cert, config.cert_file); !e.empty()) return fail(e);
  }
  SSL_CTX_set_app_data(ctx, self.get());
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, TlsContextCallbacks::onClientSession);
  return self;
}

TlsClientContext::~TlsClientContext() {
  for (auto& [endpoint, session] : sessions_) SSL_SESSION_free(session);
  SSL_CTX_free(ctx_);
}

int TlsClientContext::endpointIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

SSL_SESSION* TlsClientContext::findSession(std::string_view endpoint) const {
  std::lock_guard lock(sessions_mutex_);
  auto it = sessions_.find(endpoint);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION_up_ref(it->second);
  return it->second;
}

void TlsClientContext::storeSession(std::string_view endpoint, SSL_SESSION* session) const {
  std::lock_guard lock(sessions_mutex_);
  auto it = sessions_.find(endpoint);
  if (it != sessions_.end()) {
    SSL_SESSION_free(it->second);
    it->second = session;
    return;
  }
  if (sessions_.size() >= kMaxClientSessions) {
    SSL_SESSION_free(sessions_.begin()->second);
    sessions_.erase(sessions_.begin());
  }
  sessions_.emplace(std::string(endpoint), session);
}

// ---------------------------------------------------------------- validation

std::string validateListenerTls(const ListenerTls& config) {
  std::string error;
  return TlsServerContext::build(config, &error) ? std::string() : error;
}

std::string validateUpstreamTls(const UpstreamTls& config) {
  std::string error;
  return TlsClientContext::build(config, &error) ? std::string() : error;
}

}  // namespace gw
