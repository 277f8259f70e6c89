// A client connection: the transport (TCP or TLS, reads, writes, deadlines, close) and,
// for now, the HTTP/1.1 codec that turns its bytes into exchanges.
//
// Contract:
// - A DownstreamConnection lives on one worker's loop and is freed only in its uv_close
//   callback. It holds no request object and no buffer while idle: those come from the
//   worker's pools when bytes arrive and go back when the response has been written.
// - Requests on a connection are handled strictly one at a time: the parser pauses after
//   each complete request, so pipelined requests are answered in order.
// - It is the DownstreamStream of the request in flight; the request's Exchange does the
//   rest (route, filters, upstream, log).
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string>

#include "gateway/buffer.h"
#include "gateway/deadline_list.h"
#include "gateway/downstream_stream.h"
#include "gateway/exchange.h"
#include "gateway/headers.h"
#include "gateway/http_head.h"
#include "gateway/tls_session.h"

namespace gw {

class Worker;

// One request on an HTTP/1.1 connection: its protocol-neutral exchange plus what the
// codec keeps per request. Pooled per worker as one object, so that an idle connection
// holds neither and steady traffic allocates nothing once the pool is warm.
struct Http1Request {
  void reset();

  Exchange exchange;
  llhttp_t parser{};
  HeadCollector head;
  Buffer out;  // to the client
  uv_write_t write_req{};
  size_t writing_bytes = 0;
  size_t parsed = 0;      // head bytes parsed so far (they stay unconsumed in the block)
  int reject_status = 0;  // set by parser callbacks that refuse the request
  uint64_t chunk_extension_bytes = 0;
  bool keep_alive = true;  // the client's connection can carry another request
  bool http10 = false;
  bool expect_continue = false;
  bool chunked_response = false;
  bool response_flushed = false;  // the head was handed to the socket: it cannot be taken back
};

// Which of the worker's deadline lists the connection is in.
enum class DeadlineKind : uint8_t { None, HeaderRead, BodyRead, Idle, WriteStall };

// A DeadlineNode by inheritance, so the worker's deadline lists get back to the connection
// with a static_cast rather than offsetof on a non-standard-layout class.
class DownstreamConnection final : public DownstreamStream, public DeadlineNode {
 public:
  static void accept(Worker& worker, uv_stream_t* listener, size_t listener_index, bool admin);

  // Worker-driven events.
  void onDeadline();  // the deadline of deadline_kind_ passed
  void drain();                // close when idle, or after the current response
  void forceClose();

  // DownstreamStream
  const Ip16& peerIp16() const override { return peer_ip16_; }
  const TlsHandshakeInfo* tlsInfo() const override { return tls_ ? &tls_->session.info() : nullptr; }
  size_t listenerIndex() const override { return listener_index_; }
  bool admin() const override { return admin_; }
  std::string_view protocol() const override;
  void sendHead(int status, const HeaderList& headers, bool length_known) override;
  void sendBody(const char* data, size_t len) override;
  void endResponse() override;
  void flush() override { flushClient(); }
  bool takeBackHead() override;
  void reset() override;
  size_t queuedBytes() const override;
  void endAfterResponse() override { close_after_response_ = true; }
  void requestBodyWanted() override;
  void holdRequestHead(bool hold) override { in_.setPinned(hold); }
  void resumeReading() override { startReading(); }
  void resumeRequest() override;
  void completeBodilessRequest() override;
  void requestBodyUnblocked() override;
  void resumeRequestBody() override { resumeInput(); }
  bool requestBodyPaused() const override { return read_paused_; }
  void relayPendingTunnelBytes() override;
  void enterEvent() override { ++depth_; }
  void leaveEvent() override {
    if (--depth_ == 0) afterEvent();
  }

  DownstreamConnection* next_connection = nullptr;  // the worker's list of connections
  DownstreamConnection* prev_connection = nullptr;

 private:
  DownstreamConnection(size_t listener_index, bool admin);
  ~DownstreamConnection() = default;

  void startReading();
  void stopReading();
  void watchBody();
  void onRead(ssize_t nread);
  // Reading again after a stop: the bytes waiting in the block are parsed, then those
  // waiting undecrypted in the TLS session.
  void resumeInput();
  // Whether the request in progress is still answered once the client half-closes.
  bool answersAfterEof() const;
  void processInput();
  void beginRequest();
  int onHeadersComplete();
  int headDone();
  void flushClient();
  void onWritten(int status);
  void afterEvent();
  void finishRequest();
  void releaseRequest();
  void abortRequest();
  void closeConnection();
  void lingerThenClose();
  void protocolError(llhttp_errno_t err);
  void reject(int status, std::string_view message) { req_->exchange.reject(status, message); }
  // Where the current request's head starts: its bytes are not consumed until it is
  // complete, so this is the block's consumed position.
  const char* headBase() const { return in_.data() + in_.consumed(); }
  void armDeadline(DeadlineKind kind);
  void countUnfinishedHandshake();
  void disarmDeadline();

  // Every entry point (libuv callback, upstream event, filter resumption) opens a scope;
  // the outermost one runs afterEvent(), so a request is never finished and recycled
  // while a parser callback or a nested handler still uses it.
  struct EventScope {
    explicit EventScope(DownstreamConnection* c) : c_(c) { ++c_->depth_; }
    ~EventScope() {
      if (--c_->depth_ == 0) c_->afterEvent();
    }
    DownstreamConnection* c_;
  };

  static void onAllocCb(uv_handle_t* h, size_t hint, uv_buf_t* buf) noexcept;
  static void onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void onWriteCb(uv_write_t* req, int status) noexcept;
  static void onCloseCb(uv_handle_t* h) noexcept;

  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersCompleteCb(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);
  static int onChunkExtension(llhttp_t* p, const char* at, size_t len);
  static const llhttp_settings_t& parserSettings();

  // A TLS connection's session and its own write slot: handshake bytes flow before any
  // request exists, so they cannot use the Request's.
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

  // The loop's data is its Worker: an idle connection is hundreds of thousands of these,
  // so what can be found is not stored.
  Worker& worker() const { return *static_cast<Worker*>(tcp_.loop->data); }

  uv_tcp_t tcp_{};
  std::unique_ptr<TlsLink> tls_;
  Http1Request* req_ = nullptr;
  InputBlock in_;
  uint16_t listener_index_;  // into Config::listeners (not meaningful on the admin listener)
  uint16_t listener_label_ = 0;
  bool admin_;
  bool reading_ = false;
  bool read_paused_ = false;  // backpressure or a request being answered
  bool closing_ = false;
  bool close_after_response_ = false;
  bool draining_ = false;
  bool lingering_ = false;       // response sent, write side shut: discarding until EOF
  bool admitted_ = false;        // counted by the connection limiter
  bool counted_per_ip_ = false;  // ... and per address
  DeadlineKind deadline_kind_ = DeadlineKind::None;
  uint16_t depth_ = 0;
  uint8_t peer_ip16_[16]{};
};

}  // namespace gw
