#include "gateway/downstream.h"

#include <cstring>

#include "gateway/http2/server_codec.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/server.h"
#include "gateway/stream_write.h"
#include "gateway/worker.h"

namespace gw {

// ---------------------------------------------------------------------------------------
// Connection life

DownstreamConnection::DownstreamConnection(size_t listener_index, bool admin)
    : listener_index_(uint16_t(listener_index)), admin_(admin) {}

DownstreamConnection::~DownstreamConnection() = default;

namespace {
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
}  // namespace

bool DownstreamConnection::chooseCodec() {
  if (codec_chosen_) return true;
  if (admin_) {
    codec_chosen_ = true;
    return true;
  }
  const auto& listeners = worker().currentGeneration()->runtime->config->listeners;
  if (listener_index_ >= listeners.size()) {  // a reload dropped it: HTTP/1.1 until restart
    codec_chosen_ = true;
    return true;
  }
  const ListenerConfig& l = listeners[listener_index_];
  bool h2 = false;
  if (tls_) {
    h2 = tls_->session.info().alpn == "h2";
  } else if (l.h2c) {
    // Prior knowledge: the preface, which no HTTP/1.1 request begins with. `Upgrade: h2c`
    // is never honoured (it is hop-by-hop like any other Upgrade).
    size_t n = std::min(in_.unconsumed(), kHttp2Preface.size());
    const char* p = in_.data() + in_.consumed();
    if (std::memcmp(p, kHttp2Preface.data(), n) == 0) {
      if (n < kHttp2Preface.size()) return false;
      h2 = true;
    }
  }
  codec_chosen_ = true;
  if (h2) {
    disarmDeadline();  // the session keeps its own
    h2_ = std::make_unique<Http2ServerCodec>(*this, l.http2_settings);
  }
  return true;
}

void DownstreamConnection::processInput() {
  if (!chooseCodec()) return;
  if (h2_) {
    h2_->processInput();
  } else {
    codec_.processInput();
  }
}

void DownstreamConnection::abortRequests() {
  if (h2_) {
    h2_->abortAll();
  } else {
    codec_.abortRequest();
  }
}

OutputSlot* DownstreamConnection::output() {
  if (h2_) return &h2_->output();
  Http1Request* r = codec_.request();
  return r ? &r->output : nullptr;
}

void DownstreamConnection::countWritten(size_t n) {
  // An HTTP/2 session counts each stream's bytes as it frames them.
  if (!h2_) codec_.request()->exchange.bytes_out += n;
}

void DownstreamConnection::onOutputDrained() {
  if (closing_) return;
  if (h2_) {
    h2_->onOutputDrained();
  } else if (Exchange* ex = codec_.exchange()) {
    ex->onResponseDrained();
  }
}

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
  if (!h2_) codec_.watchBody();
  if (reading_ || closing_) return;
  reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAllocCb, onReadCb) == 0;
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
  if (!c->h2_ && c->codec_.readingBody()) c->in_.reserveBulk();
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
  if (nread < 0 && h2_) {
    // An HTTP/2 client that closes its side is gone: its streams cannot be answered.
    h2_->abortAll();
    closeConnection();
    return;
  }
  if (nread < 0) {
    const Exchange* ex = codec_.exchange();
    if (nread == UV_ENOBUFS && ex && ex->head_complete) {
      // The block is full of what the parser cannot take yet: a body whose request waits
      // (continueRequest() or onUpstreamAvailable() reads again) or requests pipelined
      // behind this one (finishRequest() reads again). Not a reason to drop the client.
      stopReading();
      return;
    }
    if (nread == UV_ENOBUFS && ex && !ex->head_complete) {
      codec_.reject(431, "Request header fields too large");
      return;
    }
    // The client is gone (or half-closed).
    if (nread == UV_EOF && codec_.answersAfterEof()) {
      codec_.endAfterResponse();
      stopReading();
      return;
    }
    countUnfinishedHandshake();  // the client gave up mid-handshake
    codec_.abortRequest();
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
  if (!h2_ && !codec_.exchange() && deadline_kind_ == DeadlineKind::Idle) {
    armDeadline(DeadlineKind::HeaderRead);
  }
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
    abortRequests();
    closeConnection();  // sends the alert if the socket takes it
    return;
  }
  flushTls();  // handshake messages, tickets
  if (closing_) return;
  if (s.peerClosed()) {
    if (!h2_ && codec_.answersAfterEof()) {
      codec_.endAfterResponse();
    } else {
      abortRequests();
      closeConnection();
      return;
    }
  }
  if (res.plaintext == 0 && !res.sink_full) return;
  // A full block is no 431 by itself: the head may be complete in it, not parsed yet (a
  // pipelined head begun before the rest of it was decrypted). processInput() answers 431
  // when the head alone passes the limit.
  if (!h2_ && !codec_.exchange() && deadline_kind_ == DeadlineKind::Idle) {
    armDeadline(DeadlineKind::HeaderRead);
  }
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
      abortRequests();
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
    abortRequests();
    closeConnection();
    return;
  }
  t.session.output().drain(done);
  flushTls();
  onOutputDrained();
}

bool DownstreamConnection::outputFlushed() const {
  const OutputSlot& o = *const_cast<DownstreamConnection*>(this)->output();
  if (tls_) return tls_->writing == 0 && tls_->session.output().empty() && o.out.empty();
  return o.writing_bytes == 0 && o.out.empty();
}

size_t DownstreamConnection::queuedBytes() const {
  return tls_ ? tls_->session.output().size() : const_cast<DownstreamConnection*>(this)->output()->out.size();
}

// ---------------------------------------------------------------------------------------
// Output

void DownstreamConnection::flushOutput() {
  if (closing_) return;
  if (!h2_) {
    Http1Request& r = *codec_.request();
    r.response_flushed |= r.exchange.response_started;
  }
  OutputSlot& o = *output();
  if (tls_) {
    countWritten(o.out.size());
    if (!tls_->session.encrypt(o.out)) {
      abortRequests();
      closeConnection();
      return;
    }
    flushTls();
    return;
  }
  o.write_req.data = this;
  size_t before = o.out.size();
  WriteResult result =
      writeBuffer(reinterpret_cast<uv_stream_t*>(&tcp_), &o.write_req, o.out, &o.writing_bytes, onWriteCb);
  // What left at once; uv_write's part counts on completion.
  countWritten(before - o.out.size());
  if (result == WriteResult::Failed) {
    abortRequests();
    closeConnection();
    return;
  }
  if (o.writing_bytes > 0 && deadline_kind_ == DeadlineKind::None) armDeadline(DeadlineKind::WriteStall);
}

void DownstreamConnection::onWriteCb(uv_write_t* req, int status) noexcept {
  auto* c = static_cast<DownstreamConnection*>(req->data);
  c->onWritten(status);
}

void DownstreamConnection::onWritten(int status) {
  EventScope scope(this);
  OutputSlot* o = output();
  if (!o) return;
  size_t done = o->writing_bytes;
  o->writing_bytes = 0;
  if (deadline_kind_ == DeadlineKind::WriteStall) disarmDeadline();
  if (closing_) return;
  if (status != 0) {
    abortRequests();
    closeConnection();
    return;
  }
  o->out.drain(done);
  countWritten(done);
  if (!o->out.empty()) flushOutput();
  onOutputDrained();
}

void DownstreamConnection::afterEvent() {
  if (h2_) {
    if (closing_) return;
    ++depth_;  // what the session does here (a stream's release, a flush) nests no afterEvent
    h2_->afterEvent();
    --depth_;
    if (!closing_ && !lingering_ && h2_->done() && outputFlushed()) lingerThenClose();
    return;
  }
  // Requests finish here, at the outermost level, never inside a parser callback or a
  // nested handler; pipelined requests are then taken one by one, iteratively. A
  // lingering connection takes none: what the client still sends, already-received TLS
  // records included, is discarded, never parsed as a request.
  while (!closing_ && !lingering_) {
    if (const Exchange* ex = codec_.exchange()) {
      if (!ex->response_complete || !outputFlushed()) return;
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
      if (!codec_.exchange()) return;
      continue;
    }
    ++depth_;
    resumeInput();  // a pipelined head may continue in ciphertext the block had no room for
    --depth_;
    if (!codec_.exchange()) return;
  }
}

void DownstreamConnection::finishRequest() {
  // Closing with client bytes still unread makes the kernel answer them with a reset,
  // which can destroy the response on its way (a 431 to a client still sending its
  // head): half-close, discard what still comes, close on EOF or after header_read.
  bool linger = false;
  bool keep = codec_.finishRequest(&linger);
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
  if (lingering_ || h2_) {  // a write stall, or the end of a linger
    abortRequests();
    closeConnection();
    return;
  }
  countUnfinishedHandshake();  // a handshake that timed out
  const Exchange* ex = codec_.exchange();
  if (kind == DeadlineKind::HeaderRead && ex && in_.length() > 0 && !ex->head_complete) {
    codec_.endAfterResponse();
    codec_.reject(408, "Request header timeout");
    return;
  }
  if (kind == DeadlineKind::BodyRead && ex && !ex->response_started) {
    // The client stopped sending its body: its fault, not the upstream's (the attempt ends
    // with no verdict on the endpoint).
    codec_.endAfterResponse();
    codec_.reject(408, "Request body timeout");
    return;
  }
  codec_.abortRequest();
  closeConnection();
}

void DownstreamConnection::drain() {
  draining_ = true;
  if (h2_) {
    EventScope scope(this);
    h2_->drain();
    return;
  }
  if (!codec_.exchange()) closeConnection();
}

void DownstreamConnection::onReload() {
  if (!h2_ || closing_) return;
  EventScope scope(this);
  h2_->drain();
}

void DownstreamConnection::forceClose() {
  abortRequests();
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
  c->codec_.releaseRequest();  // one whose write was cancelled by the close
  if (c->h2_) c->h2_->releaseAll();
  c->in_.release();
  delete c;
}

}  // namespace gw
