#include "gateway/tls/tls_session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

#include "gateway/config/config_context.h"
#include "gateway/tls/openssl_util.h"
#include "gateway/tls/tls_context.h"

namespace gw {

namespace {

// The largest plaintext of one TLS record (RFC 8446 5.1).
constexpr size_t kMaxRecordPlaintext = 16 * 1024;
constexpr size_t kScratchInput = 64 * 1024;

// Per-thread areas, allocated on first use so threads that never do TLS pay nothing.
char* threadArea(std::unique_ptr<char[]>& area, size_t size) {
  if (!area) area.reset(new char[size]);
  return area.get();
}

char* stagingArea() {
  thread_local std::unique_ptr<char[]> area;
  return threadArea(area, kMaxRecordPlaintext);
}

std::string_view hostOf(std::string_view endpoint) {
  if (endpoint.starts_with('[')) {
    size_t close = endpoint.find(']');
    return close == std::string_view::npos ? endpoint.substr(1) : endpoint.substr(1, close - 1);
  }
  size_t colon = endpoint.rfind(':');
  return colon == std::string_view::npos ? endpoint : endpoint.substr(0, colon);
}

bool isIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string subjectOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return {};
  // RFC 2253 escapes control characters and every byte above 0x7f (ESC_CTRL, ESC_MSB):
  // the result is printable ASCII, safe as a header value.
  if (X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(std::max(len, 0L)));
}

}  // namespace

// ---------------------------------------------------------------- the BIO

// The session's only BIO, for both directions: reads take the ciphertext being fed,
// writes append records to output(). No copy into an intermediate BIO buffer, and no
// allocation beyond output()'s pooled slices.
struct TlsBio {
  static TlsSession* sessionOf(BIO* b) { return static_cast<TlsSession*>(BIO_get_data(b)); }

  static int write(BIO* b, const char* data, size_t len, size_t* written) noexcept {
    BIO_clear_retry_flags(b);
    sessionOf(b)->output_.append(data, len);
    *written = len;
    return 1;
  }

  static int read(BIO* b, char* out, size_t len, size_t* read) noexcept {
    BIO_clear_retry_flags(b);
    *read = sessionOf(b)->readInput(out, len);
    if (*read > 0) return 1;
    BIO_set_retry_read(b);  // "no more for now": SSL_ERROR_WANT_READ, not end of stream
    return 0;
  }

  static long ctrl(BIO*, int cmd, long, void*) noexcept {
    // Flushing is the caller's business (output()); everything else is unsupported.
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
  }

  static int create(BIO* b) noexcept {
    BIO_set_init(b, 1);
    return 1;
  }

  static int destroy(BIO*) noexcept { return 1; }

  static BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gw-tls");
      if (made) {
        BIO_meth_set_write_ex(made, write);
        BIO_meth_set_read_ex(made, read);
        BIO_meth_set_ctrl(made, ctrl);
        BIO_meth_set_create(made, create);
        BIO_meth_set_destroy(made, destroy);
      }
      return made;
    }();
    return m;
  }
};

// ---------------------------------------------------------------- encryption

// Cuts plaintext into full records: small pieces (a head, a short body) are gathered in
// the per-thread staging area, long runs are handed to OpenSSL in place.
class TlsSession::RecordWriter {
 public:
  explicit RecordWriter(SSL* ssl) : ssl_(ssl), stage_(stagingArea()) {}

  bool add(const char* p, size_t n) {
    while (n > 0) {
      if (staged_ == 0 && n >= kMaxRecordPlaintext) {
        size_t whole = n - n % kMaxRecordPlaintext;
        if (!write(p, whole)) return false;
        p += whole;
        n -= whole;
        continue;
      }
      size_t take = std::min(n, kMaxRecordPlaintext - staged_);
      std::memcpy(stage_ + staged_, p, take);
      staged_ += take;
      p += take;
      n -= take;
      if (staged_ == kMaxRecordPlaintext && !flush()) return false;
    }
    return true;
  }

  bool flush() {
    bool ok = staged_ == 0 || write(stage_, staged_);
    staged_ = 0;
    return ok;
  }

 private:
  bool write(const char* p, size_t n) {
    size_t written = 0;
    // The BIO takes everything, so this is all or an error, never a partial write.
    return SSL_write_ex(ssl_, p, n, &written) == 1 && written == n;
  }

  SSL* ssl_;
  char* stage_;
  size_t staged_ = 0;
};

// ---------------------------------------------------------------- session

TlsSession::TlsSession(std::shared_ptr<const TlsServerContext> context) : server_(true) {
  ssl_ = SSL_new(context->defaultContext());
  context_ = std::move(context);
  if (ssl_) SSL_set_accept_state(ssl_);
  attach();
}

TlsSession::TlsSession(std::shared_ptr<const TlsClientContext> context,
                       std::string_view endpoint)
    : endpoint_(endpoint) {
  ssl_ = SSL_new(context->context());
  if (ssl_) {
    SSL_set_connect_state(ssl_);
    SSL_set_ex_data(ssl_, TlsClientContext::endpointIndex(), &endpoint_);
    std::string name = context->serverName().empty() ? std::string(hostOf(endpoint))
                                                     : context->serverName();
    info_.server_name = toLowerAscii(name);
    bool ok = true;
    if (isIpLiteral(name)) {
      // RFC 6066: no SNI for addresses; the certificate must carry the IP instead.
      info_.server_name.clear();
      if (context->verifies()) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str()) == 1;
      }
    } else if (!name.empty()) {
      ok = SSL_set_tlsext_host_name(ssl_, name.c_str()) == 1;
      if (ok && context->verifies()) {
        SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(ssl_, name.c_str()) == 1;
      }
    }
    if (!ok) {
      error_ = "bad upstream server name '" + name + "' (" + takeOpensslError() + ")";
      state_ = TlsState::Error;
    }
    if (SSL_SESSION* resumable = context->findSession(endpoint_)) {
      SSL_set_session(ssl_, resumable);
      SSL_SESSION_free(resumable);
    }
  }
  client_ = context.get();
  context_ = std::move(context);
  attach();
}

void TlsSession::attach() {
  BIO* bio = ssl_ ? BIO_new(TlsBio::method()) : nullptr;
  if (!bio) {
    error_ = "cannot create a TLS session (" + takeOpensslError() + ")";
    state_ = TlsState::Error;
    return;
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one reference serves both directions
}

TlsSession::~TlsSession() {
  // OpenSSL treats a session freed without close_notify as suspect and makes it
  // unresumable, but most connections simply end (the peer closes, a keep-alive times
  // out). Only a failed one deserves that; the others stay resumable.
  if (ssl_ && state_ != TlsState::Error && SSL_is_init_finished(ssl_)) {
    SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }
  SSL_free(ssl_);
}

char* TlsSession::scratchInput(size_t* len) {
  thread_local std::unique_ptr<char[]> area;
  *len = kScratchInput;
  return threadArea(area, kScratchInput);
}

bool TlsSession::start() {
  if (state_ == TlsState::Error) return false;
  if (server_ || started_ || state_ != TlsState::Handshaking) return true;
  started_ = true;
  TlsFeedResult ignored;
  ERR_clear_error();
  driveHandshake(ignored);  // sends the ClientHello, then wants the server's answer
  return state_ != TlsState::Error;
}

TlsFeedResult TlsSession::feed(const char* data, size_t len, InputBlock& plaintext,
                               size_t limit) {
  TlsFeedResult result;
  // Nothing more comes in after an error, the peer's close_notify, or giving up on a
  // handshake (shutdown() before it completed).
  if (state_ == TlsState::Error || peer_closed_ || (sent_close_ && !SSL_is_init_finished(ssl_))) {
    return result;
  }
  ERR_clear_error();
  started_ = true;
  in_data_ = data;
  in_len_ = len;
  if (state_ != TlsState::Handshaking || driveHandshake(result)) {
    if (state_ != TlsState::Handshaking) readPlaintext(plaintext, limit, result);
  }
  // Only a full sink leaves input behind; after an error or close_notify it is moot.
  if (in_len_ > 0 && result.sink_full) pending_in_.append(in_data_, in_len_);
  in_data_ = nullptr;
  in_len_ = 0;
  if (plaintext.length() == 0) plaintext.release();  // an idle connection holds no slice
  return result;
}

bool TlsSession::driveHandshake(TlsFeedResult& result) {
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    completeHandshake();
    result.handshake_done = true;
    return state_ != TlsState::Error;
  }
  int code = SSL_get_error(ssl_, rc);
  if (code != SSL_ERROR_WANT_READ) fail(code);
  return false;
}

void TlsSession::completeHandshake() {
  state_ = TlsState::Established;
  info_.version = SSL_get_version(ssl_);
  info_.cipher = SSL_get_cipher_name(ssl_);
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  // A static view: the session's bytes are gone once it is freed.
  std::string_view selected(reinterpret_cast<const char*>(alpn), alpn ? alpn_len : 0);
  for (std::string_view known : {std::string_view("http/1.1"), std::string_view("h2")}) {
    if (selected == known) info_.alpn = known;
  }
  if (server_) {
    const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    if (sni) info_.server_name = toLowerAscii(sni);
  }
  info_.resumed = SSL_session_reused(ssl_) == 1;
  if (X509* peer = SSL_get0_peer_certificate(ssl_)) info_.peer_subject = subjectOf(peer);
  info_.verify_result = SSL_get_verify_result(ssl_);
  // A TLS 1.2 server may renew the ticket of a resumed session; OpenSSL reports new
  // sessions only after full handshakes there, so keep the renewed one here.
  if (client_ && info_.resumed && SSL_version(ssl_) <= TLS1_2_VERSION) {
    if (SSL_SESSION* renewed = SSL_get1_session(ssl_)) client_->storeSession(endpoint_, renewed);
  }
  if (!pending_plain_.empty()) encrypt(pending_plain_);  // reports its own failure
}

void TlsSession::readPlaintext(InputBlock& plaintext, size_t limit, TlsFeedResult& result) {
  for (;;) {
    size_t room = 0;
    char* p = plaintext.writable(&room, limit);
    if (!p) {
      result.sink_full = true;
      return;
    }
    size_t got = 0;
    if (SSL_read_ex(ssl_, p, room, &got) == 1) {
      plaintext.added(got);
      result.plaintext += got;
      continue;
    }
    int code = SSL_get_error(ssl_, 0);
    if (code == SSL_ERROR_WANT_READ) return;
    if (code == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      state_ = TlsState::Closed;
      return;
    }
    fail(code);
    return;
  }
}

size_t TlsSession::readInput(char* out, size_t len) {
  size_t n = 0;
  while (n < len && !pending_in_.empty()) {
    iovec iov;
    pending_in_.peek(&iov, 1);
    size_t take = std::min(len - n, iov.iov_len);
    std::memcpy(out + n, iov.iov_base, take);
    pending_in_.drain(take);
    n += take;
  }
  size_t take = std::min(len - n, in_len_);
  if (take > 0) {
    std::memcpy(out + n, in_data_, take);
    in_data_ += take;
    in_len_ -= take;
    n += take;
  }
  return n;
}

void TlsSession::fail(int ssl_error) {
  // OpenSSL's reason ("certificate verify failed", "unsupported protocol", "tlsv1 alert
  // unknown ca"), plus the certificate problem when verification was the cause.
  bool verify_failed = ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_CERTIFICATE_VERIFY_FAILED;
  std::string reason = takeOpensslError(ssl_error == SSL_ERROR_SYSCALL ? "unexpected end of stream"
                                                                       : "TLS protocol error");
  if (verify_failed) {
    reason += std::string(" (") + X509_verify_cert_error_string(SSL_get_verify_result(ssl_)) + ")";
  }
  error_ = std::move(reason);
  state_ = TlsState::Error;
  pending_in_.clear();
  pending_plain_.clear();
}

bool TlsSession::canEncrypt() const {
  return !sent_close_ && (state_ == TlsState::Established || state_ == TlsState::Handshaking ||
                          state_ == TlsState::Closed);
}

bool TlsSession::encrypt(const iovec* iov, size_t count) {
  if (!canEncrypt()) return false;
  if (state_ == TlsState::Handshaking) {
    for (size_t i = 0; i < count; ++i) pending_plain_.append(iov[i].iov_base, iov[i].iov_len);
    return start();
  }
  ERR_clear_error();
  RecordWriter writer(ssl_);
  for (size_t i = 0; i < count; ++i) {
    if (!writer.add(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len)) {
      fail(SSL_ERROR_SSL);
      return false;
    }
  }
  if (writer.flush()) return true;
  fail(SSL_ERROR_SSL);
  return false;
}

bool TlsSession::encrypt(Buffer& plaintext) {
  if (!canEncrypt()) return false;
  if (state_ == TlsState::Handshaking) {
    pending_plain_.moveFrom(plaintext);
    pending_plain_.internalize();  // the caller's external bytes may not live that long
    return start();
  }
  ERR_clear_error();
  RecordWriter writer(ssl_);
  constexpr size_t kBatch = 64;
  iovec iov[kBatch];
  while (!plaintext.empty()) {
    size_t n = plaintext.peek(iov, kBatch);
    size_t bytes = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!writer.add(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len)) {
        fail(SSL_ERROR_SSL);
        return false;
      }
      bytes += iov[i].iov_len;
    }
    plaintext.drain(bytes);
  }
  if (writer.flush()) return true;
  fail(SSL_ERROR_SSL);
  return false;
}

void TlsSession::shutdown() {
  if (sent_close_ || state_ == TlsState::Error) return;
  sent_close_ = true;
  pending_plain_.clear();
  if (state_ == TlsState::Handshaking) {
    state_ = TlsState::Closed;
    return;
  }
  ERR_clear_error();
  // 0 (sent, the peer's not seen yet) or 1 (both): either way ours is in output().
  if (SSL_shutdown(ssl_) < 0) ERR_clear_error();
  state_ = TlsState::Closed;
}

size_t TlsSession::pendingInput() const {
  return pending_in_.size() + (ssl_ ? size_t(std::max(SSL_pending(ssl_), 0)) : 0);
}

void TlsSession::releaseIdleMemory() {
  if (ssl_ && pending_in_.empty()) SSL_free_buffers(ssl_);
}

}  // namespace gw
