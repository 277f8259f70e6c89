#include "gateway/http1/server_codec.h"

#include "gateway/downstream.h"
#include "gateway/http1/chunked.h"
#include "gateway/http_util.h"
#include "gateway/path.h"
#include "gateway/worker.h"

namespace gw {

namespace {

constexpr size_t kMaxRequestHeaders = 128;
constexpr size_t kMaxChunkExtensionBytes = 4096;

Http1ServerCodec* fromParser(llhttp_t* p) { return static_cast<Http1ServerCodec*>(p->data); }

}  // namespace

void Http1Request::recycle() {
  exchange.reset();
  head.reset();
  if (trailer.seen()) trailer.reset();
  output.out.clear();
  output.writing_bytes = 0;
  parsed = 0;
  reject_status = 0;
  chunk_extension_bytes = 0;
  keep_alive = true;
  http10 = expect_continue = chunked_response = trailers_sent = response_flushed = false;
}

bool Http1ServerCodec::answersAfterEof() const {
  // A complete request still gets its answer, and so does one whose body waits unparsed in
  // the block until the request can go on: all of it has come, or never will (then the
  // upstream's timeout ends the exchange).
  if (!req_) return false;
  const Exchange& r = req_->exchange;
  return !r.tunnel && (r.request_complete || r.waiting_filter || r.bodyAwaitsUpstream());
}

void Http1ServerCodec::beginRequest() {
  req_ = conn_.worker().acquireRequest();
  req_->exchange.begin(*this, conn_.worker());
  llhttp_init(&req_->parser, HTTP_REQUEST, &parserSettings());
  req_->parser.data = this;
  if (conn_.deadlineKind() != DeadlineKind::HeaderRead) conn_.armDeadline(DeadlineKind::HeaderRead);
}

void Http1ServerCodec::processInput() {
  while (!conn_.closing() && in().unconsumed() > 0 && !conn_.readPaused()) {
    if (!req_) beginRequest();
    Http1Request& r = *req_;
    Exchange& ex = r.exchange;
    if (ex.tunnel) {
      if (!ex.upstream) return;
      ex.onTunnelBytes(in().data() + in().consumed(), in().unconsumed());
      in().consume(in().unconsumed());
      ex.flushUpstream();
      if (conn_.closing()) return;
      if (ex.upstreamCongested()) conn_.stopReading();
      in().compact();
      conn_.armDeadline(DeadlineKind::Idle);
      return;
    }
    if (ex.request_complete || ex.waiting_filter || ex.response_complete) return;
    if (ex.bodyAwaitsUpstream()) {
      conn_.stopReading();  // resumeRequestBody() reads again once a connection takes the body
      return;
    }
    // Until the head is complete its bytes stay unconsumed at the front of the block
    // (parsing resumes at r.parsed), so the block may move or grow under the head's
    // offsets without invalidating them.
    size_t offset = ex.head_complete ? 0 : r.parsed;
    const char* data = in().data() + in().consumed() + offset;
    size_t len = in().unconsumed() - offset;
    if (len == 0) return;
    llhttp_errno_t err = llhttp_execute(&r.parser, data, len);
    size_t used = err == HPE_OK ? len : size_t(llhttp_get_error_pos(&r.parser) - data);
    if (ex.head_complete) {
      in().consume(offset + used);
    } else {
      r.parsed = offset + used;
    }
    ex.bytes_in += used;
    if (conn_.closing()) return;
    if (ex.upstream) {
      ex.flushUpstream();
      if (conn_.closing()) return;
      if (ex.upstreamCongested()) conn_.stopReading();
    }
    if (err == HPE_OK) {
      if (!ex.head_complete && r.parsed > conn_.worker().limits().max_head_bytes) {
        reject(431, "Request header fields too large");
        return;
      }
      if (ex.head_complete) in().compact();  // body bytes are forwarded: reuse the block
      return;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      // A filter is waiting, a reply was sent, the request is complete, or its body waits
      // for an upstream connection.
      if (ex.bodyAwaitsUpstream()) conn_.stopReading();
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

void Http1ServerCodec::protocolError(llhttp_errno_t) {
  // Nothing more can be trusted on this connection: answer 400 and close.
  close_after_response_ = true;
  reject(400, "Malformed HTTP request");
}

int Http1ServerCodec::onUrl(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  size_t total = c->req_->head.onFirstLine(c->headBase(), at, len);
  if (total > c->conn_.worker().limits().max_uri_bytes) {
    c->req_->reject_status = 414;
    return HPE_USER;
  }
  return 0;
}

int Http1ServerCodec::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  if (c->req_->exchange.head_complete) return c->onTrailer(c->req_->trailer.onName(at, len, c->maxTrailerBytes()));
  c->req_->head.onField(c->headBase(), at, len);
  if (c->req_->head.fieldCount() > kMaxRequestHeaders) {
    c->req_->reject_status = 431;
    return HPE_USER;
  }
  return 0;
}

int Http1ServerCodec::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  if (c->req_->exchange.head_complete) return c->onTrailer(c->req_->trailer.onValue(at, len, c->maxTrailerBytes()));
  c->req_->head.onValue(c->headBase(), at, len);
  return 0;
}

int Http1ServerCodec::onHeaderValueComplete(llhttp_t* p) {
  auto* c = fromParser(p);
  Http1Request& r = *c->req_;
  if (!r.exchange.head_complete) return 0;
  return c->onTrailer(r.trailer.onFieldComplete(r.exchange.request_trailers, kMaxRequestHeaders));
}

size_t Http1ServerCodec::maxTrailerBytes() const { return conn_.worker().limits().max_head_bytes; }

int Http1ServerCodec::onTrailer(TrailerCollector::Result result) {
  // The chunked body's trailer section (forwarded upstream with the body's end), held to
  // the head's limits.
  if (result == TrailerCollector::Result::Ok) return 0;
  req_->reject_status = result == TrailerCollector::Result::TooLarge ? 431 : 400;
  return HPE_USER;
}

int Http1ServerCodec::onHeadersCompleteCb(llhttp_t* p) { return fromParser(p)->onHeadersComplete(); }

int Http1ServerCodec::onHeadersComplete() {
  Http1Request& r = *req_;
  Exchange& ex = r.exchange;
  ex.head_complete = true;
  conn_.disarmDeadline();
  // A head that arrived whole in one read was never measured while incomplete.
  if (r.head.extent() > conn_.worker().limits().max_head_bytes) {
    close_after_response_ = true;
    reject(431, "Request header fields too large");
    return headDone();
  }
  llhttp_t& p = r.parser;
  const char* base = headBase();
  r.head.toHeaders(base, ex.headers);
  r.http10 = p.http_major == 1 && p.http_minor == 0;
  if (p.http_major != 1 || p.http_minor > 1 || !headIsUnambiguous(ex.headers) ||
      !rawHeadIsStrict(base, in().data() + in().length(), in().data() + in().capacity())) {
    close_after_response_ = true;
    reject(400, "Malformed HTTP request");
    return headDone();
  }
  r.keep_alive = keepsAlive(p) && !close_after_response_ && !conn_.draining();
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
  if (!ex.acceptTarget(r.head.firstLine(base), target)) {
    close_after_response_ = true;
    reject(400, "Invalid request target");
    return headDone();
  }
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

int Http1ServerCodec::headDone() {
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

int Http1ServerCodec::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* c = fromParser(p);
  c->watchBody();  // progress
  if (!c->req_->exchange.onRequestBody(at, len)) {
    c->req_->reject_status = 413;
    c->close_after_response_ = true;
    return HPE_USER;
  }
  return 0;
}

int Http1ServerCodec::onChunkExtension(llhttp_t* p, const char*, size_t len) {
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

int Http1ServerCodec::onMessageComplete(llhttp_t* p) {
  auto* c = fromParser(p);
  c->req_->exchange.onRequestComplete();
  if (c->conn_.deadlineKind() == DeadlineKind::BodyRead) c->conn_.disarmDeadline();
  return HPE_PAUSED;  // one request at a time: pipelined ones wait in the input block
}

const llhttp_settings_t& Http1ServerCodec::parserSettings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_url = onUrl;
    s.on_header_field = onHeaderField;
    s.on_header_value = onHeaderValue;
    s.on_header_value_complete = onHeaderValueComplete;
    s.on_headers_complete = onHeadersCompleteCb;
    s.on_body = onBody;
    s.on_message_complete = onMessageComplete;
    s.on_chunk_extension_name = onChunkExtension;
    s.on_chunk_extension_value = onChunkExtension;
    return s;
  }();
  return settings;
}

std::string_view Http1ServerCodec::protocol() const {
  return req_ && req_->http10 ? "HTTP/1.0" : "HTTP/1.1";
}

void Http1ServerCodec::sendHead(int status, const HeaderList& headers, bool length_known) {
  Http1Request& r = *req_;
  // A body of unknown length is re-framed for the client: chunked for HTTP/1.1,
  // close-delimited for HTTP/1.0.
  r.chunked_response = !length_known && !r.http10;
  if (!length_known && r.http10) r.keep_alive = false;
  Buffer& o = r.output.out;
  o.append("HTTP/1.1 ", 9);
  o.appendDecimal(uint64_t(status));
  o.append(" ", 1);
  o.append(reasonPhrase(status));
  o.append("\r\n", 2);
  for (const Header& h : headers) o.appendFieldLine(h.name, h.value);
  if (r.chunked_response) o.append("Transfer-Encoding: chunked\r\n");
  if (!r.keep_alive || close_after_response_ || conn_.draining()) {
    r.keep_alive = false;
    o.append("Connection: close\r\n");
  } else if (r.http10) {
    o.append("Connection: keep-alive\r\n");
  }
  o.append("\r\n", 2);
  if (status == 101) conn_.armDeadline(DeadlineKind::Idle);  // a tunnel lives while bytes move
}

void Http1ServerCodec::sendBody(const char* data, size_t len) {
  Http1Request& r = *req_;
  if (r.chunked_response) {
    http1::appendChunk(r.output.out, data, len);
    return;
  }
  r.output.out.appendExternal(data, len);
  if (r.exchange.tunnel) conn_.armDeadline(DeadlineKind::Idle);  // either way
}

void Http1ServerCodec::sendTrailers(const HeaderList& trailers) {
  // Only a chunked body has room for trailer fields (RFC 9112 §7.1.2); with a length they
  // are dropped, as RFC 9110 §6.5 allows.
  Http1Request& r = *req_;
  if (!r.chunked_response || r.trailers_sent) return;
  r.trailers_sent = true;
  Buffer& o = r.output.out;
  o.append("0\r\n", 3);
  for (const Header& h : trailers) o.appendFieldLine(h.name, h.value);  // copied
}

void Http1ServerCodec::endResponse() {
  Http1Request& r = *req_;
  if (!r.chunked_response) return;
  if (r.trailers_sent) {
    r.output.out.append("\r\n", 2);
  } else {
    http1::appendLastChunk(r.output.out);
  }
}

bool Http1ServerCodec::takeBackHead() {
  Http1Request& r = *req_;
  if (r.response_flushed || r.output.writing_bytes > 0) return false;
  r.output.out.clear();
  return true;
}

void Http1ServerCodec::reset() {
  abortRequest();
  conn_.closeConnection();
}

void Http1ServerCodec::requestBodyWanted() {
  if (!req_->expect_continue) return;
  req_->output.out.append("HTTP/1.1 100 Continue\r\n\r\n");
  conn_.flushOutput();
}

void Http1ServerCodec::resumeRequest() {
  llhttp_resume(&req_->parser);
  // Paused at the end of a bodiless head with no bytes left, llhttp completes the message
  // only on its next execute: feed it nothing, or the connection would not be kept alive.
  if (!req_->exchange.request_complete && in().unconsumed() == 0) {
    llhttp_execute(&req_->parser, "", 0);
  }
  conn_.resumeInput();
}

void Http1ServerCodec::completeBodilessRequest() {
  // See resumeRequest(): the connection is kept alive.
  llhttp_resume(&req_->parser);
  llhttp_execute(&req_->parser, "", 0);
}

void Http1ServerCodec::requestBodyUnblocked() {
  // Resumed at once, not when the body is next read: a paused parser would report a
  // stale position to a processInput() that a flush's drain callback runs.
  llhttp_resume(&req_->parser);
}

void Http1ServerCodec::relayPendingTunnelBytes() {
  if (in().unconsumed() > 0) processInput();
}

void Http1ServerCodec::watchBody() {
  // body_read runs while the body is read (reset by each piece of it): a request that
  // stalls its body would otherwise hold its upstream connection and, through the
  // upstream's response timeout, have the endpoint blamed.
  const Exchange* r = req_ ? &req_->exchange : nullptr;
  if (r && r->head_complete && !r->request_complete && r->request_framing != BodyFraming::None &&
      !r->tunnel && !r->response_started && !r->waiting_filter &&
      (conn_.deadlineKind() == DeadlineKind::None ||
       conn_.deadlineKind() == DeadlineKind::BodyRead)) {
    conn_.armDeadline(DeadlineKind::BodyRead);
  }
}

void Http1ServerCodec::abortRequest() {
  if (!req_) return;
  req_->exchange.abort();
  // Not released here: the caller may be a parser callback or a handler nested in one
  // (a local reply whose write fails at once), and those still hold the request. Every
  // abort is followed by the connection's close, whose callback releases it, after a write
  // libuv may still own has been cancelled.
}

void Http1ServerCodec::releaseRequest() {
  if (!req_) return;
  req_->exchange.finish();
  conn_.worker().releaseRequest(req_);
  req_ = nullptr;
}

bool Http1ServerCodec::finishRequest(bool* linger) {
  bool request_complete = req_->exchange.request_complete;
  bool keep = req_->keep_alive && request_complete && !close_after_response_ && !conn_.draining();
  *linger = !keep && (!request_complete || in().unconsumed() > 0);
  releaseRequest();
  return keep;
}

bool Http1ServerCodec::readingBody() const {
  const Exchange* r = exchange();
  return r && r->head_complete && !r->request_complete && !r->tunnel &&
         r->request_framing != BodyFraming::None;
}

InputBlock& Http1ServerCodec::in() { return conn_.input(); }
const char* Http1ServerCodec::headBase() { return in().data() + in().consumed(); }

// The rest of DownstreamStream is the transport's.
const DownstreamStream::Ip16& Http1ServerCodec::peerIp16() const { return conn_.peerIp16(); }
const TlsHandshakeInfo* Http1ServerCodec::tlsInfo() const { return conn_.tlsInfo(); }
size_t Http1ServerCodec::listenerIndex() const { return conn_.listenerIndex(); }
bool Http1ServerCodec::admin() const { return conn_.admin(); }
void Http1ServerCodec::flush() { conn_.flushOutput(); }
size_t Http1ServerCodec::queuedBytes() const { return conn_.queuedBytes(); }
void Http1ServerCodec::holdRequestHead(bool hold) { in().setPinned(hold); }
void Http1ServerCodec::resumeReading() { conn_.startReading(); }
void Http1ServerCodec::resumeRequestBody() { conn_.resumeInput(); }
bool Http1ServerCodec::requestBodyPaused() const { return conn_.readPaused(); }
void Http1ServerCodec::enterEvent() { conn_.enterEvent(); }
void Http1ServerCodec::leaveEvent() { conn_.leaveEvent(); }

}  // namespace gw
