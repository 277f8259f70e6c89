// A client connection and the request in flight on it.
//
// Contract:
// - A DownstreamConnection lives on one worker's loop and is freed only in its uv_close
//   callback. It holds no request object and no buffer while idle: those come from the
//   worker's pools when bytes arrive and go back when the response has been written.
// - Requests on a connection are handled strictly one at a time: the parser pauses after
//   each complete request, so pipelined requests are answered in order.
// - The connection is the UpstreamHandler of its request's upstream connection and the
//   RequestDriver its filters talk to.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <string>

#include "gateway/admin.h"
#include "gateway/buffer.h"
#include "gateway/deadline_list.h"
#include "gateway/filter.h"
#include "gateway/headers.h"
#include "gateway/http_head.h"
#include "gateway/tls_session.h"
#include "gateway/upstream.h"

namespace gw {

class Worker;
struct RequestTarget;
struct Generation;

// Per-request state; pooled per worker and reused, so that steady traffic allocates
// nothing once the pool is warm.
struct Request {
  Request();
  void reset();

  llhttp_t parser{};
  HeadCollector head;
  StringArena arena;
  HeaderList headers{&arena};
  RequestContext ctx;
  ResponseHead response;
  Buffer out;  // to the client
  // Body bytes an attempt that never connected had queued, for the next attempt.
  Buffer held_body;
  uv_write_t write_req{};
  size_t writing_bytes = 0;
  std::string path_buf;      // normalised path
  std::string upstream_path;  // after strip_prefix
  // The head sent upstream, but for the blank line (and the Host of an endpoint when the
  // client named none): built once, as the request is proxied, from views into the input
  // block, which move or go back to the pool as soon as body or pipelined bytes arrive.
  // Every attempt (after the bulkhead queue, a retry's backoff) sends it as views.
  Buffer upstream_head;
  bool host_from_endpoint = false;

  Generation* generation = nullptr;
  UpstreamConnection* upstream = nullptr;
  std::string_view upstream_name;
  std::string_view upstream_endpoint;

  size_t filters_run = 0;    // request phases that ran (for the response phase)
  bool head_complete = false;
  bool message_complete = false;  // the whole request was received
  bool response_started = false;  // a response head was queued for the client
  bool response_flushed = false;  // and handed to the socket: it can no longer be taken back
  bool response_complete = false;
  bool keep_alive = true;     // the client's connection can carry another request
  bool http10 = false;
  bool head_method = false;
  bool expect_continue = false;
  bool chunked_request = false;
  bool chunked_response = false;
  bool upgrade = false;  // a WebSocket upgrade on a websocket route
  bool tunnel = false;   // the upstream said 101: bytes now pass both ways
  std::string_view upgrade_value;
  bool waiting_filter = false;  // a filter returned StopWait
  bool waiting_upstream = false;  // queued by the upstream bulkhead
  bool retried = false;           // the stale-keep-alive retry was used
  bool attempt_open = false;      // an upstream attempt whose outcome is not yet known
  bool breaker_trial = false;     // that attempt is a half-open breaker's trial
  uint32_t attempts = 0;
  size_t endpoint_index = SIZE_MAX;
  uv_timer_t* retry_timer = nullptr;  // backoff before the next attempt
  size_t upstream_head_bytes = 0;     // the serialized head in front of the body upstream
  BodyFraming request_framing = BodyFraming::None;
  uint64_t content_length = 0;
  uint64_t body_bytes = 0;
  uint64_t chunk_extension_bytes = 0;
  int status = 0;
  std::string_view error_code;
  uint64_t start_ns = 0;
  uint64_t upstream_start_ns = 0;
  uint64_t upstream_end_ns = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  int reject_status = 0;  // set by parser callbacks that refuse the request
  // The TCP peer as text (ctx.peer_ip views it): formatted per request, so that an idle
  // connection keeps only its 16-byte form.
  char peer_ip_text[kIpTextMax];
  size_t parsed = 0;      // head bytes parsed so far (they stay unconsumed in the block)
};

// Which of the worker's deadline lists the connection is in.
enum class DeadlineKind : uint8_t { None, HeaderRead, BodyRead, Idle, WriteStall };

// A DeadlineNode by inheritance, so the worker's deadline lists get back to the connection
// with a static_cast rather than offsetof on a non-standard-layout class.
class DownstreamConnection final : public UpstreamHandler, public RequestDriver, public DeadlineNode {
 public:
  static void accept(Worker& worker, uv_stream_t* listener, size_t listener_index, bool admin);

  // Worker-driven events.
  void onDeadline();  // the deadline of deadline_kind_ passed
  void drain();                // close when idle, or after the current response
  void forceClose();

  // UpstreamHandler
  void onUpstreamHead(UpstreamResponseHead& head) override;
  void onUpstreamBody(const char* data, size_t len) override;
  void onUpstreamComplete() override;
  void onUpstreamReadDone() override;
  void onUpstreamError(UpstreamError e, bool response_started, bool reused) override;
  void onUpstreamDrained() override;
  void onUpstreamAvailable(bool expired) override;
  void onUpstreamTunnelData(const char* data, size_t len) override;

  // RequestDriver
  void sendLocalReply(int status, std::string_view error_code, std::string_view message) override;
  void sendResponse(int status, std::string_view content_type, std::string_view body) override;
  void continueRequest() override;
  std::string_view generateRequestId() override;

  DownstreamConnection* next_connection = nullptr;  // the worker's list of connections
  DownstreamConnection* prev_connection = nullptr;

 private:
  DownstreamConnection(size_t listener_index, bool admin);
  ~DownstreamConnection() = default;

  void startReading();
  void stopReading();
  void watchBody();
  void countBadResponse(UpstreamError e, bool response_started);
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
  void runRequestFilters();
  void redirectToHttps(const RequestTarget& target);
  void proxyRequest();
  void startUpstream();
  UpstreamPool& upstreamPool();
  void endAttempt(bool failed);
  bool retryPossible(bool trigger, bool body_unsent);
  void scheduleRetry();
  void cancelRetryTimer();
  void serializeUpstreamHead();
  void answerAdmin();
  // `extra_headers`: added after Content-Type (the admin page's policy); copied.
  void respond(int status, std::string_view content_type, std::string_view body,
               std::string_view error_code, const HeaderPairs* extra_headers = nullptr);
  void writeResponseHead(int status);
  void runResponseFilters();
  void flushClient();
  void onWritten(int status);
  void afterEvent();
  void finishRequest();
  void releaseRequest();
  void recordMetrics(const Request& r);
  // Ends every tie of the request to an upstream: connection, open attempt, bulkhead
  // queue, retry backoff.
  void detachUpstream();
  void abortRequest();
  void closeConnection();
  void lingerThenClose();
  void protocolError(llhttp_errno_t err);
  // The gateway's own refusal (not a filter's): counted by reason, then a local reply.
  void reject(int status, std::string_view message);
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
  Buffer& pendingOutput();  // what still waits to reach the socket, plain or encrypted
  bool outputFlushed() const;  // the current response has fully reached the socket

  // The loop's data is its Worker: an idle connection is hundreds of thousands of these,
  // so what can be found is not stored.
  Worker& worker() const { return *static_cast<Worker*>(tcp_.loop->data); }

  uv_tcp_t tcp_{};
  std::unique_ptr<TlsLink> tls_;
  Request* req_ = nullptr;
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
