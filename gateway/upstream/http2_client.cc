#include "gateway/upstream/http2_client.h"

#include <algorithm>
#include <cstring>

#include "gateway/http_util.h"
#include "gateway/upstream/upstream.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// Response bytes a stream may have in flight towards the gateway before its exchange takes
// them: with the exchange's high watermark this bounds what one slow client costs.
constexpr int32_t kStreamWindow = 256 * 1024;
// The connection window is given back as bytes arrive, so it only needs to cover the
// streams' windows for many streams to flow at once.
constexpr int32_t kConnectionWindow = 16 * 1024 * 1024;
// Until the upstream's SETTINGS say otherwise (RFC 9113 §6.5.2 recommends at least 100).
constexpr uint32_t kDefaultConcurrentStreams = 100;

std::string_view view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

void toNv(const HeaderList& fields, std::vector<nghttp2_nv>& out) {
  out.clear();
  for (const Header& h : fields) out.push_back(nv(h.name, h.value));
}

}  // namespace

struct Http2ClientCallbacks {
  static Http2ClientSession& session(void* user) { return *static_cast<Http2ClientSession*>(user); }

  static Http2UpstreamStream* stream(nghttp2_session* s, int32_t id) {
    return static_cast<Http2UpstreamStream*>(nghttp2_session_get_stream_user_data(s, id));
  }

  static ssize_t send(nghttp2_session*, const uint8_t* data, size_t len, int, void* user) {
    UpstreamConnection& c = session(user).conn_;
    if (c.outputFull()) return NGHTTP2_ERR_WOULDBLOCK;
    c.out().append(data, len);
    return ssize_t(len);
  }

  // DATA without a copy: the frame header, then the stream's bytes moved as they are.
  static int sendData(nghttp2_session* ns, nghttp2_frame* frame, const uint8_t* framehd,
                      size_t length, nghttp2_data_source*, void* user) {
    UpstreamConnection& c = session(user).conn_;
    Http2UpstreamStream* s = stream(ns, frame->hd.stream_id);
    if (!s || s->out.size() < length) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (c.outputFull()) return NGHTTP2_ERR_WOULDBLOCK;
    c.out().append(framehd, 9);
    c.out().moveFront(s->out, length);
    if (length > 0) s->body_sent = true;
    session(user).bodyProgress(*s);
    return 0;
  }

  static ssize_t readData(nghttp2_session* ns, int32_t id, uint8_t*, size_t length, uint32_t* flags,
                          nghttp2_data_source*, void*) {
    Http2UpstreamStream* s = stream(ns, id);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = std::min(length, s->out.size());
    if (n == 0 && !s->request_ended) {
      s->data_deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (s->request_ended && n == s->out.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->has_trailers) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        s->has_trailers = false;
        if (nghttp2_submit_trailer(ns, id, s->nv.data(), s->nv.size()) != 0) {
          return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
      }
    }
    return ssize_t(n);
  }

  static int beginHeaders(nghttp2_session* ns, const nghttp2_frame* frame, void*) {
    Http2UpstreamStream* s = stream(ns, frame->hd.stream_id);
    if (!s || frame->hd.type != NGHTTP2_HEADERS) return 0;
    s->head_bytes = 0;
    s->fields.clear();
    s->status = 0;
    return 0;
  }

  static int header(nghttp2_session* ns, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    Http2UpstreamStream* s = stream(ns, frame->hd.stream_id);
    if (!s || !s->handler) return 0;
    s->head_bytes += namelen + valuelen + 32;  // as SETTINGS_MAX_HEADER_LIST_SIZE counts
    if (s->head_bytes > session(user).conn_.maxResponseHeadBytes()) {
      s->too_large = true;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
    }
    std::string_view n = view(name, namelen), v = view(value, valuelen);
    if (n == ":status") {
      // nghttp2 checked for three digits (and not 101), no more: "050" is a final response
      // to it, whose DATA would reach the client before any head. The HTTP/1.1 parser's
      // range (100-599) applies.
      s->status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
      if (s->status < 100 || s->status > 599) {
        s->malformed = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
      }
      return 0;
    }
    // An interim head's fields are dropped: kept, every one of an unbounded series of them
    // would stay in the stream's arena until its end.
    if (!s->head_received && s->status < 200) return 0;
    // Trailers pass the filter an HTTP/1.1 upstream's do (no set-cookie, content-type...).
    if (s->head_received && !forwardableTrailer(n)) return 0;
    s->fields.add(n, v);
    return 0;
  }

  static int frameReceived(nghttp2_session* ns, const nghttp2_frame* frame, void* user) {
    Http2ClientSession& c = session(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      c.goaway_ = true;  // no new streams; the ones above last_stream_id are closed REFUSED
      return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    Http2UpstreamStream* s = stream(ns, frame->hd.stream_id);
    if (!s || !s->handler) return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS) {
      if (!s->head_received) {
        if (s->status < 200) return 0;  // an interim response: the final one follows
        s->head_received = true;
        s->deadline_ms = 0;
        UpstreamResponseHead head;
        head.status = s->status;
        head.http_minor = 1;
        bool found = false;
        std::string_view length = s->fields.get("content-length", &found);
        head.framing = found ? BodyFraming::ContentLength : end ? BodyFraming::None : BodyFraming::Chunked;
        if (found) head.content_length = std::strtoull(std::string(length).c_str(), nullptr, 10);
        head.headers = &s->fields;
        s->handler->onUpstreamHead(head);
        if (!s->handler) return 0;
        s->fields.clear();
      } else {
        s->handler->onUpstreamTrailers(s->fields);
        if (!s->handler) return 0;
      }
    }
    if (end) c.streamEnded(*s);
    return 0;
  }

  static int dataChunk(nghttp2_session* ns, uint8_t, int32_t id, const uint8_t* data, size_t len,
                       void* user) {
    Http2ClientSession& c = session(user);
    nghttp2_session_consume_connection(ns, len);
    Http2UpstreamStream* s = stream(ns, id);
    if (!s || !s->handler) {
      if (s) nghttp2_session_consume_stream(ns, id, len);
      return 0;
    }
    s->unconsumed += len;
    s->handler->onUpstreamBody(reinterpret_cast<const char*>(data), len);
    if (!s->read_done_due) {
      s->read_done_due = true;
      c.touched_.push_back(s);
    }
    return 0;
  }

  static int streamClosed(nghttp2_session* ns, int32_t id, uint32_t error_code, void* user) {
    Http2UpstreamStream* s = stream(ns, id);
    if (s) session(user).closed(*s, error_code);
    return 0;
  }
};

namespace {

const nghttp2_session_callbacks* clientCallbacks() {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* c;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_send_callback(c, Http2ClientCallbacks::send);
    nghttp2_session_callbacks_set_send_data_callback(c, Http2ClientCallbacks::sendData);
    nghttp2_session_callbacks_set_on_begin_headers_callback(c, Http2ClientCallbacks::beginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(c, Http2ClientCallbacks::header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c, Http2ClientCallbacks::frameReceived);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, Http2ClientCallbacks::dataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, Http2ClientCallbacks::streamClosed);
    return c;
  }();
  return cbs;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Http2UpstreamStream

void Http2UpstreamStream::recycle() {
  session = nullptr;
  handler = nullptr;
  id = -1;
  fields.clear();
  arena.reset();
  nv.clear();
  out.clear();
  status = 0;
  head_bytes = deadline_ms = timeout_ms = 0;
  unconsumed = 0;
  reused_connection = head_received = request_ended = has_trailers = data_deferred = body_sent = false;
  paused = read_done_due = complete_due = response_ended = too_large = malformed = closed = false;
  next = prev = nullptr;
}

const SocketAddress& Http2UpstreamStream::endpoint() const { return session->connection().endpoint(); }

size_t Http2UpstreamStream::endpointIndex() const { return session->connection().endpointIndex(); }

void Http2UpstreamStream::sendHead(const UpstreamRequestHead& head) {
  toNv(*head.h2, nv);
  if (head.host_from_endpoint) {
    // ":authority" follows ":scheme" (the second field): the endpoint's, known only now.
    nv.insert(nv.begin() + 2, ::gw::nv(":authority", endpoint().text));
  }
  timeout_ms = head.response_timeout_ms;
  nghttp2_data_provider provider{};
  provider.read_callback = [](nghttp2_session* s, int32_t id, uint8_t* buf, size_t len, uint32_t* flags,
                              nghttp2_data_source* src, void* user) {
    return Http2ClientCallbacks::readData(s, id, buf, len, flags, src, user);
  };
  int32_t sid = nghttp2_submit_request(session->session_, nullptr, nv.data(), nv.size(),
                                       head.body ? &provider : nullptr, this);
  nv.clear();
  if (sid < 0) {
    // Only when the session is out of stream ids or broken: the connection is not usable.
    session->failAll(UpstreamError::Refused);
    return;
  }
  id = sid;
  if (!head.body) endRequest(nullptr);
}

void Http2UpstreamStream::endRequest(const HeaderList* trailers) {
  if (request_ended) return;
  request_ended = true;
  if (trailers && !trailers->empty()) {
    // Copied now: nghttp2 copies them again when they are submitted, at the body's end.
    nv.clear();
    for (const Header& h : *trailers) {
      nv.push_back(::gw::nv(arena.copy(h.name), arena.copy(h.value)));
    }
    has_trailers = true;
  }
  if (!head_received && timeout_ms) session->armDeadline(*this, timeout_ms);
  if (data_deferred) session->resumeData(*this);
}

void Http2UpstreamStream::flush() {
  if (data_deferred && (!out.empty() || request_ended)) session->resumeData(*this);
  session->flushSoon();
  out.internalize();  // what nghttp2 did not frame yet outlives the caller's views
  // Body bytes the upstream did not take at once (its window is closed): it has the
  // response timeout to take them.
  if (deadline_ms == 0 && !out.empty()) session->bodyProgress(*this);
}

void Http2UpstreamStream::resumeReading() {
  if (!paused) return;
  paused = false;
  session->consume(*this);
  session->flushSoon();
}

void Http2UpstreamStream::abort() {
  if (!session) return;
  session->detach(*this);
}

// ---------------------------------------------------------------------------------------
// Http2ClientSession

Http2ClientSession::Http2ClientSession(UpstreamConnection& conn) : conn_(conn) {
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_option_set_max_continuations(opt, 16);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_session_client_new2(&session_, clientCallbacks(), this, opt);
  nghttp2_option_del(opt);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, uint32_t(kStreamWindow)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, uint32_t(conn.maxResponseHeadBytes())},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
}

Http2ClientSession::~Http2ClientSession() {
  // Every stream was failed or detached before the connection closed.
  while (list_) {
    Http2UpstreamStream* s = list_;
    list_ = s->next;
    conn_.pool().releaseStream(s);
  }
  nghttp2_session_del(session_);
}

bool Http2ClientSession::hasCapacity() const {
  if (goaway_ || failed_) return false;
  uint32_t max = nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  // 2^32-1 is nghttp2's "not received yet"
  if (max == 0xffffffffu) max = kDefaultConcurrentStreams;
  return streams_ < max && nghttp2_session_get_next_stream_id(session_) < (1u << 31) - 2 * 1024;
}

Http2UpstreamStream* Http2ClientSession::open(UpstreamHandler* handler) {
  Http2UpstreamStream* s = conn_.pool().acquireStream();
  s->session = this;
  s->handler = handler;
  s->reused_connection = served_ || conn_.reused();
  s->next = list_;
  if (list_) list_->prev = s;
  list_ = s;
  ++streams_;
  return s;
}

Http2UpstreamStream* Http2ClientSession::streamOf(int32_t id) {
  return static_cast<Http2UpstreamStream*>(nghttp2_session_get_stream_user_data(session_, id));
}

void Http2ClientSession::flushSoon() {
  if (in_nghttp2_ > 0) {
    flush_wanted_ = true;
    return;
  }
  conn_.flush();
}

void Http2ClientSession::resumeData(Http2UpstreamStream& s) {
  if (s.id < 0 || s.closed) return;
  s.data_deferred = false;
  nghttp2_session_resume_data(session_, s.id);
}

void Http2ClientSession::consume(Http2UpstreamStream& s) {
  if (s.unconsumed == 0 || s.closed || s.id < 0) {
    s.unconsumed = 0;
    return;
  }
  nghttp2_session_consume_stream(session_, s.id, s.unconsumed);
  s.unconsumed = 0;
}

void Http2ClientSession::bodyProgress(Http2UpstreamStream& s) {
  // Before the request ends the response timeout does not run; it bounds instead each wait
  // for the upstream to take more of the body (as over HTTP/1.1). Once all of it is taken,
  // waiting for more is the client's doing (timeouts.body_read), not the upstream's.
  if (!s.handler || s.request_ended || s.head_received || s.timeout_ms == 0) return;
  if (s.out.empty()) {
    s.deadline_ms = 0;
  } else {
    armDeadline(s, s.timeout_ms);
  }
}

void Http2ClientSession::armDeadline(Http2UpstreamStream& s, uint64_t timeout_ms) {
  uint64_t due = conn_.nowMs() + timeout_ms;
  s.deadline_ms = due ? due : 1;
  conn_.deadlineAt(s.deadline_ms);
}

bool Http2ClientSession::receive(const char* data, size_t len) {
  ++depth_;
  ++in_nghttp2_;
  ssize_t rc = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), len);
  --in_nghttp2_;
  if (rc >= 0) deliverReads();
  --depth_;
  if (rc < 0) {
    // A connection error: nghttp2 queued a GOAWAY; every stream fails.
    failAll(UpstreamError::BadResponse);
    return false;
  }
  if (failed_) return false;
  if (flush_wanted_ || nghttp2_session_want_write(session_)) {
    flush_wanted_ = false;
    conn_.flush();
  }
  if (!failed_ && !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    // A connection error nghttp2 handled itself (a bad frame: it sent GOAWAY and ignores
    // the rest) returns no error from mem_recv, and closes no stream: those in flight
    // would wait for their timeout on a connection that will never answer.
    failAll(UpstreamError::BadResponse);
    return false;
  }
  sweep();
  return !failed_;
}

void Http2ClientSession::deliverReads() {
  // Body views are valid until the read is processed: each stream that got some flushes
  // its client now, then completes if its END_STREAM came.
  ++depth_;
  for (size_t i = 0; i < touched_.size(); ++i) {
    Http2UpstreamStream* s = touched_[i];
    s->read_done_due = false;
    if (!s->handler) continue;
    s->handler->onUpstreamReadDone();
    if (!s->handler) continue;
    if (!s->paused) consume(*s);
    if (s->complete_due) {
      s->complete_due = false;
      UpstreamHandler* h = s->handler;
      h->onUpstreamComplete();
    }
  }
  touched_.clear();
  --depth_;
}

void Http2ClientSession::streamEnded(Http2UpstreamStream& s) {
  s.deadline_ms = 0;
  s.response_ended = true;
  served_ = true;
  if (s.read_done_due) {
    s.complete_due = true;  // after the read's body bytes were flushed
    return;
  }
  s.handler->onUpstreamComplete();
}

bool Http2ClientSession::produce() {
  if (failed_) return false;
  ++depth_;
  ++in_nghttp2_;
  int rc = nghttp2_session_send(session_);
  --in_nghttp2_;
  --depth_;
  if (rc != 0) {
    failAll(UpstreamError::Reset);
    return false;
  }
  sweep();
  return true;
}

void Http2ClientSession::notifyDrained() {
  constexpr size_t kLowWatermark = 64 * 1024;
  ++depth_;
  for (Http2UpstreamStream* s = list_; s; s = s->next) {
    if (s->handler && !s->request_ended && s->out.size() < kLowWatermark) s->handler->onUpstreamDrained();
  }
  --depth_;
  sweep();
}

void Http2ClientSession::closed(Http2UpstreamStream& s, uint32_t error_code) {
  s.closed = true;
  sweep_due_ = true;
  s.deadline_ms = 0;
  nghttp2_session_set_stream_user_data(session_, s.id, nullptr);
  UpstreamHandler* h = s.handler;
  if (!h || s.response_ended) return;  // a complete response is reported as such
  s.handler = nullptr;
  UpstreamError e = s.too_large                                           ? UpstreamError::HeadTooLarge
                    : s.malformed || error_code == NGHTTP2_PROTOCOL_ERROR ? UpstreamError::BadResponse
                    : error_code == NGHTTP2_REFUSED_STREAM                ? refusal(s)
                                                                          : UpstreamError::Reset;
  h->onUpstreamError(e, s.head_received, s.reused_connection);
}

void Http2ClientSession::detach(Http2UpstreamStream& s) {
  s.handler = nullptr;
  sweep_due_ = true;
  s.deadline_ms = 0;
  // Done both ways, the stream closes by itself; else the exchange gave up on it (CANCEL)
  // or the response ended while the upstream still expects body bytes (NO_ERROR, RFC 9113
  // §8.1).
  if (!s.closed && s.id >= 0 &&
      !(s.response_ended && nghttp2_session_get_stream_local_close(session_, s.id) == 1)) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id,
                              s.response_ended ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
    flushSoon();
  }
  sweep();
}

UpstreamError Http2ClientSession::refusal(const Http2UpstreamStream& s) {
  // Sending a refused request again is safe, but the body bytes that went out are gone
  // (moved to the wire): a new attempt would send the body without its beginning.
  return s.body_sent ? UpstreamError::Reset : UpstreamError::Refused;
}

void Http2ClientSession::failAll(UpstreamError e) {
  failed_ = true;
  sweep_due_ = true;
  ++depth_;
  for (Http2UpstreamStream* s = list_; s; s = s->next) {
    UpstreamHandler* h = s->handler;
    if (!h) continue;
    s->handler = nullptr;
    h->onUpstreamError(e == UpstreamError::Refused ? refusal(*s) : e, s->head_received, s->reused_connection);
  }
  --depth_;
  sweep();
}

void Http2ClientSession::onTimer(uint64_t now_ms) {
  uint64_t next = 0;
  ++depth_;
  for (Http2UpstreamStream* s = list_; s; s = s->next) {
    if (!s->handler || s->deadline_ms == 0) continue;
    if (s->deadline_ms > now_ms) {
      next = next ? std::min(next, s->deadline_ms) : s->deadline_ms;
      continue;
    }
    UpstreamHandler* h = s->handler;
    s->handler = nullptr;
    s->deadline_ms = 0;
    sweep_due_ = true;
    if (!s->closed && s->id >= 0) nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    h->onUpstreamError(s->head_received ? UpstreamError::Reset : UpstreamError::ResponseTimeout,
                       s->head_received, s->reused_connection);
  }
  --depth_;
  if (next) conn_.deadlineAt(next);
  flushSoon();
  sweep();
}

void Http2ClientSession::restartDeadlines() {
  for (Http2UpstreamStream* s = list_; s; s = s->next) {
    if (s->handler && s->deadline_ms != 0) armDeadline(*s, s->timeout_ms);
  }
}

bool Http2ClientSession::finished() const {
  if (failed_) return true;
  if (streams_ > 0) return false;
  return goaway_ || (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_));
}

void Http2ClientSession::sweep() {
  // Called after every read and write: the walk over the streams only when one may be done.
  if (depth_ > 0 || !sweep_due_) return;
  sweep_due_ = false;
  bool freed = false;
  for (Http2UpstreamStream* s = list_; s;) {
    Http2UpstreamStream* next = s->next;
    // Free once nobody holds it: no handler, and nghttp2 closed it (or never had it, or
    // the session failed and will not call back).
    if (!s->handler && (s->closed || s->id < 0 || failed_)) {
      if (s->prev) s->prev->next = s->next; else list_ = s->next;
      if (s->next) s->next->prev = s->prev;
      if (s->id >= 0 && !s->closed) nghttp2_session_set_stream_user_data(session_, s->id, nullptr);
      --streams_;
      conn_.pool().releaseStream(s);
      freed = true;
    }
    s = next;
  }
  if (freed) conn_.streamsFreed();
}

}  // namespace gw
