// The exchange's upstream side: the request re-serialised for the upstream (HTTP/1.1 or
// HTTP/2, SPEC §8) and its body forwarded, attempts on the pool,
// retries with their budget and backoff, the circuit breaker's bookkeeping, and the
// upstream's response relayed to the stream.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "gateway/client_ip.h"
#include "gateway/exchange.h"
#include "gateway/metrics.h"
#include "gateway/path.h"
#include "gateway/router.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// What both upstream protocols make of the client's fields: Content-Length and Expect go
// (the gateway frames the body itself), the X-Forwarded-* fields are set aside to be
// written again (a trusted proxy's Proto and Host kept), the rest goes to `field` in order,
// Host included: each protocol places it its own way.
struct ForwardedFields {
  std::string_view proto, host;  // a trusted proxy's X-Forwarded-Proto and -Host
  size_t for_bytes = 0;          // X-Forwarded-For's values, each with its ", "
};

template <class Field>
ForwardedFields forwardFields(const HeaderList& headers, bool trusted_peer, Field&& field) {
  ForwardedFields fwd;
  for (const Header& h : headers) {
    std::string_view n = h.name;
    if (equalsIgnoreCase(n, "content-length") || equalsIgnoreCase(n, "expect")) continue;
    if (equalsIgnoreCase(n, "x-forwarded-for")) {
      if (!h.value.empty()) fwd.for_bytes += h.value.size() + 2;
      continue;
    }
    if (equalsIgnoreCase(n, "x-forwarded-proto")) {
      if (trusted_peer) fwd.proto = h.value;
      continue;
    }
    if (equalsIgnoreCase(n, "x-forwarded-host")) {
      if (trusted_peer) fwd.host = h.value;
      continue;
    }
    field(n, h.value);
  }
  return fwd;
}

// Every X-Forwarded-For value, in order (RFC 9110 §5.3: one list); the peer follows.
template <class Value>
void forEachForwardedFor(const HeaderList& headers, Value&& value) {
  for (const Header& h : headers) {
    if (equalsIgnoreCase(h.name, "x-forwarded-for") && !h.value.empty()) value(h.value);
  }
}

bool isIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

}  // namespace

void Exchange::proxyRequest() {
  if (ctx.route->admin) {
    answerAdmin();
    return;
  }
  const RouteConfig& r = *ctx.route;
  if (r.strip_prefix.empty()) {
    upstream_path_.assign(ctx.path);
  } else {
    applyStripPrefix(ctx.path, r.strip_prefix, upstream_path_);
  }
  if (request_framing != BodyFraming::None) {
    stream_->requestBodyWanted();
    if (aborted_) return;
  }
  serializeUpstreamHead();
  upstream_start_ns = monotonicNs();
  upstreamPool().countRequest();
  startUpstream();
}

void Exchange::buildHttp2Fields() {
  // The same request as serializeUpstreamHead() writes for HTTP/1.1, as HTTP/2 fields:
  // pseudo-headers first, Host as :authority, no connection-specific field (RFC 9113
  // §8.2.2), "te: trailers" for gRPC (its servers require it).
  HeaderList& f = upstream_fields_;
  const UpstreamConfig& uc = upstreamPool().config();
  f.addRef(":method", arena.copy(ctx.method));
  f.addRef(":scheme", uc.tls ? "https" : "http");
  if (!ctx.host.empty()) f.addRef(":authority", arena.copy(ctx.host));
  host_from_endpoint_ = ctx.host.empty();  // the endpoint's, per attempt
  size_t path_len = upstream_path_.size() + (ctx.query.empty() ? 0 : 1 + ctx.query.size());
  char* path = arena.allocate(path_len);
  std::memcpy(path, upstream_path_.data(), upstream_path_.size());
  if (!ctx.query.empty()) {
    path[upstream_path_.size()] = '?';
    std::memcpy(path + upstream_path_.size() + 1, ctx.query.data(), ctx.query.size());
  }
  f.addRef(":path", {path, path_len});
  bool trusted_peer = isTrusted(ctx.config->trusted_proxies, stream_->peerIp16());
  ForwardedFields fwd = forwardFields(headers, trusted_peer, [&](std::string_view n, std::string_view v) {
    if (equalsIgnoreCase(n, "host") || isHopByHopHeader(n)) return;  // :authority; RFC 9113 §8.2.2
    f.addRef(arena.copyLowerCase(n), arena.copy(v));
  });
  size_t xff_len = fwd.for_bytes + ctx.peer_ip.size();
  char* xff = arena.allocate(xff_len);
  size_t at = 0;
  forEachForwardedFor(headers, [&](std::string_view v) {
    std::memcpy(xff + at, v.data(), v.size());
    std::memcpy(xff + at + v.size(), ", ", 2);
    at += v.size() + 2;
  });
  std::memcpy(xff + at, ctx.peer_ip.data(), ctx.peer_ip.size());
  f.addRef("x-forwarded-for", {xff, xff_len});
  f.addRef("x-forwarded-proto", !fwd.proto.empty() ? arena.copy(fwd.proto) : (ctx.tls ? "https" : "http"));
  if (!fwd.host.empty() || !ctx.host.empty()) {
    f.addRef("x-forwarded-host", arena.copy(!fwd.host.empty() ? fwd.host : ctx.host));
  }
  if (grpc) f.addRef("te", "trailers");
  if (request_framing == BodyFraming::ContentLength) {
    char* digits = arena.allocate(20);  // a uint64's digits, no terminator
    auto end = std::to_chars(digits, digits + 20, content_length).ptr;
    f.addRef("content-length", {digits, size_t(end - digits)});
  }
}

UpstreamPool& Exchange::upstreamPool() {
  return worker_->pool(generation_, ctx.route->upstream_index);
}

void Exchange::serializeUpstreamHead() {
  const UpstreamConfig& uc = upstreamPool().config();
  if (uc.protocol != UpstreamProtocol::Http1) buildHttp2Fields();
  if (uc.protocol == UpstreamProtocol::H2) return;
  Buffer& o = upstream_head_;
  o.append(ctx.method);
  o.append(" ", 1);
  o.append(upstream_path_);
  if (!ctx.query.empty()) {
    o.append("?", 1);
    o.append(ctx.query);
  }
  o.append(" HTTP/1.1\r\n", 11);
  bool has_host = false;
  bool trusted_peer = isTrusted(ctx.config->trusted_proxies, stream_->peerIp16());
  ForwardedFields fwd = forwardFields(headers, trusted_peer, [&](std::string_view n, std::string_view v) {
    if (equalsIgnoreCase(n, "host")) {
      has_host = true;
      // absolute-form: the authority wins over the Host header (RFC 9112 §3.2.2)
      v = ctx.host;
    }
    o.appendFieldLine(n, v);
  });
  if (!has_host) {
    if (ctx.host.empty()) {
      host_from_endpoint_ = true;  // known per attempt
    } else {
      o.appendFieldLine("Host", ctx.host);
    }
  }
  o.append("X-Forwarded-For: ");
  if (fwd.for_bytes > 0) {
    forEachForwardedFor(headers, [&](std::string_view v) {
      o.append(v);
      o.append(", ", 2);
    });
  }
  o.append(ctx.peer_ip);
  o.append("\r\n", 2);
  o.appendFieldLine("X-Forwarded-Proto", !fwd.proto.empty() ? fwd.proto : (ctx.tls ? "https" : "http"));
  if (!fwd.host.empty() || !ctx.host.empty()) {
    o.appendFieldLine("X-Forwarded-Host", !fwd.host.empty() ? fwd.host : ctx.host);
  }
  if (upgrade) {
    o.append("Connection: Upgrade\r\n");
    o.appendFieldLine("Upgrade", upgrade_value);
  }
  if (request_framing == BodyFraming::ContentLength) {
    o.append("Content-Length: ");
    o.appendDecimal(content_length);
    o.append("\r\n", 2);
  } else if (request_framing == BodyFraming::Chunked) {
    o.append("Transfer-Encoding: chunked\r\n");
  }
  if (!host_from_endpoint_) o.append("\r\n", 2);  // else after the Host, per attempt
}

void Exchange::startUpstream() {
  UpstreamPool& pool = upstreamPool();
  UpstreamStream* up = nullptr;
  bool trial = false;
  switch (pool.acquire(this, endpoint_index_, &up, &trial)) {
    case AcquireResult::Connection:
      break;
    case AcquireResult::Queued:
      waiting_upstream_ = true;
      return;
    case AcquireResult::NoEndpoint:
      reject(503, "No healthy upstream endpoint");
      return;
    case AcquireResult::Overflow:
      reject(503, "Upstream connection limit reached");
      return;
  }
  bool body = request_framing != BodyFraming::None;
  // An HTTP/2 upstream has no Upgrade (RFC 9113 §8.6).
  if (upgrade && up->protocol() == UpstreamProtocolUsed::H2) {
    size_t e = up->endpointIndex();
    up->abort();
    if (trial) pool.endpointState(e).releaseTrial();
    reject(502, "Upstream speaks HTTP/2: no protocol upgrade");
    return;
  }
  upstream = up;
  // A body that waited unparsed while the request was queued may be parsed from now on:
  // unblocked before anything here (a flush's drain callback) parses on.
  if (body && !request_complete) stream_->requestBodyUnblocked();
  breaker_trial_ = trial;
  endpoint_index_ = up->endpointIndex();
  attempt_open_ = true;
  ++attempts_;
  pool.requestStarted(endpoint_index_);
  upstream_endpoint = up->endpoint().text;
  const RouteConfig& r = *ctx.route;
  uint64_t timeout = uint64_t((r.timeout ? *r.timeout : ctx.config->timeouts.upstream_response).count());
  // A gRPC deadline shorter than the route's is the upstream's (SPEC §8).
  if (grpc_timeout_ms_ && (timeout == 0 || grpc_timeout_ms_ < timeout)) timeout = grpc_timeout_ms_;
  UpstreamRequestHead& h = upstream_request_;
  h.http1 = &upstream_head_;
  h.h2 = &upstream_fields_;
  h.host_from_endpoint = host_from_endpoint_;
  h.body = body;
  h.chunked = request_framing == BodyFraming::Chunked;
  h.head_request = head_method;
  h.response_timeout_ms = timeout;
  up->sendHead(h);
  if (upstream != up) return;  // an HTTP/2 session that could not take the stream failed it
  if (!held_body_.empty()) up->resendBody(held_body_);  // what an attempt that never got there took
  if (body && request_complete) up->endRequest(&request_trailers);
  up->flush();
}

void Exchange::endAttempt(bool failed) {
  if (!attempt_open_) return;
  attempt_open_ = false;
  UpstreamPool& pool = upstreamPool();
  pool.requestEnded(endpoint_index_);
  EndpointState& ep = pool.endpointState(endpoint_index_);
  const UpstreamConfig& uc = pool.config();
  const CircuitBreakerConfig* cb = uc.circuit_breaker ? &*uc.circuit_breaker : nullptr;
  bool changed = failed ? ep.recordFailure(cb, monotonicMs(), breaker_trial_)
                        : ep.recordSuccess(breaker_trial_);
  if (changed) publishBreakerGauge(pool.state(), uc.metrics_label, monotonicMs());
  breaker_trial_ = false;
}

bool Exchange::retryPossible(bool trigger, bool body_unsent) {
  const RetryConfig& rc = upstreamPool().config().retries;
  // Only requests that can be sent again as they were: idempotent, no body streamed.
  return trigger && attempts_ <= rc.attempts &&
         (request_framing == BodyFraming::None || body_unsent) && isIdempotent(ctx.method) &&
         upstreamPool().takeRetry();
}

void Exchange::scheduleRetry(bool backoff) {
  const RetryConfig& rc = upstreamPool().config().retries;
  // Exponential backoff with full jitter: uniform in [0, base * 2^(attempt-1)].
  uint64_t cap = backoff ? uint64_t(rc.backoff.count()) << std::min<uint32_t>(attempts_ - 1, 10) : 0;
  uint64_t rnd[2];
  worker_->random128(rnd);
  uint64_t delay = cap ? rnd[0] % (cap + 1) : 0;
  retry_timer_ = new uv_timer_t;
  uv_timer_init(worker_->loop(), retry_timer_);
  retry_timer_->data = this;
  uv_timer_start(retry_timer_, [](uv_timer_t* t) {
    auto* e = static_cast<Exchange*>(t->data);
    EventScope scope(e);
    e->cancelRetryTimer();
    if (e->aborted_) return;
    e->startUpstream();
  }, delay, 0);
}

void Exchange::cancelRetryTimer() {
  if (!retry_timer_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(retry_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  retry_timer_ = nullptr;
}

void Exchange::detachUpstream() {
  cancelRetryTimer();
  if (waiting_upstream_) {
    waiting_upstream_ = false;
    upstreamPool().cancelWait(this);
  }
  if (attempt_open_) {
    // The outcome is unknown: neither a failure nor a success of the endpoint.
    attempt_open_ = false;
    upstreamPool().requestEnded(endpoint_index_);
    if (breaker_trial_) upstreamPool().endpointState(endpoint_index_).releaseTrial();
  }
  if (upstream) {
    upstream->abort();
    upstream = nullptr;
  }
}

bool Exchange::onRequestBody(const char* data, size_t len) {
  body_bytes_ += len;
  if (body_bytes_ > ctx.max_body_bytes) return false;
  if (!upstream) return true;  // answered already: the body is dropped
  upstream->sendBody(data, len);
  return true;
}

void Exchange::onRequestComplete() {
  request_complete = true;
  if (upstream && request_framing != BodyFraming::None) upstream->endRequest(&request_trailers);
}

void Exchange::onTunnelBytes(const char* data, size_t len) {
  upstream->sendBody(data, len);
  bytes_in += len;
}

void Exchange::onResponseDrained() {
  if (upstream && stream_->queuedBytes() < kLowWatermark) upstream->resumeReading();
}

// ---------------------------------------------------------------------------------------
// UpstreamHandler

void Exchange::onUpstreamAvailable(bool expired) {
  EventScope scope(this);
  if (aborted_ || !waiting_upstream_) return;
  waiting_upstream_ = false;
  if (expired) {
    reject(503, "Upstream connection limit reached");
    return;
  }
  startUpstream();
  if (aborted_ || !upstream || request_complete) return;
  stream_->resumeRequestBody();
}

void Exchange::onUpstreamHead(UpstreamResponseHead& head) {
  EventScope scope(this);
  bool failed = head.status == 502 || head.status == 503 || head.status == 504;
  endAttempt(failed);
  // Every upstream answer counts, the ones a retry hides included.
  uint16_t upstream_label = upstreamPool().config().metrics_label;
  uint64_t attempt_end = monotonicNs();
  metrics::local().add(metrics::Id::UpstreamRequestsTotal,
                       {upstream_label, metrics::statusLabel(head.status), 0});
  metrics::local().observe(metrics::Id::UpstreamRequestDuration, {upstream_label, 0, 0},
                           attempt_end - upstream_start_ns);
  const std::vector<int>& retry_on = upstreamPool().config().retries.on_statuses;
  if (std::find(retry_on.begin(), retry_on.end(), head.status) != retry_on.end() &&
      retryPossible(true, false)) {
    // This answer is not forwarded: the connection is dropped with its body.
    upstream->abort();
    upstream = nullptr;
    scheduleRetry();
    return;
  }
  upstream_end_ns = attempt_end;
  response.status = head.status;
  response.local_reply = false;
  // Taken, not copied: the views are used before this call returns (the response head is
  // sent below or the request fails).
  response.headers.clear();
  response.headers.swapFields(*head.headers);
  if (grpc) {
    bool found = false;
    std::string_view grpc_status_field = response.headers.get("grpc-status", &found);  // trailers-only
    if (found) grpc_status = arena.copy(grpc_status_field);
  }
  removeHopByHop(response.headers);
  // A proxy with a clock adds the Date an upstream left out (RFC 9110 §6.6.1).
  if (!response.headers.has("date")) response.headers.addRef("Date", worker_->httpDate());
  bool length_known =
      head.framing == BodyFraming::None || head.framing == BodyFraming::ContentLength;
  if (head.status == 101) {
    if (!upgrade) {
      // A 101 nobody asked for would leave the client speaking HTTP into a tunnel.
      upstream->abort();
      upstream = nullptr;
      reject(502, "Upstream switched protocols unasked");
      return;
    }
    response.headers.remove("content-length");
    response.headers.addRef("Connection", "Upgrade");
    response.headers.addRef("Upgrade", upgrade_value);
    tunnel = true;
  }
  runResponseFilters();
  // The stream copies the head out: views into the upstream's block die with this
  // callback. Everything still referenced (names/values from filters) lives in the arena.
  sendResponseHead(head.status, length_known);
}

void Exchange::onUpstreamBody(const char* data, size_t len) { stream_->sendBody(data, len); }

void Exchange::onUpstreamTrailers(HeaderList& trailers) {
  EventScope scope(this);
  if (aborted_) return;
  if (grpc) {
    bool found = false;
    std::string_view status = trailers.get("grpc-status", &found);
    if (found) grpc_status = arena.copy(status);
  }
  stream_->sendTrailers(trailers);  // copied by the stream
}

void Exchange::onUpstreamTunnelData(const char* data, size_t len) {
  EventScope scope(this);
  stream_->sendBody(data, len);
}

void Exchange::onUpstreamReadDone() {
  EventScope scope(this);
  stream_->flush();
  if (aborted_) return;
  if (upstream && stream_->queuedBytes() > kHighWatermark) upstream->pauseReading();
  if (tunnel) stream_->relayPendingTunnelBytes();  // client bytes sent before the 101
}

void Exchange::onUpstreamComplete() {
  EventScope scope(this);
  stream_->endResponse();
  response_complete = true;
  UpstreamStream* up = upstream;
  upstream = nullptr;
  if (!request_complete) {
    // The upstream answered before the whole body arrived: that connection may still
    // expect body bytes, and so does the stream.
    up->abort();
    stream_->endAfterResponse();
  } else {
    up->release();
  }
  stream_->flush();
}

void Exchange::onUpstreamError(UpstreamError e, bool response_began, bool reused) {
  EventScope scope(this);
  if (aborted_) return;
  UpstreamStream* failed = upstream;
  upstream = nullptr;
  if (tunnel) {
    // The upstream ended the tunnel: deliver what it sent, then close.
    stream_->endAfterResponse();
    response_complete = true;
    stream_->endResponse();
    stream_->flush();
    return;
  }
  upstream_end_ns = monotonicNs();
  if (!response_began && reused && !retried_ && e == UpstreamError::Reset &&
      request_framing == BodyFraming::None && isIdempotent(ctx.method)) {
    // A pooled connection the upstream had closed: try once more on a fresh one. Not the
    // endpoint's fault, and not one of the configured retries.
    retried_ = true;
    endAttempt(false);
    --attempts_;
    startUpstream();
    return;
  }
  // The body bytes an attempt that never reached its upstream had queued, unframed, for the
  // next attempt (false: some went out, or cannot be told apart).
  auto holdUnsentBody = [&] {
    return request_framing == BodyFraming::None || failed->takeUnsentBody(held_body_);
  };
  if (e == UpstreamError::Refused && !response_began && refusals_ < 2 && failed && holdUnsentBody()) {
    // Refused unprocessed (RFC 9113 §8.7: safe to send again, whatever the method), or
    // `auto` found HTTP/2 on a connection that had the request queued as HTTP/1.1: not the
    // endpoint's fault, and not one of the configured retries. Sent again from the retry
    // timer, never from inside the connection's callback.
    ++refusals_;
    endAttempt(false);
    --attempts_;
    scheduleRetry(/*backoff=*/false);
    return;
  }
  endAttempt(true);
  countBadResponse(e, response_began);
  // An upstream never reached has none of the body: what it queued goes to the next attempt.
  bool never_reached = e == UpstreamError::ConnectFailed || e == UpstreamError::ConnectTimeout;
  bool connect_failure = never_reached || e == UpstreamError::TlsFailed || e == UpstreamError::NoHttp2;
  if (!response_began &&
      retryPossible(connect_failure && upstreamPool().config().retries.on_connect_failure,
                    never_reached && failed && holdUnsentBody())) {
    scheduleRetry();
    return;
  }
  // Not reaching the upstream at all is 503, as the connect timeout is (SPEC §2) and as
  // Envoy and HAProxy answer; an upstream reached but unusable or misbehaving is 502.
  switch (e) {
    case UpstreamError::ConnectFailed:
      reject(503, "Upstream unreachable");
      break;
    case UpstreamError::ConnectTimeout:
      reject(503, "Upstream connect timeout");
      break;
    case UpstreamError::TlsFailed:
      reject(502, "Upstream TLS handshake failed");
      break;
    case UpstreamError::NoHttp2:
      reject(502, "Upstream did not agree to HTTP/2 (ALPN)");
      break;
    case UpstreamError::ResponseTimeout:
      reject(504, "Upstream response timeout");
      break;
    case UpstreamError::Reset:
    case UpstreamError::Refused:
    case UpstreamError::BadResponse:
      reject(502, "Invalid or interrupted upstream response");
      break;
    case UpstreamError::HeadTooLarge:
      reject(502, "Upstream response header fields too large");
      break;
  }
}

void Exchange::countBadResponse(UpstreamError e, bool response_began) {
  static const uint16_t kHeadTooLarge = metrics::labelId("head_too_large");
  static const uint16_t kMalformed = metrics::labelId("malformed");
  static const uint16_t kTruncated = metrics::labelId("truncated");
  uint16_t reason = e == UpstreamError::HeadTooLarge  ? kHeadTooLarge
                    : e == UpstreamError::BadResponse ? kMalformed
                    : e == UpstreamError::Reset && response_began ? kTruncated
                                                                  : 0;
  if (reason == 0) return;
  uint16_t upstream_label = upstreamPool().config().metrics_label;
  metrics::local().add(metrics::Id::UpstreamBadResponses, {upstream_label, reason, 0});
}

void Exchange::onUpstreamDrained() {
  EventScope scope(this);
  if (stream_->requestBodyPaused() && (!request_complete || tunnel) && !waiting_filter &&
      upstream && upstream->pendingBytes() < kLowWatermark) {
    stream_->resumeRequestBody();
  }
}

}  // namespace gw
