// One TLS connection, server (downstream) or client (upstream) side, driven entirely
// through memory: the caller moves ciphertext between the socket and the session, the
// session never touches a socket and never blocks.
//
// Contract:
// - Single-threaded: a session, its output() and the InputBlock it decrypts into belong
//   to one worker thread (their memory comes from that thread's SlicePool). It keeps its
//   context alive; the context may be shared with any number of threads.
// - Input: feed() takes every ciphertext byte it is given and keeps no pointer to them,
//   so the socket may read into a per-thread scratch area (scratchInput()). Decrypted
//   bytes are appended to the caller's InputBlock up to `limit`; when that is full the
//   rest waits inside the session (sink_full) and feed(nullptr, 0, ...) resumes once the
//   caller made room.
// - Output: everything the session must send (handshake messages, alerts, session
//   tickets, application records, close_notify) is appended to output(), in order. The
//   caller writes output() to the socket whenever wantsWrite(), e.g. with writeBuffer()
//   (stream_write.h), which drains what the kernel took.
// - encrypt() coalesces its input into full 16 KiB records (a small response is one
//   record). Before the handshake is done it queues the plaintext (copying it) and
//   sends it as soon as the handshake completes, so a client may write its request at
//   once.
// - Errors are reported by state() == Error and error(), never thrown. After an error
//   output() may still hold an alert: send it if convenient, then close.
// - OpenSSL keeps ~33 KiB of record buffers per active session; releaseIdleMemory()
//   gives them back while a keep-alive connection waits.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/buffer.h"

struct ssl_st;

namespace gw {

class TlsServerContext;
class TlsClientContext;

enum class TlsState {
  Handshaking,
  Established,
  Closed,  // close_notify received (peerClosed()) and/or sent (shutdown())
  Error,
};

// Filled when the handshake completes; stable for the session's life.
struct TlsHandshakeInfo {
  std::string_view version;  // "TLSv1.3", "TLSv1.2" (static strings)
  std::string_view cipher;   // e.g. "TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"
  std::string_view alpn;     // "http/1.1", or empty when none was negotiated
  std::string server_name;   // SNI received (server) or sent (client), lower case
  bool resumed = false;      // an abbreviated handshake (ticket or session id)
  // The peer certificate's subject, RFC 2253 ("CN=client,O=Example"), escaped to
  // printable ASCII; empty without a peer certificate. On a listener with client_ca it
  // was verified (the handshake fails otherwise): the X-Client-Cert-Subject value.
  std::string peer_subject;
  long verify_result = 0;  // X509_V_OK (0), or why the peer's chain did not verify
};

struct TlsFeedResult {
  size_t plaintext = 0;         // bytes appended to the InputBlock by this call
  bool handshake_done = false;  // the handshake completed during this call: see info()
  bool sink_full = false;       // stopped at `limit`: consume, then feed(nullptr, 0, ...)
};

class TlsSession {
 public:
  // A server session (one accepted connection).
  explicit TlsSession(std::shared_ptr<const TlsServerContext> context);
  // A client session to `endpoint` ("host:port" as in SocketAddress::text). It sends
  // and verifies the context's serverName(), else the endpoint's host (an IP address is
  // checked against the certificate's IP SANs and sent as no SNI). Sessions are resumed
  // per endpoint.
  TlsSession(std::shared_ptr<const TlsClientContext> context, std::string_view endpoint);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  bool isServer() const { return server_; }
  TlsState state() const { return state_; }
  bool peerClosed() const { return peer_closed_; }
  const std::string& error() const { return error_; }
  const TlsHandshakeInfo& info() const { return info_; }

  // Client: queues the ClientHello in output() (encrypt() does so too if needed).
  // Server: nothing to do. False on error.
  bool start();
  // Decrypts `len` ciphertext bytes (len 0: resume after sink_full) into `plaintext`,
  // growing it up to `limit` bytes (see InputBlock::writable). Handshake and other
  // protocol answers go to output().
  TlsFeedResult feed(const char* data, size_t len, InputBlock& plaintext, size_t limit);
  // Encrypts plaintext into output(). False once shutdown() was called or the session
  // failed (then error() says why and the connection should be closed).
  bool encrypt(const iovec* iov, size_t count);
  // The same for a whole Buffer, which is drained (its external segments are encrypted
  // straight from where they point, so they need no internalize()).
  bool encrypt(Buffer& plaintext);
  // Queues close_notify (once); the caller flushes output() and closes the socket
  // without waiting for the peer's. During the handshake it just gives up.
  void shutdown();

  Buffer& output() { return output_; }
  bool wantsWrite() const { return !output_.empty(); }
  // Non-zero while received bytes wait for room in the InputBlock (ciphertext not yet
  // decrypted, or the rest of a record already decrypted inside OpenSSL): call
  // feed(nullptr, 0, ...) once the caller consumed some. Zero whenever !sink_full.
  size_t pendingInput() const;
  // Frees OpenSSL's record buffers if nothing is pending; they come back on next use.
  void releaseIdleMemory();

  // A per-thread area for the socket read that precedes feed(): libuv's alloc callback
  // can hand it out to every TLS connection of the worker.
  static char* scratchInput(size_t* len);

  ssl_st* ssl() const { return ssl_; }  // for tests and diagnostics

 private:
  friend struct TlsBio;
  class RecordWriter;

  void attach();
  bool driveHandshake(TlsFeedResult& result);
  void readPlaintext(InputBlock& plaintext, size_t limit, TlsFeedResult& result);
  void completeHandshake();
  void fail(int ssl_error);
  size_t readInput(char* out, size_t len);
  bool canEncrypt() const;

  std::shared_ptr<const void> context_;  // keeps the SSL_CTXs alive
  const TlsClientContext* client_ = nullptr;  // client sessions: context_, typed
  ssl_st* ssl_ = nullptr;
  bool server_ = false;
  bool started_ = false;
  bool peer_closed_ = false;
  bool sent_close_ = false;
  TlsState state_ = TlsState::Handshaking;
  // Input of the feed() in progress, then leftovers waiting for room in the sink.
  const char* in_data_ = nullptr;
  size_t in_len_ = 0;
  Buffer pending_in_;
  Buffer pending_plain_;  // encrypt()ed before the handshake completed
  Buffer output_;
  std::string endpoint_;  // client: the resumption key
  std::string error_;
  TlsHandshakeInfo info_;
};

}  // namespace gw
