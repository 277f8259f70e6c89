// A client connection: the transport under the codec that it hosts (HTTP/1.1, or HTTP/2
// once ALPN chose h2 or an h2c listener saw the connection preface). TCP or TLS bytes,
// reads and writes with backpressure, the deadlines (header_read, body_read, idle, write
// stall; an HTTP/2 session keeps its per-stream ones itself), lingering and close.
//
// Contract:
// - A DownstreamConnection lives on one worker's loop and is freed only in its uv_close
//   callback, never inside a read callback. It holds no request object and no buffer
//   while idle: those come from the worker's pools when bytes arrive and go back when the
//   response has been written.
// - Every entry point (libuv callback, deadline, upstream event, filter resumption) holds
//   an event scope; the outermost one finishes and recycles a request whose response has
//   been written, so no request is recycled while a callback still uses it.
// - The codec (gateway/http1/server_codec.h, gateway/http2/server_codec.h) drives the
//   transport through the public section below; the worker through accept(),
//   onDeadline(), drain() and forceClose(). The HTTP/1.1 codec is a member (the common
//   case costs no allocation); an HTTP/2 session is allocated when it is chosen.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>

#include "gateway/buffer.h"
#include "gateway/deadline_list.h"
#include "gateway/http1/server_codec.h"
#include "gateway/tls/tls_session.h"

namespace gw {

class Worker;
class Http2ServerCodec;

// A DeadlineNode by inheritance, so the worker's deadline lists get back to the connection
// with a static_cast rather than offsetof on a non-standard-layout class.
class DownstreamConnection final : public DeadlineNode {
 public:
  static void accept(Worker& worker, uv_stream_t* listener, size_t listener_index, bool admin);

  // Worker-driven events.
  void onDeadline();  // the deadline of deadline_kind_ passed
  void drain();                // close when idle, or after the current response
  void onReload();             // a new configuration: HTTP/2 sends GOAWAY
  void forceClose();

  // --- the transport, as its codec uses it ---
  InputBlock& input() { return in_; }
  const uint8_t (&peerIp16() const)[16] { return peer_ip16_; }
  const TlsHandshakeInfo* tlsInfo() const { return tls_ ? &tls_->session.info() : nullptr; }
  size_t listenerIndex() const { return listener_index_; }
  uint16_t listenerLabel() const { return listener_label_; }
  bool admin() const { return admin_; }
  bool closing() const { return closing_; }
  bool lingering() const { return lingering_; }
  bool draining() const { return draining_; }
  bool readPaused() const { return read_paused_; }
  void startReading();
  void stopReading();
  // Reading again after a stop: the bytes waiting in the block are parsed, then those
  // waiting undecrypted in the TLS session.
  void resumeInput();
  DeadlineKind deadlineKind() const { return deadline_kind_; }
  void armDeadline(DeadlineKind kind);
  void disarmDeadline() {
    DeadlineList::unlink(this);
    deadline_kind_ = DeadlineKind::None;
  }
  // Writes the request's output (encrypting it on TLS); what the kernel does not take at
  // once is queued and copied.
  void flushOutput();
  size_t queuedBytes() const;  // output not yet on the wire, plain or encrypted
  void closeConnection();
  // After the last bytes queued (an HTTP/2 GOAWAY): half-close, discard, close.
  void lingerThenClose();
  void enterEvent() { ++depth_; }
  void leaveEvent() {
    if (--depth_ == 0) afterEvent();
  }
  // The loop's data is its Worker: an idle connection is hundreds of thousands of these,
  // so what can be found is not stored.
  Worker& worker() const { return *static_cast<Worker*>(tcp_.loop->data); }

  DownstreamConnection* next_connection = nullptr;  // the worker's list of connections
  DownstreamConnection* prev_connection = nullptr;

 private:
  DownstreamConnection(size_t listener_index, bool admin);
  ~DownstreamConnection();

  void onRead(ssize_t nread);
  void onWritten(int status);
  void afterEvent();
  void finishRequest();
  void countUnfinishedHandshake();
  // Chooses the codec at the connection's first plaintext bytes: HTTP/2 after ALPN h2, or
  // on an h2c listener when they are the connection preface. False: wait for more bytes.
  bool chooseCodec();
  void processInput();
  void abortRequests();
  OutputSlot* output();  // null: nothing to write (no HTTP/1.1 request in progress)
  void countWritten(size_t n);
  void onOutputDrained();

  struct EventScope {
    explicit EventScope(DownstreamConnection* c) : c_(c) { c_->enterEvent(); }
    ~EventScope() { c_->leaveEvent(); }
    DownstreamConnection* c_;
  };

  static void onAllocCb(uv_handle_t* h, size_t hint, uv_buf_t* buf) noexcept;
  static void onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void onWriteCb(uv_write_t* req, int status) noexcept;
  static void onCloseCb(uv_handle_t* h) noexcept;

  // A TLS connection's session and its own write slot: handshake bytes flow before any
  // request exists, so they cannot use the request's.
  struct TlsLink {
    explicit TlsLink(std::shared_ptr<const TlsServerContext> ctx) : session(std::move(ctx)) {}
    TlsSession session;
    uv_write_t write_req{};
    size_t writing = 0;
    bool started = false;  // the client sent handshake bytes
  };
  void onTlsRead(const char* data, size_t len);
  void flushTls();
  void onTlsWritten(int status);
  bool outputFlushed() const;  // the current response has fully reached the socket

  uv_tcp_t tcp_{};
  std::unique_ptr<TlsLink> tls_;
  Http1ServerCodec codec_{*this};
  std::unique_ptr<Http2ServerCodec> h2_;
  InputBlock in_;
  uint16_t listener_index_;  // into Config::listeners (not meaningful on the admin listener)
  uint16_t listener_label_ = 0;
  bool admin_;
  bool reading_ = false;
  bool read_paused_ = false;  // backpressure or a request being answered
  bool closing_ = false;
  bool draining_ = false;
  bool lingering_ = false;       // response sent, write side shut: discarding until EOF
  bool codec_chosen_ = false;
  bool admitted_ = false;        // counted by the connection limiter
  bool counted_per_ip_ = false;  // ... and per address
  DeadlineKind deadline_kind_ = DeadlineKind::None;
  uint16_t depth_ = 0;
  uint8_t peer_ip16_[16]{};
};

}  // namespace gw
