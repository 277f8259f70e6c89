// One request's life from a complete, validated head onwards, whatever protocol carried
// it: routing, the filter chain, upstream attempts and retries, response filters, local
// replies, metrics and the access log.
//
// Contract:
// - An Exchange is pooled per worker (inside its codec's per-request object) and reused,
//   so that steady traffic allocates nothing once the pool is warm.
// - It talks to the client only through its DownstreamStream and never sees a socket or
//   a wire format. Its codec feeds it: begin() at the request's first byte, then
//   identifyClient() and onRequestHead() once the head passed the codec's checks, body
//   bytes, onRequestComplete(); and finish() once the response has been written.
// - It is the UpstreamHandler of its upstream connection and the RequestDriver its
//   filters talk to. Every such entry point holds an EventScope on its stream, so the
//   codec never recycles the exchange while one of them still runs.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

#include "gateway/admin/admin.h"
#include "gateway/buffer.h"
#include "gateway/downstream_stream.h"
#include "gateway/filter.h"
#include "gateway/headers.h"
#include "gateway/http_util.h"
#include "gateway/tracing/request_trace.h"
#include "gateway/upstream/upstream.h"

namespace gw {

class Worker;
struct Generation;
struct RequestTarget;

// grpc-timeout in milliseconds (rounded up), 0 when absent or malformed.
uint64_t parseGrpcTimeout(std::string_view value);

class Exchange final : public UpstreamHandler, public RequestDriver {
 public:
  Exchange();
  void reset();

  // --- driven by the codec ---
  void begin(DownstreamStream& stream, Worker& worker);
  // Takes the configuration of the generation pinned by begin() and resolves the real
  // client (trusted_proxies): called before the codec's own checks of the head, so that
  // its refusals log the client too.
  void identifyClient();
  // The head is complete and valid HTTP: method, path, query, host, headers, framing
  // and head_complete are set. `target` is the request target as received.
  void onRequestHead(const RequestTarget& target, bool websocket);
  // Parses the request target and normalises its path into ctx.path and ctx.query. False:
  // the codec answers 400. "OPTIONS *" is refused too (as nginx does): routed as "/" it
  // would change meaning.
  bool acceptTarget(std::string_view raw, RequestTarget& target);
  // False when the body passes the request's limit (the codec answers 413).
  bool onRequestBody(const char* data, size_t len);
  void onRequestComplete();
  // After a 101: client bytes to the upstream as they are.
  void onTunnelBytes(const char* data, size_t len);
  // Sends what the request queued upstream (copying what the kernel did not take); then
  // upstreamCongested() says whether the codec should stop reading the client.
  void flushUpstream() {
    if (upstream) upstream->flush();
  }
  bool upstreamCongested() const { return upstream && upstream->pendingBytes() > kHighWatermark; }
  // The stream's queued response bytes went down: the upstream may be read again.
  void onResponseDrained();
  // The request has a body still to come but nowhere to put it (queued by the bulkhead,
  // between attempts) and no answer yet: reading the body now would lose it.
  bool bodyAwaitsUpstream() const {
    return head_complete && !request_complete && request_framing != BodyFraming::None &&
           !upstream && !response_started && !tunnel;
  }
  // "HTTP/1.0", "HTTP/1.1" or "HTTP/2": the log's field and the metric's label.
  std::string_view protocol() const { return stream_->protocol(); }
  // The gateway's own refusal (not a filter's): counted by reason, then a local reply.
  void reject(int status, std::string_view message);
  // The client is gone or the stream failed: ends every tie to an upstream and to a
  // waiting filter. Not a release (see finish()).
  void abort();
  // The response was written (or the stream closed): metrics, access log, generation.
  void finish();

  // UpstreamHandler
  void onUpstreamHead(UpstreamResponseHead& head) override;
  void onUpstreamBody(const char* data, size_t len) override;
  void onUpstreamTrailers(HeaderList& trailers) override;
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

  // --- the request's state: set by the codec up to the head, read by it and the log ---
  StringArena arena;
  HeaderList headers{&arena};
  HeaderList request_trailers{&arena};  // the codec's, forwarded with the body's end
  RequestContext ctx;
  ResponseHead response;
  std::string path_buf;  // normalised path
  std::string_view upgrade_value;  // the client's Upgrade header, arena-owned
  BodyFraming request_framing = BodyFraming::None;  // Chunked: length unknown
  uint64_t content_length = 0;
  bool head_method = false;
  bool head_complete = false;
  bool request_complete = false;  // the whole request was received
  bool response_started = false;  // a response head was sent to the stream
  bool response_complete = false;
  bool upgrade = false;         // a WebSocket upgrade on a websocket route
  bool tunnel = false;          // the upstream said 101: bytes now pass both ways
  bool waiting_filter = false;  // a filter returned StopWait
  UpstreamStream* upstream = nullptr;
  // A gRPC request (SPEC §8: HTTP/2, content-type application/grpc…): the gateway's own
  // answers are trailers-only gRPC responses.
  bool grpc = false;
  std::string_view grpc_status;  // the response's, arena-owned; empty: none (yet)
  std::string_view upstream_name;
  std::string_view upstream_endpoint;
  int status = 0;
  std::string_view error_code;
  uint64_t start_ns = 0;
  uint64_t upstream_start_ns = 0;
  uint64_t upstream_end_ns = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  tracing::RequestTrace trace;  // active only with a `tracing` section

 private:
  // Backpressure: stop reading the sending side when the receiving side has this much
  // queued, resume below the low mark. Bounds memory per proxied stream to about
  // 2 x kHighWatermark whatever the body size.
  static constexpr size_t kHighWatermark = 256 * 1024;
  static constexpr size_t kLowWatermark = 64 * 1024;

  // Holds the stream's event depth for the duration of an entry point.
  struct EventScope {
    explicit EventScope(Exchange* e) : s_(e->stream_) { s_->enterEvent(); }
    ~EventScope() { s_->leaveEvent(); }
    DownstreamStream* s_;
  };

  void redirectToHttps(const RequestTarget& target);
  // Sets and returns `grpc` (the head's content type decides).
  bool grpcRequest();
  void respondGrpc(int code, std::string_view error, std::string_view message);
  void route(bool websocket);
  void runRequestFilters();
  void answerAdmin();
  // `extra_headers`: added after Content-Type (the admin page's policy); copied.
  void respond(int status, std::string_view content_type, std::string_view body,
               std::string_view error_code, const HeaderPairs* extra_headers = nullptr);
  void runResponseFilters();
  void sendResponseHead(int status, bool length_known);
  void recordMetrics();

  // exchange_upstream.cc
  void proxyRequest();
  void serializeUpstreamHead();
  void buildHttp2Fields();
  void startUpstream();
  UpstreamPool& upstreamPool();
  void endAttempt(bool failed);
  bool retryPossible(bool trigger, bool body_unsent);
  void scheduleRetry(bool backoff = true);
  void cancelRetryTimer();
  void countBadResponse(UpstreamError e, bool response_started);
  // Ends every tie of the request to an upstream: connection, open attempt, bulkhead
  // queue, retry backoff.
  void detachUpstream();

  DownstreamStream* stream_ = nullptr;
  Worker* worker_ = nullptr;
  Generation* generation_ = nullptr;
  bool admin_ = false;  // the stream's listener is the admin one
  bool aborted_ = false;
  size_t filters_run_ = 0;  // request phases that ran (for the response phase)
  std::string upstream_path_;  // after strip_prefix
  // The head sent upstream, built once as the request is proxied, in the forms its
  // upstream may speak. HTTP/1.1: but for the blank line (and the Host of an endpoint when
  // the client named none), from views into the input block, which move or go back to the
  // pool as soon as body or pipelined bytes arrive; every attempt (after the bulkhead
  // queue, a retry's backoff) sends it as views. HTTP/2: fields in the arena.
  Buffer upstream_head_;
  HeaderList upstream_fields_{&arena};
  UpstreamRequestHead upstream_request_;
  bool host_from_endpoint_ = false;
  // Body bytes an attempt that never reached its upstream had queued (unframed), for the
  // next attempt, whatever protocol it speaks.
  Buffer held_body_;
  uint64_t grpc_timeout_ms_ = 0;  // the client's grpc-timeout; 0: none
  int refused_status_ = 0;  // a gRPC refusal's HTTP-equivalent status (its own is 200)
  bool waiting_upstream_ = false;  // queued by the upstream bulkhead
  bool retried_ = false;           // the stale-keep-alive retry was used
  uint8_t refusals_ = 0;           // attempts the upstream refused unprocessed
  bool attempt_open_ = false;      // an upstream attempt whose outcome is not yet known
  bool breaker_trial_ = false;     // that attempt is a half-open breaker's trial
  uint32_t attempts_ = 0;
  size_t endpoint_index_ = SIZE_MAX;
  uv_timer_t* retry_timer_ = nullptr;  // backoff before the next attempt
  uint64_t body_bytes_ = 0;
  // The TCP peer as text (ctx.peer_ip views it): formatted per request, so that an idle
  // connection keeps only its 16-byte form.
  char peer_ip_text_[kIpTextMax];
};

}  // namespace gw
