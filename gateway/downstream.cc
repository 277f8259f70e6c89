#include "gateway/downstream.h"

#include <cstring>

#include "gateway/http_util.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/path.h"
#include "gateway/server.h"
#include "gateway/stream_write.h"
#include "gateway/worker.h"

namespace gw {

namespace {

constexpr size_t kMaxRequestHeaders = 128;
constexpr size_t kMaxChunkExtensionBytes = 4096;

DownstreamConnection* fromParser(llhttp_t* p) { return static_cast<DownstreamConnection*>(p->data); }

}  // namespace

void Http1Request::reset() {
  exchange.reset();
  head.reset();
  out.clear();
  writing_bytes = 0;
  parsed = 0;
  reject_status = 0;
  chunk_extension_bytes = 0;
  keep_alive = true;
  http10 = expect_continue = chunked_response = response_flushed = false;
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
  const Exchange* r = req_ ? &req_->exchange : nullptr;
  if (r && r->head_complete && !r->request_complete && r->request_framing != BodyFraming::None &&
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
  const Exchange* r = c->req_ ? &c->req_->exchange : nullptr;
  if (r && r->head_complete && !r->request_complete && !r->tunnel &&
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
    if (nread == UV_ENOBUFS && req_ && req_->exchange.head_complete) {
      // The block is full of what the parser cannot take yet: a body whose request waits
      // (continueRequest() or onUpstreamAvailable() reads again) or requests pipelined
      // behind this one (finishRequest() reads again). Not a reason to drop the client.
      stopReading();
      return;
    }
    if (nread == UV_ENOBUFS && req_ && !req_->exchange.head_complete) {
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
  if (!req_) return false;
  const Exchange& r = req_->exchange;
  return !r.tunnel && (r.request_complete || r.waiting_filter || r.bodyAwaitsUpstream());
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
  if (!closing_ && req_) req_->exchange.onResponseDrained();
}

bool DownstreamConnection::outputFlushed() const {
  if (tls_) return tls_->writing == 0 && tls_->session.output().empty() && req_->out.empty();
  return req_->writing_bytes == 0 && req_->out.empty();
}

size_t DownstreamConnection::queuedBytes() const {
  return tls_ ? tls_->session.output().size() : req_->out.size();
}

void DownstreamConnection::beginRequest() {
  req_ = worker().acquireRequest();
  req_->exchange.begin(*this, worker());
  llhttp_init(&req_->parser, HTTP_REQUEST, &parserSettings());
  req_->parser.data = this;
  if (deadline_kind_ != DeadlineKind::HeaderRead) armDeadline(DeadlineKind::HeaderRead);
}

void DownstreamConnection::processInput() {
  while (!closing_ && in_.unconsumed() > 0 && !read_paused_) {
    if (!req_) beginRequest();
    Http1Request& r = *req_;
    Exchange& ex = r.exchange;
    if (ex.tunnel) {
      if (!ex.upstream) return;
      ex.onTunnelBytes(in_.data() + in_.consumed(), in_.unconsumed());
      in_.consume(in_.unconsumed());
      ex.flushUpstream();
      if (closing_) return;
      if (ex.upstreamCongested()) stopReading();
      in_.compact();
      armDeadline(DeadlineKind::Idle);
      return;
    }
    if (ex.request_complete || ex.waiting_filter || ex.response_complete) return;
    if (ex.bodyAwaitsUpstream()) {
      stopReading();  // resumeInput() reads again once a connection takes the body
      return;
    }
    // Until the head is complete its bytes stay unconsumed at the front of the block
    // (parsing resumes at r.parsed), so the block may move or grow under the head's
    // offsets without invalidating them.
    size_t offset = ex.head_complete ? 0 : r.parsed;
    const char* data = in_.data() + in_.consumed() + offset;
    size_t len = in_.unconsumed() - offset;
    if (len == 0) return;
    llhttp_errno_t err = llhttp_execute(&r.parser, data, len);
    size_t used = err == HPE_OK ? len : size_t(llhttp_get_error_pos(&r.parser) - data);
    if (ex.head_complete) {
      in_.consume(offset + used);
    } else {
      r.parsed = offset + used;
    }
    ex.bytes_in += used;
    if (closing_) return;
    if (ex.upstream) {
      ex.flushUpstream();
      if (closing_) return;
      if (ex.upstreamCongested()) stopReading();
    }
    if (err == HPE_OK) {
      if (!ex.head_complete && r.parsed > worker().limits().max_head_bytes) {
        reject(431, "Request header fields too large");
        return;
      }
      if (ex.head_complete) in_.compact();  // body bytes are forwarded: reuse the block
      return;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      // A filter is waiting, a reply was sent, the request is complete, or its body waits
      // for an upstream connection.
      if (ex.bodyAwaitsUpstream()) stopReading();
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
  Http1Request& r = *req_;
  Exchange& ex = r.exchange;
  ex.head_complete = true;
  disarmDeadline();
  // A head that arrived whole in one read was never measured while incomplete.
  if (r.head.extent() > worker().limits().max_head_bytes) {
    close_after_response_ = true;
    reject(431, "Request header fields too large");
    return headDone();
  }
  llhttp_t& p = r.parser;
  const char* base = headBase();
  r.head.toHeaders(base, ex.headers);
  r.http10 = p.http_major == 1 && p.http_minor == 0;
  if (p.http_major != 1 || p.http_minor > 1 || !headIsUnambiguous(ex.headers) ||
      !rawHeadIsStrict(base, in_.data() + in_.length())) {
    close_after_response_ = true;
    reject(400, "Malformed HTTP request");
    return headDone();
  }
  r.keep_alive = keepsAlive(p) && !close_after_response_ && !draining_;
  ex.ctx.method = llhttp_method_name(static_cast<llhttp_method_t>(p.method));
  ex.head_method = p.method == HTTP_HEAD;
  ex.request_framing = (p.flags & F_CHUNKED) ? BodyFraming::Chunked
                       : (p.flags & F_CONTENT_LENGTH) && p.content_length > 0
                           ? BodyFraming::ContentLength
                           : BodyFraming::None;
  ex.content_length = ex.request_framing == BodyFraming::ContentLength ? p.content_length : 0;
  ex.identifyClient();

  if (p.method == HTTP_CONNECT) {
    reject(400, "CONNECT is not supported");
    return headDone();
  }
  bool websocket = false;
  if (p.upgrade) {
    std::string_view upgrade = ex.headers.get("upgrade");
    forEachToken(upgrade, [&](std::string_view t) { websocket |= equalsIgnoreCase(t, "websocket"); });
    // h2c and friends: answer in HTTP/1.1, as nginx does.
    if (!websocket) p.upgrade = 0;
    if (websocket && ex.request_framing != BodyFraming::None) {
      reject(400, "An upgrade request cannot carry a body");
      return headDone();
    }
    if (websocket) ex.upgrade_value = ex.arena.copy(upgrade);
  }

  RequestTarget target;
  std::string_view raw_target = r.head.firstLine(base);
  // "OPTIONS *" is refused too (as nginx does): routed as "/" it would change meaning.
  if (!parseRequestTarget(raw_target, ex.ctx.method, target) || target.asterisk ||
      normalizePath(target.path, ex.path_buf) != PathResult::Ok) {
    close_after_response_ = true;
    reject(400, "Invalid request target");
    return headDone();
  }
  ex.ctx.path = ex.path_buf;
  ex.ctx.query = ex.arena.copy(target.query);
  bool has_host = false;
  std::string_view host = ex.headers.get("host", &has_host);
  if (!target.authority.empty()) host = target.authority;
  if (!r.http10 && !has_host) {
    close_after_response_ = true;
    reject(400, "Missing Host header");
    return headDone();
  }
  if (ex.headers.count("host") > 1) {
    close_after_response_ = true;
    reject(400, "Multiple Host headers");
    return headDone();
  }
  if ((has_host || !target.authority.empty()) && !isValidAuthority(host)) {
    close_after_response_ = true;
    reject(400, "Invalid Host header");
    return headDone();
  }
  ex.ctx.host = host;
  r.expect_continue = equalsIgnoreCase(ex.headers.get("expect"), "100-continue");
  ex.onRequestHead(target, websocket);
  return headDone();
}

int DownstreamConnection::headDone() {
  const Exchange& ex = req_->exchange;
  if (ex.waiting_filter) return HPE_PAUSED;  // resumed by continueRequest()
  watchBody();
  // Answered locally: a request without a body still completes in the parser (so the
  // connection can carry the next one); with a body, parsing stops and the connection
  // closes after the answer.
  if (ex.response_started && ex.request_framing != BodyFraming::None) return HPE_PAUSED;
  // Queued in the bulkhead: the body has nowhere to go yet and must not be parsed (and
  // dropped); it waits in the input block until requestBodyUnblocked() resumes the parser.
  if (ex.bodyAwaitsUpstream()) return HPE_PAUSED;
  return 0;
}

// ---------------------------------------------------------------------------------------
// Request body

int DownstreamConnection::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  c->watchBody();  // progress
  if (!c->req_->exchange.onRequestBody(at, len)) {
    c->req_->reject_status = 413;
    c->close_after_response_ = true;
    return HPE_USER;
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
  c->req_->exchange.onRequestComplete();
  if (c->deadline_kind_ == DeadlineKind::BodyRead) c->disarmDeadline();
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

std::string_view DownstreamConnection::protocol() const {
  return req_ && req_->http10 ? "HTTP/1.0" : "HTTP/1.1";
}

void DownstreamConnection::sendHead(int status, const HeaderList& headers, bool length_known) {
  Http1Request& r = *req_;
  // A body of unknown length is re-framed for the client: chunked for HTTP/1.1,
  // close-delimited for HTTP/1.0.
  r.chunked_response = !length_known && !r.http10;
  if (!length_known && r.http10) r.keep_alive = false;
  Buffer& o = r.out;
  o.append("HTTP/1.1 ", 9);
  o.appendDecimal(uint64_t(status));
  o.append(" ", 1);
  o.append(reasonPhrase(status));
  o.append("\r\n", 2);
  for (const Header& h : headers) o.appendFieldLine(h.name, h.value);
  if (r.chunked_response) o.append("Transfer-Encoding: chunked\r\n");
  if (!r.keep_alive || close_after_response_ || draining_) {
    r.keep_alive = false;
    o.append("Connection: close\r\n");
  } else if (r.http10) {
    o.append("Connection: keep-alive\r\n");
  }
  o.append("\r\n", 2);
  if (status == 101) armDeadline(DeadlineKind::Idle);  // a tunnel lives while bytes move
}

void DownstreamConnection::sendBody(const char* data, size_t len) {
  Http1Request& r = *req_;
  if (r.chunked_response) {
    r.out.appendHex(len);
    r.out.append("\r\n", 2);
    r.out.appendExternal(data, len);
    r.out.append("\r\n", 2);
    return;
  }
  r.out.appendExternal(data, len);
  if (r.exchange.tunnel) armDeadline(DeadlineKind::Idle);  // either way
}

void DownstreamConnection::endResponse() {
  if (req_->chunked_response) req_->out.append("0\r\n\r\n", 5);
}

bool DownstreamConnection::takeBackHead() {
  Http1Request& r = *req_;
  if (r.response_flushed || r.writing_bytes > 0) return false;
  r.out.clear();
  return true;
}

void DownstreamConnection::reset() {
  abortRequest();
  closeConnection();
}

void DownstreamConnection::requestBodyWanted() {
  if (!req_->expect_continue) return;
  req_->out.append("HTTP/1.1 100 Continue\r\n\r\n");
  flushClient();
}

void DownstreamConnection::resumeRequest() {
  llhttp_resume(&req_->parser);
  // Paused at the end of a bodiless head with no bytes left, llhttp completes the message
  // only on its next execute: feed it nothing, or the connection would not be kept alive.
  if (!req_->exchange.request_complete && in_.unconsumed() == 0) llhttp_execute(&req_->parser, "", 0);
  resumeInput();
}

void DownstreamConnection::completeBodilessRequest() {
  // See resumeRequest(): the connection is kept alive.
  llhttp_resume(&req_->parser);
  llhttp_execute(&req_->parser, "", 0);
}

void DownstreamConnection::requestBodyUnblocked() {
  // Resumed at once, not when the body is next read: a paused parser would report a
  // stale position to a processInput() that a flush's drain callback runs.
  llhttp_resume(&req_->parser);
}

void DownstreamConnection::relayPendingTunnelBytes() {
  if (in_.unconsumed() > 0) processInput();
}

void DownstreamConnection::flushClient() {
  Http1Request& r = *req_;
  r.response_flushed |= r.exchange.response_started;
  if (tls_) {
    r.exchange.bytes_out += r.out.size();
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
  r.exchange.bytes_out += before - r.out.size();  // what left at once; uv_write's part counts on completion
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
  Http1Request& r = *req_;
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
  r.exchange.bytes_out += done;
  if (!r.out.empty()) flushClient();
  if (!closing_) r.exchange.onResponseDrained();
}

void DownstreamConnection::afterEvent() {
  // Requests finish here, at the outermost level, never inside a parser callback or a
  // nested handler; pipelined requests are then taken one by one, iteratively. A
  // lingering connection takes none: what the client still sends, already-received TLS
  // records included, is discarded, never parsed as a request.
  while (!closing_ && !lingering_) {
    if (req_) {
      if (!req_->exchange.response_complete || !outputFlushed()) return;
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
  const Http1Request& r = *req_;
  bool request_complete = r.exchange.request_complete;
  bool keep = r.keep_alive && request_complete && !close_after_response_ && !draining_;
  // Closing with client bytes still unread makes the kernel answer them with a reset,
  // which can destroy the response on its way (a 431 to a client still sending its
  // head): half-close, discard what still comes, close on EOF or after header_read.
  bool linger = !keep && (!request_complete || in_.unconsumed() > 0);
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
  req_->exchange.finish();
  worker().releaseRequest(req_);
  req_ = nullptr;
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

void DownstreamConnection::abortRequest() {
  if (!req_) return;
  req_->exchange.abort();
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
  if (kind == DeadlineKind::HeaderRead && req_ && in_.length() > 0 && !req_->exchange.head_complete) {
    close_after_response_ = true;
    reject(408, "Request header timeout");
    return;
  }
  if (kind == DeadlineKind::BodyRead && req_ && !req_->exchange.response_started) {
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
