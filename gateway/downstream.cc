#include "gateway/downstream.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "gateway/access_log.h"
#include "gateway/admin.h"
#include "gateway/client_ip.h"
#include "gateway/http_util.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/path.h"
#include "gateway/router.h"
#include "gateway/server.h"
#include "gateway/stream_write.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// Backpressure: stop reading the sending side when the receiving side has this much
// queued, resume below the low mark. Bounds memory per proxied stream to about
// 2 x kHighWatermark whatever the body size.
constexpr size_t kHighWatermark = 256 * 1024;
constexpr size_t kLowWatermark = 64 * 1024;
constexpr size_t kMaxRequestHeaders = 128;
constexpr size_t kMaxChunkExtensionBytes = 4096;

DownstreamConnection* fromParser(llhttp_t* p) { return static_cast<DownstreamConnection*>(p->data); }

void appendNumber(Buffer& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, size_t(r.ptr - buf));
}

void appendHex(Buffer& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
  out.append(buf, size_t(r.ptr - buf));
}

void appendHeader(Buffer& out, std::string_view name, std::string_view value) {
  out.appendFieldLine(name, value);
}

uint64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// The request has a body still to come but no upstream connection to take it (queued by
// the bulkhead, or between attempts) and no answer yet: parsing the body now would lose it.
bool bodyAwaitsUpstream(const Request& r) {
  return r.head_complete && !r.message_complete && r.request_framing != BodyFraming::None &&
         !r.upstream && !r.response_started && !r.tunnel;
}

bool isIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

// Removes the hop-by-hop headers and those the Connection header names.
void removeHopByHop(HeaderList& headers) {
  for (size_t i = 0; i < headers.size(); ++i) {
    if (equalsIgnoreCase(headers[i].name, "connection")) {
      std::string_view v = headers[i].value;
      forEachToken(v, [&](std::string_view tok) {
        if (!equalsIgnoreCase(tok, "close") && !equalsIgnoreCase(tok, "keep-alive")) {
          headers.remove(tok);
        }
      });
    }
  }
  auto& f = headers.fields();
  f.erase(std::remove_if(f.begin(), f.end(), [](const Header& h) { return isHopByHopHeader(h.name); }),
          f.end());
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Request

Request::Request() {
  response.headers.setArena(&arena);
  ctx.arena = &arena;
  ctx.response_headers_to_add.setArena(&arena);
}

void Request::reset() {
  head.reset();
  headers.clear();
  response.clear();
  ctx.recycle();  // ctx.worker is set again by the connection that takes the request
  arena.reset();
  out.clear();
  held_body.clear();
  upstream_head.clear();
  host_from_endpoint = false;
  writing_bytes = 0;
  generation = nullptr;
  upstream = nullptr;
  upstream_name = upstream_endpoint = {};
  filters_run = 0;
  head_complete = message_complete = response_started = response_flushed = response_complete = false;
  keep_alive = true;
  http10 = head_method = expect_continue = chunked_request = chunked_response = false;
  upgrade = tunnel = false;
  upgrade_value = {};
  waiting_filter = waiting_upstream = retried = attempt_open = breaker_trial = false;
  attempts = 0;
  endpoint_index = SIZE_MAX;
  retry_timer = nullptr;
  upstream_head_bytes = 0;
  request_framing = BodyFraming::None;
  content_length = body_bytes = chunk_extension_bytes = 0;
  status = 0;
  error_code = {};
  start_ns = upstream_start_ns = upstream_end_ns = 0;
  bytes_in = bytes_out = 0;
  reject_status = 0;
  parsed = 0;
}

// ---------------------------------------------------------------------------------------
// Connection life

DownstreamConnection::DownstreamConnection(size_t listener_index, bool admin)
    : listener_index_(uint16_t(listener_index)), admin_(admin) {}

void DownstreamConnection::accept(Worker& worker, uv_stream_t* listener, size_t listener_index,
                                  bool admin) {
  auto* c = new DownstreamConnection(listener_index, admin);
  uv_tcp_init(worker.loop(), &c->tcp_);
  c->tcp_.data = c;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp_)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp_), [](uv_handle_t* h) {
      delete static_cast<DownstreamConnection*>(h->data);
    });
    return;
  }
  const Config& cfg = *worker.currentGeneration()->runtime->config;
  c->listener_label_ = admin ? 0 : cfg.listeners[listener_index].metrics_label;
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    toIp16(reinterpret_cast<sockaddr*>(&ss), c->peer_ip16_);
  }
  if (!admin) {
    auto verdict = worker.server().connectionLimiter().admit(c->peer_ip16_, &c->counted_per_ip_);
    if (verdict != ConnectionLimiter::Verdict::Admitted) {
      // Refused at once (closed before any byte is read), counted, logged at most once a
      // second: a flood must not turn into a flood of log lines.
      bool per_ip = verdict == ConnectionLimiter::Verdict::TooManyFromAddress;
      static const uint16_t kTotal = metrics::labelId("max_connections");
      static const uint16_t kPerIp = metrics::labelId("max_connections_per_ip");
      metrics::local().add(metrics::Id::ConnectionsRejected,
                           {c->listener_label_, per_ip ? kPerIp : kTotal, 0});
      if (worker.logThrottle()) {
        char peer[kIpTextMax];
        size_t peer_len = formatIp16(c->peer_ip16_, peer);
        log::warn("connection refused", {{"reason", per_ip ? "max_connections_per_ip" : "max_connections"},
                                         {"client_ip", std::string_view(peer, peer_len)}});
      }
      c->closing_ = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp_), [](uv_handle_t* h) {
        delete static_cast<DownstreamConnection*>(h->data);
      });
      return;
    }
    c->admitted_ = true;
  }
  uv_tcp_nodelay(&c->tcp_, 1);
  if (!admin) {
    const auto& tls = worker.currentGeneration()->runtime->listener_tls;
    if (listener_index < tls.size() && tls[listener_index]) {
      c->tls_ = std::make_unique<TlsLink>(tls[listener_index]);
      c->tls_->write_req.data = c;
    }
  }
  worker.addConnection(c);
  if (!admin) {
    metrics::local().add(metrics::Id::ConnectionsTotal, {c->listener_label_, 0, 0});
    metrics::local().add(metrics::Id::ConnectionsActive, {c->listener_label_, 0, 0}, 1);
  }
  c->armDeadline(DeadlineKind::HeaderRead);
  c->startReading();
}

void DownstreamConnection::startReading() {
  read_paused_ = false;
  watchBody();
  if (reading_ || closing_) return;
  reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAllocCb, onReadCb) == 0;
}

void DownstreamConnection::watchBody() {
  // body_read runs while the body is read (reset by each piece of it): a request that
  // stalls its body would otherwise hold its upstream connection and, through the
  // upstream's response timeout, have the endpoint blamed.
  const Request* r = req_;
  if (r && r->head_complete && !r->message_complete && r->request_framing != BodyFraming::None &&
      !r->tunnel && !r->response_started && !r->waiting_filter &&
      (deadline_kind_ == DeadlineKind::None || deadline_kind_ == DeadlineKind::BodyRead)) {
    armDeadline(DeadlineKind::BodyRead);
  }
}

void DownstreamConnection::stopReading() {
  read_paused_ = true;
  // Not reading is the gateway's choice (backpressure, a queued or held body), never the
  // client's slowness.
  if (deadline_kind_ == DeadlineKind::BodyRead) disarmDeadline();
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void DownstreamConnection::onAllocCb(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
  auto* c = static_cast<DownstreamConnection*>(h->data);
  size_t n = 0;
  if (c->tls_) {
    // Ciphertext goes to the worker's scratch area; feed() decrypts it into the block.
    buf->base = TlsSession::scratchInput(&n);
    buf->len = n;
    return;
  }
  // A body streaming upstream is read in large blocks (fewer reads and wakeups).
  const Request* r = c->req_;
  if (r && r->head_complete && !r->message_complete && !r->tunnel &&
      r->request_framing != BodyFraming::None) {
    c->in_.reserveBulk();
  }
  // Room for the largest head we accept plus one slice; beyond that the head is 431.
  size_t limit = c->worker().limits().max_head_bytes + kSliceSize;
  char* p = c->in_.writable(&n, limit);
  buf->base = p;
  buf->len = p ? n : 0;
}

void DownstreamConnection::onReadCb(uv_stream_t* s, ssize_t nread, const uv_buf_t*) noexcept {
  static_cast<DownstreamConnection*>(s->data)->onRead(nread);
}

void DownstreamConnection::onRead(ssize_t nread) {
  EventScope scope(this);
  if (closing_) return;
  if (lingering_) {  // discard until the client closes its side
    if (nread < 0) closeConnection();
    else in_.release();
    return;
  }
  if (nread == 0) {
    if (in_.length() == 0) in_.release();
    return;
  }
  if (nread < 0) {
    if (nread == UV_ENOBUFS && req_ && req_->head_complete) {
      // The block is full of what the parser cannot take yet: a body whose request waits
      // (continueRequest() or onUpstreamAvailable() reads again) or requests pipelined
      // behind this one (finishRequest() reads again). Not a reason to drop the client.
      stopReading();
      return;
    }
    if (nread == UV_ENOBUFS && req_ && !req_->head_complete) {
      reject(431, "Request header fields too large");
      return;
    }
    // The client is gone (or half-closed).
    if (nread == UV_EOF && answersAfterEof()) {
      close_after_response_ = true;
      stopReading();
      return;
    }
    countUnfinishedHandshake();  // the client gave up mid-handshake
    if (req_) abortRequest();
    closeConnection();
    return;
  }
  if (tls_) {
    size_t scratch_len;
    onTlsRead(TlsSession::scratchInput(&scratch_len), size_t(nread));  // where alloc put it
    return;
  }
  in_.added(size_t(nread));
  // Bytes arrived on an idle keep-alive connection: the head must now complete within
  // header_read. (A fresh connection has had that deadline since accept.)
  if (!req_ && deadline_kind_ == DeadlineKind::Idle) armDeadline(DeadlineKind::HeaderRead);
  processInput();
}

void DownstreamConnection::onTlsRead(const char* data, size_t len) {
  TlsSession& s = tls_->session;
  tls_->started |= len > 0;
  size_t limit = worker().limits().max_head_bytes + kSliceSize;
  bool was_handshaking = s.state() == TlsState::Handshaking;
  TlsFeedResult res = s.feed(data, len, in_, limit);
  if (res.handshake_done) {
    metrics::local().add(metrics::Id::TlsHandshakes, {listener_label_, 0, 0});
  }
  if (s.state() == TlsState::Error) {
    if (was_handshaking) metrics::local().add(metrics::Id::TlsHandshakeErrors, {listener_label_, 0, 0});
    if (req_) abortRequest();
    closeConnection();  // sends the alert if the socket takes it
    return;
  }
  flushTls();  // handshake messages, tickets
  if (closing_) return;
  if (s.peerClosed()) {
    if (answersAfterEof()) {
      close_after_response_ = true;
    } else {
      if (req_) abortRequest();
      closeConnection();
      return;
    }
  }
  if (res.plaintext == 0 && !res.sink_full) return;
  // A full block is no 431 by itself: the head may be complete in it, not parsed yet (a
  // pipelined head begun before the rest of it was decrypted). processInput() answers 431
  // when the head alone passes the limit.
  if (!req_ && deadline_kind_ == DeadlineKind::Idle) armDeadline(DeadlineKind::HeaderRead);
  size_t unparsed = in_.unconsumed();
  processInput();
  if (closing_ || s.pendingInput() == 0 || read_paused_) return;
  // The block had no room for everything. A parser that took nothing (a body its request
  // cannot take yet) would leave it full forever: stop reading until resumeInput().
  if (res.sink_full && in_.unconsumed() == unparsed) {
    stopReading();
    return;
  }
  onTlsRead(nullptr, 0);  // the parser took some: decrypt the rest
}

bool DownstreamConnection::answersAfterEof() const {
  // A complete request still gets its answer, and so does one whose body waits unparsed in
  // the block until the request can go on: all of it has come, or never will (then the
  // upstream's timeout ends the exchange).
  return req_ && !req_->tunnel &&
         (req_->message_complete || req_->waiting_filter || bodyAwaitsUpstream(*req_));
}

void DownstreamConnection::resumeInput() {
  startReading();
  processInput();
  if (!closing_ && tls_ && tls_->session.pendingInput() > 0 && !read_paused_) onTlsRead(nullptr, 0);
}

void DownstreamConnection::flushTls() {
  if (closing_) return;
  TlsLink& t = *tls_;
  switch (writeBuffer(reinterpret_cast<uv_stream_t*>(&tcp_), &t.write_req, t.session.output(),
                      &t.writing, [](uv_write_t* w, int status) {
                        static_cast<DownstreamConnection*>(w->data)->onTlsWritten(status);
                      })) {
    case WriteResult::Done:
      break;
    case WriteResult::Pending:
      if (deadline_kind_ == DeadlineKind::None) armDeadline(DeadlineKind::WriteStall);
      break;
    case WriteResult::Failed:
      if (req_) abortRequest();
      closeConnection();
      break;
  }
}

void DownstreamConnection::onTlsWritten(int status) {
  EventScope scope(this);
  TlsLink& t = *tls_;
  size_t done = t.writing;
  t.writing = 0;
  if (deadline_kind_ == DeadlineKind::WriteStall) disarmDeadline();
  if (closing_) return;
  if (status != 0) {
    if (req_) abortRequest();
    closeConnection();
    return;
  }
  t.session.output().drain(done);
  flushTls();
  if (!closing_ && req_ && req_->upstream && pendingOutput().size() < kLowWatermark) {
    req_->upstream->resumeReading();
  }
}

bool DownstreamConnection::outputFlushed() const {
  if (tls_) return tls_->writing == 0 && tls_->session.output().empty() && req_->out.empty();
  return req_->writing_bytes == 0 && req_->out.empty();
}

Buffer& DownstreamConnection::pendingOutput() {
  return tls_ ? tls_->session.output() : req_->out;
}

void DownstreamConnection::beginRequest() {
  req_ = worker().acquireRequest();
  req_->ctx.driver = this;
  req_->ctx.worker = &worker();
  // Known before the head is parsed: answers to early refusals carry them too (HSTS,
  // the log's tls and client_ip fields).
  req_->ctx.tls = tls_ != nullptr;
  req_->ctx.peer_ip = {req_->peer_ip_text, formatIp16(peer_ip16_, req_->peer_ip_text)};
  req_->ctx.client_ip = req_->ctx.peer_ip;
  req_->start_ns = monotonicNs();
  req_->ctx.monotonic_ns = req_->start_ns;
  req_->ctx.now_ms = wallClockMs();
  req_->generation = worker().pinGeneration();
  llhttp_init(&req_->parser, HTTP_REQUEST, &parserSettings());
  req_->parser.data = this;
  if (!admin_) metrics::local().add(metrics::Id::RequestsInFlight, {}, 1);
  if (deadline_kind_ != DeadlineKind::HeaderRead) armDeadline(DeadlineKind::HeaderRead);
}

void DownstreamConnection::processInput() {
  while (!closing_ && in_.unconsumed() > 0 && !read_paused_) {
    if (!req_) beginRequest();
    Request& r = *req_;
    if (r.tunnel) {
      if (!r.upstream) return;
      r.upstream->out().appendExternal(in_.data() + in_.consumed(), in_.unconsumed());
      r.bytes_in += in_.unconsumed();
      in_.consume(in_.unconsumed());
      r.upstream->flush();
      if (closing_) return;
      if (r.upstream && r.upstream->pendingBytes() > kHighWatermark) stopReading();
      in_.compact();
      armDeadline(DeadlineKind::Idle);
      return;
    }
    if (r.message_complete || r.waiting_filter || r.response_complete) return;
    if (bodyAwaitsUpstream(r)) {
      stopReading();  // resumeInput() reads again once a connection takes the body
      return;
    }
    // Until the head is complete its bytes stay unconsumed at the front of the block
    // (parsing resumes at r.parsed), so the block may move or grow under the head's
    // offsets without invalidating them.
    size_t offset = r.head_complete ? 0 : r.parsed;
    const char* data = in_.data() + in_.consumed() + offset;
    size_t len = in_.unconsumed() - offset;
    if (len == 0) return;
    llhttp_errno_t err = llhttp_execute(&r.parser, data, len);
    size_t used = err == HPE_OK ? len : size_t(llhttp_get_error_pos(&r.parser) - data);
    if (r.head_complete) {
      in_.consume(offset + used);
    } else {
      r.parsed = offset + used;
    }
    r.bytes_in += used;
    if (closing_) return;
    if (r.upstream) {
      r.upstream->flush();  // sends body bytes, copying what the kernel did not take
      if (closing_) return;
      if (r.upstream && r.upstream->pendingBytes() > kHighWatermark) stopReading();
    }
    if (err == HPE_OK) {
      if (!r.head_complete && r.parsed > worker().limits().max_head_bytes) {
        reject(431, "Request header fields too large");
        return;
      }
      if (r.head_complete) in_.compact();  // body bytes are forwarded: reuse the block
      return;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      // A filter is waiting, a reply was sent, the request is complete, or its body waits
      // for an upstream connection.
      if (bodyAwaitsUpstream(r)) stopReading();
      return;
    }
    if (err == HPE_USER && r.reject_status) {
      int status = r.reject_status;
      reject(status, status == 414   ? "Request URI too long"
                     : status == 413 ? "Request body too large"
                     : status == 431 ? "Request header fields too large"
                                     : "Bad request");
      return;
    }
    protocolError(err);
    return;
  }
}

void DownstreamConnection::protocolError(llhttp_errno_t) {
  // Nothing more can be trusted on this connection: answer 400 and close.
  close_after_response_ = true;
  reject(400, "Malformed HTTP request");
}

// ---------------------------------------------------------------------------------------
// Request head

int DownstreamConnection::onUrl(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  size_t total = c->req_->head.onFirstLine(c->headBase(), at, len);
  if (total > c->worker().limits().max_uri_bytes) {
    c->req_->reject_status = 414;
    return HPE_USER;
  }
  return 0;
}

int DownstreamConnection::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  c->req_->head.onField(c->headBase(), at, len);
  if (c->req_->head.fieldCount() > kMaxRequestHeaders) {
    c->req_->reject_status = 431;
    return HPE_USER;
  }
  return 0;
}

int DownstreamConnection::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  c->req_->head.onValue(c->headBase(), at, len);
  return 0;
}

int DownstreamConnection::onHeadersCompleteCb(llhttp_t* p) { return fromParser(p)->onHeadersComplete(); }

int DownstreamConnection::onHeadersComplete() {
  Request& r = *req_;
  r.head_complete = true;
  disarmDeadline();
  // A head that arrived whole in one read was never measured while incomplete.
  if (r.head.extent() > worker().limits().max_head_bytes) {
    close_after_response_ = true;
    reject(431, "Request header fields too large");
    return headDone();
  }
  llhttp_t& p = r.parser;
  const char* base = headBase();
  r.head.toHeaders(base, r.headers);
  r.http10 = p.http_major == 1 && p.http_minor == 0;
  if (p.http_major != 1 || p.http_minor > 1 || !headIsUnambiguous(r.headers) ||
      !rawHeadIsStrict(base, in_.data() + in_.length(), in_.data() + in_.capacity())) {
    close_after_response_ = true;
    reject(400, "Malformed HTTP request");
    return headDone();
  }
  r.keep_alive = keepsAlive(p) && !close_after_response_ && !draining_;
  r.ctx.method = llhttp_method_name(static_cast<llhttp_method_t>(p.method));
  r.head_method = p.method == HTTP_HEAD;
  r.chunked_request = (p.flags & F_CHUNKED) != 0;
  r.request_framing = r.chunked_request ? BodyFraming::Chunked
                      : (p.flags & F_CONTENT_LENGTH) && p.content_length > 0
                          ? BodyFraming::ContentLength
                          : BodyFraming::None;
  r.content_length = r.request_framing == BodyFraming::ContentLength ? p.content_length : 0;

  const Runtime& rt = *r.generation->runtime;
  const Config& cfg = *rt.config;
  r.ctx.config = &cfg;
  r.ctx.max_body_bytes = cfg.limits.max_body_bytes;
  std::string_view xff = r.headers.get("x-forwarded-for");
  if (!cfg.trusted_proxies.empty() && r.headers.count("x-forwarded-for") > 1) {
    // Several fields are one list (RFC 9110 §5.3): the right-most hop is in the last one.
    std::string joined;
    for (const Header& h : r.headers) {
      if (!equalsIgnoreCase(h.name, "x-forwarded-for")) continue;
      if (!joined.empty()) joined += ", ";
      joined += h.value;
    }
    xff = r.arena.copy(joined);
  }
  r.ctx.client_ip = resolveClientIp(cfg.trusted_proxies, r.ctx.peer_ip, peer_ip16_, xff,
                                    r.ctx.client_ip16);
  // Keep what the log and the upstream request need past this callback in the arena:
  // the head's bytes stay in the input block only until the body starts flowing.
  if (r.ctx.client_ip.data() != r.ctx.peer_ip.data()) r.ctx.client_ip = r.arena.copy(r.ctx.client_ip);
  if (!cfg.trusted_proxies.empty() && isTrusted(cfg.trusted_proxies, peer_ip16_)) {
    r.ctx.forwarded_https = equalsIgnoreCase(r.headers.get("x-forwarded-proto"), "https");
  }

  if (p.method == HTTP_CONNECT) {
    reject(400, "CONNECT is not supported");
    return headDone();
  }
  bool websocket = false;
  if (p.upgrade) {
    std::string_view upgrade = r.headers.get("upgrade");
    forEachToken(upgrade, [&](std::string_view t) { websocket |= equalsIgnoreCase(t, "websocket"); });
    // h2c and friends: answer in HTTP/1.1, as nginx does.
    if (!websocket) p.upgrade = 0;
    if (websocket && r.request_framing != BodyFraming::None) {
      reject(400, "An upgrade request cannot carry a body");
      return headDone();
    }
    if (websocket) r.upgrade_value = r.arena.copy(upgrade);
  }

  RequestTarget target;
  std::string_view raw_target = r.head.firstLine(base);
  // "OPTIONS *" is refused too (as nginx does): routed as "/" it would change meaning.
  if (!parseRequestTarget(raw_target, r.ctx.method, target) || target.asterisk ||
      normalizePath(target.path, r.path_buf) != PathResult::Ok) {
    close_after_response_ = true;
    reject(400, "Invalid request target");
    return headDone();
  }
  r.ctx.path = r.path_buf;
  r.ctx.query = r.arena.copy(target.query);
  bool has_host = false;
  std::string_view host = r.headers.get("host", &has_host);
  if (!target.authority.empty()) host = target.authority;
  if (!r.http10 && !has_host) {
    close_after_response_ = true;
    reject(400, "Missing Host header");
    return headDone();
  }
  if (r.headers.count("host") > 1) {
    close_after_response_ = true;
    reject(400, "Multiple Host headers");
    return headDone();
  }
  if ((has_host || !target.authority.empty()) && !isValidAuthority(host)) {
    close_after_response_ = true;
    reject(400, "Invalid Host header");
    return headDone();
  }
  r.ctx.host = host;
  // Not when a trusted proxy says the client already speaks https: behind a load balancer
  // that terminates TLS, redirecting would loop.
  if (!admin_ && listener_index_ < cfg.listeners.size() && cfg.listeners[listener_index_].redirect_https &&
      !r.ctx.forwarded_https) {
    redirectToHttps(target);
    return headDone();
  }
  // The verified client certificate (mTLS) is the gateway's word, never the client's.
  r.headers.remove("x-client-cert-subject");
  if (tls_ && !tls_->session.info().peer_subject.empty()) {
    r.headers.addRef("X-Client-Cert-Subject", tls_->session.info().peer_subject);
  }
  r.expect_continue = equalsIgnoreCase(r.headers.get("expect"), "100-continue");

  if (admin_) {
    answerAdmin();
    return headDone();
  }
  removeHopByHop(r.headers);
  r.ctx.route = nullptr;
  if (r.ctx.method == "OPTIONS" && r.headers.has("origin")) {
    // A CORS preflight asks about the request that will follow: the route that request
    // takes answers it with its CORS policy, so a route limited to POST still answers its
    // own preflights. Only a route with `cors` will: one without would forward an OPTIONS
    // its `methods` do not allow.
    bool preflight = false;
    std::string_view requested = r.headers.get("access-control-request-method", &preflight);
    const RouteConfig* target =
        preflight ? rt.router->match(r.ctx.host, r.ctx.path, requested, r.headers) : nullptr;
    if (target && std::any_of(target->chain.begin(), target->chain.end(), [](const auto& f) {
          return f->order() == FilterOrder::Cors;
        })) {
      r.ctx.route = target;
    }
  }
  if (!r.ctx.route) r.ctx.route = rt.router->match(r.ctx.host, r.ctx.path, r.ctx.method, r.headers);
  if (!r.ctx.route) {
    // The default request_id still takes the client's id, so the 404 body carries it.
    for (const auto& f : cfg.default_chain) {
      if (f->order() != FilterOrder::RequestId) break;
      f->onRequestHeaders(r.ctx, r.headers);
      ++r.filters_run;
    }
    reject(404, "No route for this request");
    return headDone();
  }
  r.upstream_name = r.ctx.route->upstream;
  if (websocket && !r.ctx.route->websocket) {
    reject(400, "WebSocket upgrade is not enabled on this route");
    return headDone();
  }
  r.upgrade = websocket;
  runRequestFilters();
  return headDone();
}

int DownstreamConnection::headDone() {
  Request& r = *req_;
  if (r.waiting_filter) return HPE_PAUSED;  // resumed by continueRequest()
  watchBody();
  // Answered locally: a request without a body still completes in the parser (so the
  // connection can carry the next one); with a body, parsing stops and the connection
  // closes after the answer.
  if (r.response_started && r.request_framing != BodyFraming::None) return HPE_PAUSED;
  // Queued in the bulkhead: the body has nowhere to go yet and must not be parsed (and
  // dropped); it waits in the input block until startUpstream() resumes the parser.
  if (bodyAwaitsUpstream(r)) return HPE_PAUSED;
  return 0;
}

void DownstreamConnection::redirectToHttps(const RequestTarget& target) {
  Request& r = *req_;
  const Config& cfg = *r.ctx.config;
  uint16_t port = 443;
  for (const ListenerConfig& l : cfg.listeners) {
    if (!l.tls) continue;
    const sockaddr* sa = l.address.sa();
    port = sa->sa_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port)
                                     : ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
    break;
  }
  std::string location = "https://";
  location += stripPort(r.ctx.host);
  if (port != 443) location += ":" + std::to_string(port);
  location.append(target.path);  // as received: the https side normalises it again
  if (target.has_query) {
    location += '?';
    location.append(target.query);
  }
  r.ctx.response_headers_to_add.add("Location", location);
  respond(308, "", "", {});
}

void DownstreamConnection::runRequestFilters() {
  Request& r = *req_;
  const auto& chain = r.ctx.route->chain;
  bool body_checked = false;
  for (size_t i = r.filters_run; i < chain.size(); ++i) {
    if (!body_checked && chain[i]->order() > FilterOrder::BodyLimit) {
      body_checked = true;
      if (r.content_length > r.ctx.max_body_bytes) {
        close_after_response_ = true;
        reject(413, "Request body too large");
        return;
      }
    }
    r.filters_run = i + 1;
    FilterStatus s = chain[i]->onRequestHeaders(r.ctx, r.headers);
    if (s == FilterStatus::StopReplied) return;
    if (s == FilterStatus::StopWait) {
      // Reading goes on (stopping costs two epoll_ctl per request) but the block is
      // pinned: a read that would move the head the filters' views point into gets no
      // room (UV_ENOBUFS, then reading stops until the filter answers).
      r.waiting_filter = true;
      in_.setPinned(true);
      return;
    }
  }
  if (!body_checked && r.content_length > r.ctx.max_body_bytes) {
    close_after_response_ = true;
    reject(413, "Request body too large");
    return;
  }
  proxyRequest();
}

void DownstreamConnection::continueRequest() {
  EventScope scope(this);
  if (!req_ || !req_->waiting_filter || closing_) return;
  req_->waiting_filter = false;
  in_.setPinned(false);
  startReading();
  runRequestFilters();
  if (closing_ || req_->response_started || req_->waiting_filter) return;
  llhttp_resume(&req_->parser);
  // Paused at the end of a bodiless head with no bytes left, llhttp completes the message
  // only on its next execute: feed it nothing, or the connection would not be kept alive.
  if (!req_->message_complete && in_.unconsumed() == 0) llhttp_execute(&req_->parser, "", 0);
  resumeInput();
}

void DownstreamConnection::proxyRequest() {
  Request& r = *req_;
  if (r.ctx.route->admin) {
    answerAdmin();
    return;
  }
  const RouteConfig& route = *r.ctx.route;
  if (route.strip_prefix.empty()) {
    r.upstream_path.assign(r.ctx.path);
  } else {
    applyStripPrefix(r.ctx.path, route.strip_prefix, r.upstream_path);
  }
  if (r.expect_continue && r.request_framing != BodyFraming::None) {
    r.out.append("HTTP/1.1 100 Continue\r\n\r\n");
    flushClient();
    if (closing_) return;
  }
  serializeUpstreamHead();
  r.upstream_start_ns = monotonicNs();
  upstreamPool().countRequest();
  startUpstream();
}

UpstreamPool& DownstreamConnection::upstreamPool() {
  return worker().pool(req_->generation, req_->ctx.route->upstream_index);
}

void DownstreamConnection::startUpstream() {
  Request& r = *req_;
  UpstreamPool& pool = upstreamPool();
  UpstreamConnection* up = nullptr;
  bool trial = false;
  switch (pool.acquire(this, r.endpoint_index, &up, &trial)) {
    case AcquireResult::Connection:
      break;
    case AcquireResult::Queued:
      r.waiting_upstream = true;
      return;
    case AcquireResult::NoEndpoint:
      reject(503, "No healthy upstream endpoint");
      return;
    case AcquireResult::Overflow:
      reject(503, "Upstream connection limit reached");
      return;
  }
  r.upstream = up;
  // A body that waited in the input block while the request was queued (see headDone)
  // may be parsed from now on: resumed before anything here (a flush's drain callback)
  // parses on, as a paused parser would report a stale position.
  if (r.request_framing != BodyFraming::None && !r.message_complete) llhttp_resume(&r.parser);
  r.breaker_trial = trial;
  r.endpoint_index = up->endpointIndex();
  r.attempt_open = true;
  ++r.attempts;
  pool.requestStarted(r.endpoint_index);
  r.upstream_endpoint = up->endpoint().text;
  Buffer& o = up->out();
  size_t queued_before = o.size();
  // The request's head outlives every attempt: sent from where it is, and copied only if
  // the kernel does not take it at once (flush() internalizes). An endpoint's Host is known
  // only now.
  o.appendViews(r.upstream_head);
  if (r.host_from_endpoint) {
    appendHeader(o, "Host", r.upstream_endpoint);
    o.append("\r\n", 2);
  }
  r.upstream_head_bytes = o.size() - queued_before;
  o.moveFrom(r.held_body);  // what an earlier attempt that never connected took
  const RouteConfig& route = *r.ctx.route;
  uint64_t timeout = uint64_t((route.timeout ? *route.timeout : r.ctx.config->timeouts.upstream_response).count());
  up->expectResponse(timeout, r.head_method);
  if (r.request_framing == BodyFraming::None || r.message_complete) up->requestComplete();
  up->flush();
}

void DownstreamConnection::endAttempt(bool failed) {
  Request& r = *req_;
  if (!r.attempt_open) return;
  r.attempt_open = false;
  UpstreamPool& pool = upstreamPool();
  pool.requestEnded(r.endpoint_index);
  EndpointState& ep = pool.endpointState(r.endpoint_index);
  const UpstreamConfig& uc = pool.config();
  const CircuitBreakerConfig* cb = uc.circuit_breaker ? &*uc.circuit_breaker : nullptr;
  bool changed = failed ? ep.recordFailure(cb, monotonicMs(), r.breaker_trial)
                        : ep.recordSuccess(r.breaker_trial);
  if (changed) publishBreakerGauge(pool.state(), uc.metrics_label, monotonicMs());
  r.breaker_trial = false;
}

bool DownstreamConnection::retryPossible(bool trigger, bool body_unsent) {
  Request& r = *req_;
  const RetryConfig& rc = upstreamPool().config().retries;
  // Only requests that can be sent again as they were: idempotent, no body streamed.
  return trigger && r.attempts <= rc.attempts &&
         (r.request_framing == BodyFraming::None || body_unsent) && isIdempotent(r.ctx.method) &&
         upstreamPool().takeRetry();
}

void DownstreamConnection::scheduleRetry() {
  Request& r = *req_;
  const RetryConfig& rc = upstreamPool().config().retries;
  // Exponential backoff with full jitter: uniform in [0, base * 2^(attempt-1)].
  uint64_t cap = uint64_t(rc.backoff.count()) << std::min<uint32_t>(r.attempts - 1, 10);
  uint64_t rnd[2];
  worker().random128(rnd);
  uint64_t delay = cap ? rnd[0] % (cap + 1) : 0;
  r.retry_timer = new uv_timer_t;
  uv_timer_init(worker().loop(), r.retry_timer);
  r.retry_timer->data = this;
  uv_timer_start(r.retry_timer, [](uv_timer_t* t) {
    auto* c = static_cast<DownstreamConnection*>(t->data);
    EventScope scope(c);
    c->cancelRetryTimer();
    if (!c->req_ || c->closing_) return;
    c->startUpstream();
  }, delay, 0);
}

void DownstreamConnection::cancelRetryTimer() {
  if (!req_ || !req_->retry_timer) return;
  uv_close(reinterpret_cast<uv_handle_t*>(req_->retry_timer),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  req_->retry_timer = nullptr;
}

void DownstreamConnection::onUpstreamAvailable(bool expired) {
  EventScope scope(this);
  if (!req_ || closing_ || !req_->waiting_upstream) return;
  req_->waiting_upstream = false;
  if (expired) {
    reject(503, "Upstream connection limit reached");
    return;
  }
  startUpstream();
  if (closing_ || !req_->upstream || req_->message_complete) return;
  resumeInput();
}

void DownstreamConnection::serializeUpstreamHead() {
  Request& r = *req_;
  Buffer& o = r.upstream_head;
  o.append(r.ctx.method);
  o.append(" ", 1);
  o.append(r.upstream_path);
  if (!r.ctx.query.empty()) {
    o.append("?", 1);
    o.append(r.ctx.query);
  }
  o.append(" HTTP/1.1\r\n", 11);
  bool has_host = false;
  std::string_view xfp, xfh;
  bool has_xff = false;
  bool trusted_peer = isTrusted(r.ctx.config->trusted_proxies, peer_ip16_);
  for (const Header& h : r.headers) {
    std::string_view n = h.name;
    if (equalsIgnoreCase(n, "content-length") || equalsIgnoreCase(n, "expect")) continue;
    if (equalsIgnoreCase(n, "x-forwarded-for")) {
      has_xff = true;  // every field is kept, in order (RFC 9110 §5.3: one list)
      continue;
    }
    if (equalsIgnoreCase(n, "x-forwarded-proto")) {
      if (trusted_peer) xfp = h.value;
      continue;
    }
    if (equalsIgnoreCase(n, "x-forwarded-host")) {
      if (trusted_peer) xfh = h.value;
      continue;
    }
    if (equalsIgnoreCase(n, "host")) {
      has_host = true;
      // absolute-form: the authority wins over the Host header (RFC 9112 §3.2.2)
      appendHeader(o, n, r.ctx.host);
      continue;
    }
    appendHeader(o, n, h.value);
  }
  if (!has_host) {
    if (r.ctx.host.empty()) {
      r.host_from_endpoint = true;  // known per attempt
    } else {
      appendHeader(o, "Host", r.ctx.host);
    }
  }
  o.append("X-Forwarded-For: ");
  if (has_xff) {
    for (const Header& h : r.headers) {
      if (!equalsIgnoreCase(h.name, "x-forwarded-for") || h.value.empty()) continue;
      o.append(h.value);
      o.append(", ", 2);
    }
  }
  o.append(r.ctx.peer_ip);
  o.append("\r\n", 2);
  appendHeader(o, "X-Forwarded-Proto", !xfp.empty() ? xfp : (r.ctx.tls ? "https" : "http"));
  if (!xfh.empty() || !r.ctx.host.empty()) appendHeader(o, "X-Forwarded-Host", !xfh.empty() ? xfh : r.ctx.host);
  if (r.upgrade) {
    o.append("Connection: Upgrade\r\n");
    appendHeader(o, "Upgrade", r.upgrade_value);
  }
  if (r.request_framing == BodyFraming::ContentLength) {
    o.append("Content-Length: ");
    appendNumber(o, r.content_length);
    o.append("\r\n", 2);
  } else if (r.request_framing == BodyFraming::Chunked) {
    o.append("Transfer-Encoding: chunked\r\n");
  }
  if (!r.host_from_endpoint) o.append("\r\n", 2);  // else after the Host, per attempt
}

// ---------------------------------------------------------------------------------------
// Request body

int DownstreamConnection::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  Request& r = *c->req_;
  r.body_bytes += len;
  c->watchBody();  // progress
  if (r.body_bytes > r.ctx.max_body_bytes) {
    r.reject_status = 413;
    c->close_after_response_ = true;
    return HPE_USER;
  }
  if (!r.upstream) return 0;  // answered already: the body is dropped
  Buffer& o = r.upstream->out();
  if (r.chunked_request) {
    appendHex(o, len);
    o.append("\r\n", 2);
    o.appendExternal(at, len);
    o.append("\r\n", 2);
  } else {
    o.appendExternal(at, len);
  }
  return 0;
}

int DownstreamConnection::onChunkExtension(llhttp_t* p, const char*, size_t len) {
  // Extensions are dropped when the body is re-chunked; a flood of them is only work.
  auto* c = fromParser(p);
  c->req_->chunk_extension_bytes += len;
  if (c->req_->chunk_extension_bytes > kMaxChunkExtensionBytes) {
    c->close_after_response_ = true;
    c->req_->reject_status = 400;
    return HPE_USER;
  }
  return 0;
}

int DownstreamConnection::onMessageComplete(llhttp_t* p) {
  auto* c = fromParser(p);
  Request& r = *c->req_;
  r.message_complete = true;
  if (c->deadline_kind_ == DeadlineKind::BodyRead) c->disarmDeadline();
  if (r.upstream && r.chunked_request) r.upstream->out().append("0\r\n\r\n", 5);
  if (r.upstream && r.request_framing != BodyFraming::None) r.upstream->requestComplete();
  return HPE_PAUSED;  // one request at a time: pipelined ones wait in the input block
}

const llhttp_settings_t& DownstreamConnection::parserSettings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_url = onUrl;
    s.on_header_field = onHeaderField;
    s.on_header_value = onHeaderValue;
    s.on_headers_complete = onHeadersCompleteCb;
    s.on_body = onBody;
    s.on_message_complete = onMessageComplete;
    s.on_chunk_extension_name = onChunkExtension;
    s.on_chunk_extension_value = onChunkExtension;
    return s;
  }();
  return settings;
}

// ---------------------------------------------------------------------------------------
// Response

void DownstreamConnection::runResponseFilters() {
  Request& r = *req_;
  const std::vector<std::shared_ptr<const Filter>>* chain = nullptr;
  if (r.ctx.route) {
    chain = &r.ctx.route->chain;
  } else if (r.ctx.config) {
    chain = &r.ctx.config->default_chain;
  }
  if (chain) {
    for (size_t i = chain->size(); i-- > 0;) {
      const Filter& f = *(*chain)[i];
      if (i < r.filters_run || f.runsOnEveryResponse()) f.onResponseHeaders(r.ctx, r.response);
    }
  }
  for (const Header& h : r.ctx.response_headers_to_add) r.response.headers.addRef(h.name, h.value);
}

void DownstreamConnection::writeResponseHead(int status) {
  Request& r = *req_;
  Buffer& o = r.out;
  o.append("HTTP/1.1 ", 9);
  appendNumber(o, uint64_t(status));
  o.append(" ", 1);
  o.append(reasonPhrase(status));
  o.append("\r\n", 2);
  for (const Header& h : r.response.headers) appendHeader(o, h.name, h.value);
  if (r.chunked_response) o.append("Transfer-Encoding: chunked\r\n");
  if (!r.keep_alive || close_after_response_ || draining_) {
    r.keep_alive = false;
    o.append("Connection: close\r\n");
  } else if (r.http10) {
    o.append("Connection: keep-alive\r\n");
  }
  o.append("\r\n", 2);
  r.response_started = true;
  r.status = status;
}

std::string_view DownstreamConnection::generateRequestId() {
  return worker().newRequestId(req_->arena);
}

void DownstreamConnection::sendResponse(int status, std::string_view content_type,
                                        std::string_view body) {
  EventScope scope(this);
  if (!req_ || closing_ || req_->response_started) return;
  if (req_->upstream) {
    req_->upstream->abort();
    req_->upstream = nullptr;
  }
  req_->waiting_filter = false;
  in_.setPinned(false);
  respond(status, content_type, body, {});
}

void DownstreamConnection::respond(int status, std::string_view content_type,
                                   std::string_view body, std::string_view error_code,
                                   const HeaderPairs* extra_headers) {
  Request& r = *req_;
  r.response.status = status;
  r.response.local_reply = true;
  r.response.headers.clear();
  r.response.headers.addRef("Date", worker().httpDate());
  if (!content_type.empty()) r.response.headers.addRef("Content-Type", content_type);
  if (extra_headers) {
    for (const auto& [name, value] : *extra_headers) r.response.headers.add(name, value);
  }
  if (status != 204 && status != 304 && status >= 200) {
    char len[24];
    auto res = std::to_chars(len, len + sizeof len, body.size());
    r.response.headers.add("Content-Length", std::string_view(len, size_t(res.ptr - len)));
  }
  r.error_code = error_code;
  runResponseFilters();
  if (!r.message_complete && r.request_framing != BodyFraming::None) {
    r.keep_alive = false;  // the unread body makes the connection unusable
  }
  r.chunked_response = false;
  writeResponseHead(status);
  if (!r.head_method) r.out.append(body);
  r.response_complete = true;
  flushClient();
}

void DownstreamConnection::reject(int status, std::string_view message) {
  static const uint16_t kReasons[] = {
      metrics::labelId("bad_request"),      metrics::labelId("no_route"),
      metrics::labelId("timeout"),          metrics::labelId("body_too_large"),
      metrics::labelId("uri_too_long"),     metrics::labelId("headers_too_large"),
      metrics::labelId("upstream_error"),   metrics::labelId("upstream_unavailable"),
      metrics::labelId("upstream_timeout")};
  size_t reason = 0;
  switch (status) {
    case 404: reason = 1; break;
    case 408: reason = 2; break;
    case 413: reason = 3; break;
    case 414: reason = 4; break;
    case 431: reason = 5; break;
    case 502: reason = 6; break;
    case 503: reason = 7; break;
    case 504: reason = 8; break;
    default: break;
  }
  if (!admin_ && req_) {
    uint16_t route = req_->ctx.route ? req_->ctx.route->metrics_label : 0;
    metrics::local().add(metrics::Id::RequestRejected, {route, kReasons[reason], 0});
  }
  // After a malformed request nothing more on this connection can be trusted.
  if (status == 400) close_after_response_ = true;
  sendLocalReply(status, errorCodeFor(status), message);
}

void DownstreamConnection::sendLocalReply(int status, std::string_view error_code,
                                          std::string_view message) {
  EventScope scope(this);
  if (!req_ || closing_) return;
  Request& r = *req_;
  if (r.response_started) {
    if (r.response_flushed || r.writing_bytes > 0 || r.tunnel) {
      // Part of a response is already on the wire: the only honest signal left is a reset.
      abortRequest();
      closeConnection();
      return;
    }
    // The head of an upstream response that failed before any of it left: take it back
    // and answer instead.
    r.out.clear();
    r.response_started = false;
  }
  // The answer may come while the request waits for an upstream (a chunked body passing
  // the limit in the bulkhead queue or in a retry's backoff): nothing may wake it later.
  detachUpstream();
  if (r.waiting_filter && r.request_framing == BodyFraming::None && !r.message_complete) {
    // An asynchronous filter answers a bodiless request: complete it (see continueRequest)
    // so that the connection is kept alive.
    llhttp_resume(&r.parser);
    llhttp_execute(&r.parser, "", 0);
  }
  r.waiting_filter = false;
  in_.setPinned(false);
  if (r.ctx.request_id.empty()) r.ctx.request_id = worker().newRequestId(r.arena);
  if (!r.ctx.config) r.ctx.config = r.generation->runtime->config.get();
  std::string body = errorBody(error_code, message, r.ctx.request_id, wallClockMs());
  std::string_view body_view = r.arena.copy(body);
  respond(status, "application/json", body_view, error_code);
}

void DownstreamConnection::answerAdmin() {
  Request& r = *req_;
  if (r.ctx.request_id.empty()) r.ctx.request_id = worker().newRequestId(r.arena);
  AdminResponse res = handleAdmin(worker().server(), r.ctx.method, r.ctx.path, r.ctx.request_id);
  std::string_view body = r.arena.copy(res.body);
  std::string_view type = r.arena.copy(res.content_type);
  respond(res.status, type, body, res.status >= 400 ? errorCodeFor(res.status) : "", &res.headers);
}

void DownstreamConnection::onUpstreamHead(UpstreamResponseHead& head) {
  EventScope scope(this);
  Request& r = *req_;
  bool failed = head.status == 502 || head.status == 503 || head.status == 504;
  endAttempt(failed);
  // Every upstream answer counts, the ones a retry hides included.
  uint16_t upstream = r.generation->runtime->config->upstreams[r.ctx.route->upstream_index].metrics_label;
  uint64_t attempt_end = monotonicNs();
  metrics::local().add(metrics::Id::UpstreamRequestsTotal, {upstream, metrics::statusLabel(head.status), 0});
  metrics::local().observe(metrics::Id::UpstreamRequestDuration, {upstream, 0, 0},
                           attempt_end - r.upstream_start_ns);
  const std::vector<int>& retry_on = upstreamPool().config().retries.on_statuses;
  if (std::find(retry_on.begin(), retry_on.end(), head.status) != retry_on.end() &&
      retryPossible(true, false)) {
    // This answer is not forwarded: the connection is dropped with its body.
    r.upstream->abort();
    r.upstream = nullptr;
    scheduleRetry();
    return;
  }
  r.upstream_end_ns = attempt_end;
  r.response.status = head.status;
  r.response.local_reply = false;
  // Taken, not copied: the views are used before this call returns (the response head is
  // written out below or the request fails).
  r.response.headers.clear();
  r.response.headers.swapFields(*head.headers);
  removeHopByHop(r.response.headers);
  // A proxy with a clock adds the Date an upstream left out (RFC 9110 §6.6.1).
  if (!r.response.headers.has("date")) r.response.headers.addRef("Date", worker().httpDate());
  switch (head.framing) {
    case BodyFraming::None:
    case BodyFraming::ContentLength:
      r.chunked_response = false;
      break;
    case BodyFraming::Chunked:
    case BodyFraming::UntilClose:
      // Re-frame for the client: chunked for HTTP/1.1, close-delimited for 1.0.
      r.chunked_response = !r.http10;
      if (r.http10) r.keep_alive = false;
      break;
  }
  if (head.status == 101) {
    if (!r.upgrade) {
      // A 101 nobody asked for would leave the client speaking HTTP into a tunnel.
      r.upstream->abort();
      r.upstream = nullptr;
      reject(502, "Upstream switched protocols unasked");
      return;
    }
    r.response.headers.remove("content-length");
    r.response.headers.addRef("Connection", "Upgrade");
    r.response.headers.addRef("Upgrade", r.upgrade_value);
    r.tunnel = true;
    armDeadline(DeadlineKind::Idle);
  }
  runResponseFilters();
  writeResponseHead(head.status);
  // The head is copied out: views into the upstream's block die with this callback.
  // Everything still referenced (names/values from filters) lives in the arena.
}

void DownstreamConnection::onUpstreamBody(const char* data, size_t len) {
  Request& r = *req_;
  if (r.chunked_response) {
    appendHex(r.out, len);
    r.out.append("\r\n", 2);
    r.out.appendExternal(data, len);
    r.out.append("\r\n", 2);
  } else {
    r.out.appendExternal(data, len);
  }
}

void DownstreamConnection::onUpstreamTunnelData(const char* data, size_t len) {
  EventScope scope(this);
  req_->out.appendExternal(data, len);
  armDeadline(DeadlineKind::Idle);  // a tunnel lives while bytes move, either way
}

void DownstreamConnection::onUpstreamReadDone() {
  EventScope scope(this);
  Request& r = *req_;
  flushClient();
  if (closing_) return;
  if (r.upstream && pendingOutput().size() > kHighWatermark) r.upstream->pauseReading();
  if (r.tunnel && in_.unconsumed() > 0) processInput();  // client bytes sent before the 101
}

void DownstreamConnection::onUpstreamComplete() {
  EventScope scope(this);
  Request& r = *req_;
  if (r.chunked_response) r.out.append("0\r\n\r\n", 5);
  r.response_complete = true;
  UpstreamConnection* up = r.upstream;
  r.upstream = nullptr;
  if (!r.message_complete) {
    // The upstream answered before the whole body arrived: that connection may still
    // expect body bytes, and so does this one.
    up->abort();
    r.keep_alive = false;
  } else {
    worker().pool(r.generation, r.ctx.route->upstream_index).release(up);
  }
  flushClient();
}

void DownstreamConnection::onUpstreamError(UpstreamError e, bool response_started, bool reused) {
  EventScope scope(this);
  if (!req_ || closing_) return;
  Request& r = *req_;
  UpstreamConnection* failed = r.upstream;
  r.upstream = nullptr;
  if (r.tunnel) {
    // The upstream ended the tunnel: deliver what it sent, then close.
    close_after_response_ = true;
    r.response_complete = true;
    flushClient();
    return;
  }
  r.upstream_end_ns = monotonicNs();
  if (!response_started && reused && !r.retried && e == UpstreamError::Reset &&
      r.request_framing == BodyFraming::None && isIdempotent(r.ctx.method)) {
    // A pooled connection the upstream had closed: try once more on a fresh one. Not the
    // endpoint's fault, and not one of the configured retries.
    r.retried = true;
    endAttempt(false);
    --r.attempts;
    startUpstream();
    return;
  }
  endAttempt(true);
  countBadResponse(e, response_started);
  // An upstream never reached has none of the body: what it queued goes to the next attempt.
  bool never_reached = e == UpstreamError::ConnectFailed || e == UpstreamError::ConnectTimeout;
  bool connect_failure = never_reached || e == UpstreamError::TlsFailed;
  if (!response_started &&
      retryPossible(connect_failure && upstreamPool().config().retries.on_connect_failure,
                    never_reached && failed)) {
    if (r.request_framing != BodyFraming::None) {
      r.held_body.moveFrom(failed->out());
      r.held_body.drain(r.upstream_head_bytes);
    }
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
    case UpstreamError::ResponseTimeout:
      reject(504, "Upstream response timeout");
      break;
    case UpstreamError::Reset:
    case UpstreamError::BadResponse:
      reject(502, "Invalid or interrupted upstream response");
      break;
    case UpstreamError::HeadTooLarge:
      reject(502, "Upstream response header fields too large");
      break;
  }
}

void DownstreamConnection::countBadResponse(UpstreamError e, bool response_started) {
  static const uint16_t kHeadTooLarge = metrics::labelId("head_too_large");
  static const uint16_t kMalformed = metrics::labelId("malformed");
  static const uint16_t kTruncated = metrics::labelId("truncated");
  uint16_t reason = e == UpstreamError::HeadTooLarge  ? kHeadTooLarge
                    : e == UpstreamError::BadResponse ? kMalformed
                    : e == UpstreamError::Reset && response_started ? kTruncated
                                                                    : 0;
  if (reason == 0) return;
  uint16_t upstream = upstreamPool().config().metrics_label;
  metrics::local().add(metrics::Id::UpstreamBadResponses, {upstream, reason, 0});
}

void DownstreamConnection::onUpstreamDrained() {
  EventScope scope(this);
  if (read_paused_ && req_ && (!req_->message_complete || req_->tunnel) && !req_->waiting_filter) {
    if (req_->upstream && req_->upstream->pendingBytes() < kLowWatermark) resumeInput();
  }
}

void DownstreamConnection::flushClient() {
  Request& r = *req_;
  r.response_flushed |= r.response_started;
  if (tls_) {
    r.bytes_out += r.out.size();
    if (!tls_->session.encrypt(r.out)) {
      abortRequest();
      closeConnection();
      return;
    }
    flushTls();
    return;
  }
  r.write_req.data = this;
  size_t before = r.out.size();
  WriteResult result = writeBuffer(reinterpret_cast<uv_stream_t*>(&tcp_), &r.write_req, r.out, &r.writing_bytes,
                      onWriteCb);
  r.bytes_out += before - r.out.size();  // what left at once; uv_write's part counts on completion
  if (result == WriteResult::Failed) {
    abortRequest();
    closeConnection();
    return;
  }
  if (r.writing_bytes > 0 && deadline_kind_ == DeadlineKind::None) armDeadline(DeadlineKind::WriteStall);
}

void DownstreamConnection::onWriteCb(uv_write_t* req, int status) noexcept {
  auto* c = static_cast<DownstreamConnection*>(req->data);
  c->onWritten(status);
}

void DownstreamConnection::onWritten(int status) {
  EventScope scope(this);
  if (!req_) return;
  Request& r = *req_;
  size_t done = r.writing_bytes;
  r.writing_bytes = 0;
  if (deadline_kind_ == DeadlineKind::WriteStall) disarmDeadline();
  if (closing_) return;
  if (status != 0) {
    abortRequest();
    closeConnection();
    return;
  }
  r.out.drain(done);
  r.bytes_out += done;
  if (!r.out.empty()) flushClient();
  if (!closing_ && r.upstream && r.out.size() < kLowWatermark) r.upstream->resumeReading();
}

void DownstreamConnection::afterEvent() {
  // Requests finish here, at the outermost level, never inside a parser callback or a
  // nested handler; pipelined requests are then taken one by one, iteratively. A
  // lingering connection takes none: what the client still sends, already-received TLS
  // records included, is discarded, never parsed as a request.
  while (!closing_ && !lingering_) {
    if (req_) {
      Request& r = *req_;
      if (!r.response_complete || !outputFlushed()) return;
      finishRequest();
      continue;
    }
    if (read_paused_) return;
    if (in_.unconsumed() == 0) {
      // Ciphertext that waited for room in the block (pipelined requests over TLS).
      if (!tls_ || tls_->session.pendingInput() == 0) return;
      ++depth_;
      onTlsRead(nullptr, 0);
      --depth_;
      if (!req_) return;
      continue;
    }
    ++depth_;
    resumeInput();  // a pipelined head may continue in ciphertext the block had no room for
    --depth_;
    if (!req_) return;
  }
}

void DownstreamConnection::finishRequest() {
  Request& r = *req_;
  bool keep = r.keep_alive && r.message_complete && !close_after_response_ && !draining_;
  // Closing with client bytes still unread makes the kernel answer them with a reset,
  // which can destroy the response on its way (a 431 to a client still sending its
  // head): half-close, discard what still comes, close on EOF or after header_read.
  bool linger = !keep && (!r.message_complete || in_.unconsumed() > 0);
  releaseRequest();
  if (!keep) {
    if (linger) {
      lingerThenClose();
    } else {
      closeConnection();
    }
    return;
  }
  in_.compact();  // pipelined bytes may already wait in the block
  startReading();
  if (in_.unconsumed() == 0) {
    in_.release();
    // An idle HTTPS client must not keep OpenSSL's ~33 KiB of record buffers.
    if (tls_ && tls_->session.pendingInput() == 0) tls_->session.releaseIdleMemory();
    armDeadline(DeadlineKind::Idle);
  }
}

void DownstreamConnection::lingerThenClose() {
  lingering_ = true;
  in_.release();
  if (tls_ && tls_->session.state() == TlsState::Established) {
    tls_->session.shutdown();
    flushTls();
    if (closing_) return;
  }
  auto* req = new uv_shutdown_t;
  req->data = this;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t* q, int) {
        delete q;  // the connection closes on the client's EOF or the deadline
      }) != 0) {
    delete req;
    closeConnection();
    return;
  }
  startReading();
  armDeadline(DeadlineKind::HeaderRead);
}

void DownstreamConnection::releaseRequest() {
  Request& r = *req_;
  recordMetrics(r);
  if (!admin_ && (r.head_complete || r.status != 0)) {
    // A request no filter and no answer of the gateway's gave an id needs one only for
    // the access log: generated here, not for every request.
    if (r.ctx.request_id.empty() && log::accessLogEnabled()) r.ctx.request_id = worker().newRequestId(r.arena);
    writeAccessLog(worker(), r);
  }
  worker().unpinGeneration(r.generation);
  r.generation = nullptr;
  worker().releaseRequest(&r);
  req_ = nullptr;
}

void DownstreamConnection::recordMetrics(const Request& r) {
  if (admin_) return;
  metrics::MetricStore& m = metrics::local();
  m.add(metrics::Id::RequestsInFlight, {}, -1);
  if (r.status == 0) return;
  uint16_t route = r.ctx.route ? r.ctx.route->metrics_label : 0;
  m.add(metrics::Id::RequestsTotal,
        {route, metrics::methodLabel(r.ctx.method), metrics::statusLabel(r.status)});
  uint64_t now_ns = monotonicNs();
  m.observe(metrics::Id::RequestDuration, {route, 0, 0}, now_ns - r.start_ns);
  // The gateway's own refusals (error_code set) count as errors on /status: an operator
  // watching a route wants to see 401s and 429s, not only the upstream's 5xx.
  bool refused = !r.error_code.empty() && r.status >= 400;
  m.windows().record(route, now_ns,
                     {now_ns - r.start_ns, r.status >= 500 || refused, r.status == 429 && refused});
}

void DownstreamConnection::armDeadline(DeadlineKind kind) {
  DeadlineList* list = nullptr;
  uint64_t ms = 0;
  const Worker::ConnectionLimits& l = worker().limits();
  switch (kind) {
    case DeadlineKind::None:
      disarmDeadline();
      return;
    case DeadlineKind::HeaderRead:
      list = &worker().headerDeadlines();
      ms = l.header_read_ms;
      break;
    case DeadlineKind::BodyRead:
      list = &worker().bodyDeadlines();
      ms = l.body_read_ms;
      break;
    case DeadlineKind::Idle:
      list = &worker().idleDeadlines();
      ms = l.idle_ms;
      break;
    case DeadlineKind::WriteStall:
      list = &worker().writeDeadlines();
      ms = l.write_ms;
      break;
  }
  deadline_kind_ = kind;
  list->push(this, worker().nowMs() + ms);
  worker().scheduleDeadline(deadline_ms);
}

void DownstreamConnection::disarmDeadline() {
  DeadlineList::unlink(this);
  deadline_kind_ = DeadlineKind::None;
}

void DownstreamConnection::detachUpstream() {
  Request& r = *req_;
  cancelRetryTimer();
  if (r.waiting_upstream) {
    r.waiting_upstream = false;
    upstreamPool().cancelWait(this);
  }
  if (r.attempt_open) {
    // The outcome is unknown: neither a failure nor a success of the endpoint.
    r.attempt_open = false;
    upstreamPool().requestEnded(r.endpoint_index);
    if (r.breaker_trial) upstreamPool().endpointState(r.endpoint_index).releaseTrial();
  }
  if (r.upstream) {
    r.upstream->abort();
    r.upstream = nullptr;
  }
}

void DownstreamConnection::abortRequest() {
  if (!req_) return;
  Request& r = *req_;
  if (r.waiting_filter && r.ctx.route && r.filters_run > 0) {
    // The filter's asynchronous call must not resume a request that is gone.
    r.waiting_filter = false;
    in_.setPinned(false);
    r.ctx.route->chain[r.filters_run - 1]->onAbandon(r.ctx);
  }
  detachUpstream();
  if (r.status == 0) r.status = 499;  // nginx's "client closed request", for the log
  // Not released here: the caller may be a parser callback or a handler nested in one
  // (a local reply whose write fails at once), and those still hold the request. Every
  // abort is followed by closeConnection(), whose close callback releases it, after a
  // write libuv may still own has been cancelled.
}

void DownstreamConnection::countUnfinishedHandshake() {
  // A connection that never sent a byte (a port probe) started no handshake.
  if (tls_ && tls_->started && tls_->session.state() == TlsState::Handshaking) {
    metrics::local().add(metrics::Id::TlsHandshakeErrors, {listener_label_, 0, 0});
  }
}

void DownstreamConnection::onDeadline() {
  EventScope scope(this);
  DeadlineKind kind = deadline_kind_;
  deadline_kind_ = DeadlineKind::None;
  if (closing_) return;
  countUnfinishedHandshake();  // a handshake that timed out
  if (kind == DeadlineKind::HeaderRead && req_ && in_.length() > 0 && !req_->head_complete) {
    close_after_response_ = true;
    reject(408, "Request header timeout");
    return;
  }
  if (kind == DeadlineKind::BodyRead && req_ && !req_->response_started) {
    // The client stopped sending its body: its fault, not the upstream's (the attempt ends
    // with no verdict on the endpoint).
    close_after_response_ = true;
    reject(408, "Request body timeout");
    return;
  }
  if (req_) abortRequest();
  closeConnection();
}

void DownstreamConnection::drain() {
  draining_ = true;
  if (!req_) closeConnection();
}

void DownstreamConnection::forceClose() {
  if (req_) abortRequest();
  closeConnection();
}

void DownstreamConnection::closeConnection() {
  if (closing_) return;
  if (tls_ && tls_->writing == 0) {
    // close_notify (or a pending alert), best effort: a request is never finished while
    // its response is still queued, so nothing of value waits behind it.
    if (tls_->session.state() == TlsState::Established) tls_->session.shutdown();
    Buffer& out = tls_->session.output();
    iovec iov[8];
    size_t n = out.peek(iov, 8);
    if (n > 0) uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), reinterpret_cast<uv_buf_t*>(iov), unsigned(n));
  }
  closing_ = true;
  disarmDeadline();
  worker().removeConnection(this);
  if (admitted_) worker().server().connectionLimiter().release(peer_ip16_, counted_per_ip_);
  if (!admin_) metrics::local().add(metrics::Id::ConnectionsActive, {listener_label_, 0, 0}, -1);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onCloseCb);
}

void DownstreamConnection::onCloseCb(uv_handle_t* h) noexcept {
  auto* c = static_cast<DownstreamConnection*>(h->data);
  if (c->req_) c->releaseRequest();  // one whose write was cancelled by the close
  c->in_.release();
  delete c;
}

}  // namespace gw
