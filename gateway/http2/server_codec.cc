// The HTTP/2 session and its streams: requests handed to exchanges, bodies under flow
// control, responses framed and written. Its nghttp2 callbacks are in session_callbacks.cc,
// its defences and deadlines in defences.cc.
#include "gateway/http2/server_codec.h"

#include <algorithm>
#include <cstring>

#include "gateway/downstream.h"
#include "gateway/http2/session_callbacks.h"
#include "gateway/path.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// Output queued for the socket above which no more frames are produced until it drains:
// bounds the session's memory whatever its streams send.
constexpr size_t kOutputHighWatermark = 256 * 1024;
// CONTINUATION frames after one HEADERS (CVE-2024-27316): a real header block needs few.
constexpr size_t kMaxContinuations = 16;

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Streams

void Http2Stream::recycle() {
  exchange.reset();
  codec = nullptr;
  id = 0;
  next = prev = nullptr;
  out.clear();
  held_body.clear();
  head.clear();
  method = scheme = authority = path = {};
  header_bytes = opened_ms = body_progress_ms = blocked_since_ms = 0;
  unconsumed = 0;
  reject_status = 0;
  headers_done = end_stream = head_ready = head_submitted = response_ended = false;
  data_deferred = closed = body_paused = body_dirty = pump = end_after_response = has_trailers = false;
  trailers.clear();
}

const DownstreamStream::Ip16& Http2Stream::peerIp16() const { return codec->connection().peerIp16(); }
const TlsHandshakeInfo* Http2Stream::tlsInfo() const { return codec->connection().tlsInfo(); }
size_t Http2Stream::listenerIndex() const { return codec->connection().listenerIndex(); }
void Http2Stream::enterEvent() { codec->connection().enterEvent(); }
void Http2Stream::leaveEvent() { codec->connection().leaveEvent(); }
void Http2Stream::flush() { codec->flushStream(*this); }
void Http2Stream::reset() {
  exchange.abort();
  codec->resetStream(*this, NGHTTP2_INTERNAL_ERROR);
}
void Http2Stream::wantPump() {
  pump = true;
  codec->schedulePump();
}

void Http2Stream::sendHead(int status, const HeaderList& headers, bool) {
  // Copied now (the views die with the upstream's read), submitted at flush() so that a
  // head not yet flushed can still be taken back for a local reply.
  head.clear();
  status_text[0] = char('0' + status / 100 % 10);
  status_text[1] = char('0' + status / 10 % 10);
  status_text[2] = char('0' + status % 10);
  head.push_back(nv(":status", std::string_view(status_text, 3)));
  appendFields(headers, head);
  head_ready = true;
}

void Http2Stream::appendFields(const HeaderList& fields, std::vector<nghttp2_nv>& to) {
  StringArena& arena = exchange.arena;
  for (const Header& h : fields) {
    if (isHopByHopHeader(h.name)) continue;  // connection-specific: malformed in HTTP/2
    to.push_back(nv(arena.copyLowerCase(h.name), arena.copy(h.value)));
  }
}

void Http2Stream::sendTrailers(const HeaderList& fields) {
  trailers.clear();
  appendFields(fields, trailers);
  has_trailers = !trailers.empty();
}

bool Http2Stream::takeBackHead() {
  if (head_submitted) return false;
  head.clear();
  head_ready = false;
  out.clear();
  response_ended = false;
  return true;
}

// ---------------------------------------------------------------------------------------
// The session

Http2ServerCodec::Http2ServerCodec(DownstreamConnection& conn, const Http2Settings& settings)
    : conn_(conn), settings_(settings) {
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_continuations(opt, kMaxContinuations);
  // nghttp2's own rapid-reset limit backs ours up (ours ends the connection first).
  nghttp2_option_set_stream_reset_rate_limit(opt, 2 * uint64_t(settings.max_resets_per_second),
                                             2 * uint64_t(settings.max_resets_per_second));
  nghttp2_option_set_max_settings(opt, 32);  // entries in one SETTINGS frame
  // Closed streams are forgotten at once (nghttp2 keeps them for priority otherwise, up to
  // a limit it takes from SETTINGS_MAX_CONCURRENT_STREAMS, which it does not know here).
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_session_server_new2(&session_, http2_detail::sessionCallbacks(), this, opt);
  nghttp2_option_del(opt);
  // SETTINGS_MAX_CONCURRENT_STREAMS is added to this frame on its way out (appendSettings)
  // and enforced here: nghttp2 answers a client that exceeds a limit it acknowledged with
  // a connection error, where RFC 9113 §5.1.2 and SPEC §7 want REFUSED_STREAM on the stream.
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.initial_stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, uint32_t(settings.max_header_list_bytes)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  if (settings.initial_connection_window > 65535) {
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                          int32_t(settings.initial_connection_window));
  }
  last_activity_ms_ = conn.worker().nowMs();
  timer_ = new uv_timer_t;
  uv_timer_init(conn.worker().loop(), timer_);
  timer_->data = this;
}

Http2ServerCodec::~Http2ServerCodec() {
  if (send_deferred_) conn_.worker().cancelSend(this);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  nghttp2_session_del(session_);
}

bool Http2ServerCodec::outputFull() const {
  // Plaintext: queuedBytes() is output_ itself; TLS: the records not yet written.
  return output_.out.size() + (conn_.tlsInfo() ? conn_.queuedBytes() : 0) > kOutputHighWatermark;
}

void Http2ServerCodec::appendSettings(const uint8_t* frame, size_t len) {
  // The server's first frame is its SETTINGS (RFC 9113 §3.4), as submitted above.
  size_t payload = size_t(frame[0]) << 16 | size_t(frame[1]) << 8 | frame[2];
  if (len != 9 + payload || frame[3] != NGHTTP2_SETTINGS) {
    output_.out.append(frame, len);
    return;
  }
  uint8_t head[9];
  std::memcpy(head, frame, 9);
  payload += 6;
  head[0] = uint8_t(payload >> 16);
  head[1] = uint8_t(payload >> 8);
  head[2] = uint8_t(payload);
  uint32_t n = settings_.max_concurrent_streams;
  const uint8_t entry[6] = {0, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, uint8_t(n >> 24), uint8_t(n >> 16),
                            uint8_t(n >> 8), uint8_t(n)};
  output_.out.append(head, 9);
  output_.out.append(frame + 9, len - 9);
  output_.out.append(entry, 6);
}

void Http2ServerCodec::processInput() {
  InputBlock& in = conn_.input();
  if (in.unconsumed() == 0) return;
  in_input_ = true;
  const auto* data = reinterpret_cast<const uint8_t*>(in.data() + in.consumed());
  ssize_t n = nghttp2_session_mem_recv(session_, data, in.unconsumed());
  in_input_ = false;
  // Body bytes handed to upstreams as views of the block: sent (or copied) before the block
  // is reused.
  for (Http2Stream* s : dirty_) {
    if (!s->body_dirty) continue;
    s->body_dirty = false;
    s->exchange.flushUpstream();
    giveBackWindow(*s);
  }
  dirty_.clear();
  in.consume(in.unconsumed());
  in.compact();
  if (n < 0) {
    fail(n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? "continuation_flood"
         : n == NGHTTP2_ERR_BAD_CLIENT_MAGIC     ? "bad_preface"
         : n == NGHTTP2_ERR_FLOODED              ? "flood"
                                                 : "protocol",
         n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS || n == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM
                                                                             : NGHTTP2_PROTOCOL_ERROR);
  }
  send();
}

void Http2ServerCodec::onRequestHead(Http2Stream& s) {
  Exchange& ex = s.exchange;
  ex.head_complete = true;
  ex.ctx.method = s.method;
  ex.head_method = s.method == "HEAD";
  bool has_length = false;
  std::string_view length = ex.headers.get("content-length", &has_length);
  if (s.end_stream) {
    ex.request_framing = BodyFraming::None;
  } else if (has_length) {  // nghttp2 checked it is one number, and will check the DATA
    uint64_t v = 0;
    for (char ch : length) v = v * 10 + uint64_t(ch - '0');
    ex.content_length = v;
    ex.request_framing = v > 0 ? BodyFraming::ContentLength : BodyFraming::None;
  } else {
    ex.request_framing = BodyFraming::Chunked;  // length unknown: chunked upstream
  }
  ex.identifyClient();
  RequestTarget target;
  if (!checkHead(s, target)) return;
  ex.onRequestHead(target, false);
  pumpBody(s);
}

bool Http2ServerCodec::checkHead(Http2Stream& s, RequestTarget& target) {
  Exchange& ex = s.exchange;
  if (s.reject_status) {
    ex.reject(s.reject_status, "Request header fields too large");
    return false;
  }
  if (s.method == "CONNECT") {
    ex.reject(400, "CONNECT is not supported");
    return false;
  }
  if (!ex.acceptTarget(s.path, target)) {
    ex.reject(400, "Invalid request target");
    return false;
  }
  // :authority stands for Host (RFC 9113 §8.3.1); both, and different, is malformed.
  bool has_host = false;
  std::string_view host = ex.headers.get("host", &has_host);
  if (ex.headers.count("host") > 1) {
    ex.reject(400, "Multiple Host headers");
    return false;
  }
  if (!s.authority.empty()) {
    if (has_host && host != s.authority) {
      ex.reject(400, "Host and :authority differ");
      return false;
    }
    host = s.authority;
    if (!has_host) ex.headers.addRef("host", host);
  } else if (!has_host) {
    ex.reject(400, "Missing Host header");
    return false;
  }
  if (!isValidAuthority(host)) {
    ex.reject(400, "Invalid Host header");
    return false;
  }
  ex.ctx.host = host;
  // Cookies may be split across fields for HPACK's sake: one field upstream (§8.2.3).
  if (ex.headers.count("cookie") > 1) {
    std::string joined;
    for (const Header& h : ex.headers) {
      if (h.name != "cookie") continue;
      if (!joined.empty()) joined += "; ";
      joined += h.value;
    }
    ex.headers.remove("cookie");
    ex.headers.add("cookie", joined);
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Request bodies

void Http2ServerCodec::onData(Http2Stream& s, const uint8_t* data, size_t len) {
  s.unconsumed += len;
  s.body_progress_ms = conn_.worker().nowMs();
  Exchange& ex = s.exchange;
  ex.bytes_in += len;
  const char* p = reinterpret_cast<const char*>(data);
  if (ex.response_complete || (ex.response_started && !ex.upstream)) {
    // Answered without it (a local reply, a refusal): dropped, the window given back.
    giveBackWindow(s);
    return;
  }
  if (!s.held_body.empty() || !ex.head_complete || ex.waiting_filter || ex.bodyAwaitsUpstream()) {
    // Nowhere to go yet: kept (the stream's window bounds how much), handed on by pumpBody().
    s.held_body.append(p, len);
    return;
  }
  if (!ex.onRequestBody(p, len)) {
    ex.reject(413, "Request body too large");
    giveBackWindow(s);
    return;
  }
  if (ex.upstream && !s.body_dirty) {
    s.body_dirty = true;  // views of the input block: flushed before the block is reused
    dirty_.push_back(&s);
    return;
  }
  giveBackWindow(s);
}

void Http2ServerCodec::pumpBody(Http2Stream& s) {
  Exchange& ex = s.exchange;
  if (s.closed || !ex.head_complete || ex.request_complete) return;
  if (ex.waiting_filter || ex.bodyAwaitsUpstream()) return;
  if (ex.response_complete || (ex.response_started && !ex.upstream)) s.held_body.clear();
  if (!s.held_body.empty()) {
    iovec iov[16];
    bool refused = false;
    while (!refused && !s.held_body.empty()) {
      size_t n = s.held_body.peek(iov, 16);
      size_t taken = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!ex.onRequestBody(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len)) {
          refused = true;
          break;
        }
        taken += iov[i].iov_len;
      }
      // The upstream's queue holds views of these bytes: sent or copied before they go.
      ex.flushUpstream();
      // A write that failed at once answered the request (and may have closed the stream,
      // clearing what was held).
      if (s.closed || ex.response_started) {
        s.held_body.clear();
        giveBackWindow(s);
        return;
      }
      s.held_body.drain(taken);
    }
    if (refused) {
      s.held_body.clear();
      ex.reject(413, "Request body too large");
      giveBackWindow(s);
      return;
    }
  }
  if (s.end_stream && !ex.request_complete && !ex.response_complete) {
    ex.onRequestComplete();
    ex.flushUpstream();
  }
  giveBackWindow(s);
}

void Http2ServerCodec::giveBackWindow(Http2Stream& s) {
  if (s.closed) return;
  const Exchange& ex = s.exchange;
  if (ex.upstreamCongested()) {
    s.body_paused = true;  // onUpstreamDrained() resumes (resumeRequestBody)
    return;
  }
  s.body_paused = false;
  size_t taken = s.unconsumed - std::min(s.unconsumed, s.held_body.size());
  if (taken == 0) return;
  s.unconsumed -= taken;
  nghttp2_session_consume_stream(session_, s.id, taken);
}

// ---------------------------------------------------------------------------------------
// Responses and the wire

void Http2ServerCodec::flushStream(Http2Stream& s) {
  if (s.closed) {
    s.out.clear();  // the client is gone from this stream
    return;
  }
  if (s.head_ready) {
    s.head_ready = false;
    s.head_submitted = true;
    bool body = !(s.response_ended && s.out.empty()) || s.has_trailers;
    nghttp2_data_provider provider{};
    provider.source.ptr = &s;
    provider.read_callback = http2_detail::readResponseData;
    if (nghttp2_submit_response(session_, s.id, s.head.data(), s.head.size(), body ? &provider : nullptr) != 0) {
      resetStream(s, NGHTTP2_INTERNAL_ERROR);
      return;
    }
    s.head.clear();
  } else if (s.head_submitted && s.data_deferred && (!s.out.empty() || s.response_ended)) {
    s.data_deferred = false;
    nghttp2_session_resume_data(session_, s.id);
  }
  if (in_input_ || sending_ || s.out.size() >= kSliceSize) {
    // Bulk data goes now, without a copy; during input processInput() sends at its end.
    send();
    s.out.internalize();  // what nghttp2 did not frame yet outlives the views
    return;
  }
  // A small response waits for the end of the loop iteration, copied: the responses of the
  // streams that became ready in the same iteration then leave in one write, most of them
  // with their END_STREAM on their only DATA frame.
  s.out.internalize();
  if (!send_deferred_) {
    send_deferred_ = true;
    conn_.worker().deferSend(this);
  }
}

void Http2ServerCodec::runDeferredSend() {
  send_deferred_ = false;
  conn_.enterEvent();
  send();
  conn_.leaveEvent();
}

void Http2ServerCodec::resetStream(Http2Stream& s, uint32_t error_code) {
  if (s.closed) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, error_code);
  send();
}

void Http2ServerCodec::send() {
  // Not inside nghttp2's own calls (it forbids it) nor during input: processInput() sends
  // once for everything its frames caused.
  if (sending_ || in_input_ || conn_.closing()) return;
  sending_ = true;
  // nghttp2 stops at a full output (WOULDBLOCK); when the socket then takes all of it at
  // once no write completes later to resume it, so go on here while it does.
  for (int round = 0; round < 64; ++round) {
    if (nghttp2_session_send(session_) != 0) {
      if (!failed_) {
        failed_ = true;
        abortAll();
      }
      break;
    }
    if (output_.out.empty()) break;
    conn_.flushOutput();
    if (conn_.closing() || conn_.queuedBytes() > 0 || !nghttp2_session_want_write(session_)) break;
    // Other connections of the worker get their turn; the timer brings this one back.
    if (round == 63) send_again_ = true;
  }
  sending_ = false;
  if (!output_.out.empty() && !conn_.closing()) conn_.flushOutput();
}

void Http2ServerCodec::onOutputDrained() { send(); }

void Http2ServerCodec::closeStream(Http2Stream& s, uint32_t error_code) {
  if (s.closed) return;
  s.closed = true;
  --open_streams_;
  // The connection's idle time runs from its last stream's end, not from its last request.
  last_activity_ms_ = conn_.worker().nowMs();
  s.out.clear();
  s.held_body.clear();
  Exchange& ex = s.exchange;
  if (!ex.response_complete) {
    // Refused by RFC 9113's checks (PROTOCOL_ERROR before or after the head): a 400 in the
    // log, not a client that went away.
    if (error_code == NGHTTP2_PROTOCOL_ERROR && ex.status == 0 && !ex.response_started) {
      ex.status = 400;
      ex.error_code = errorCodeFor(400);
    }
    ex.abort();
  }
  pump_pending_ = true;  // afterEvent() releases it
}

void Http2ServerCodec::releaseClosed() {
  Http2Stream* s = streams_;
  while (s) {
    Http2Stream* next = s->next;
    if (s->closed) {
      if (s->prev) s->prev->next = s->next;
      else streams_ = s->next;
      if (s->next) s->next->prev = s->prev;
      s->exchange.finish();
      conn_.worker().releaseStream(s);
    }
    s = next;
  }
}

void Http2ServerCodec::afterEvent() {
  for (int round = 0; round < 4 && pump_pending_; ++round) {
    pump_pending_ = false;
    for (Http2Stream* s = streams_; s; s = s->next) {
      if (!s->pump || s->closed) continue;
      s->pump = false;
      pumpBody(*s);
    }
    releaseClosed();
    send();
  }
  armTimer();
}

void Http2ServerCodec::abortAll() {
  for (Http2Stream* s = streams_; s; s = s->next) {
    if (s->closed) continue;
    nghttp2_session_set_stream_user_data(session_, s->id, nullptr);
    closeStream(*s, NGHTTP2_CANCEL);
  }
}

void Http2ServerCodec::releaseAll() {
  abortAll();
  releaseClosed();
}

void Http2ServerCodec::drain() {
  if (draining_ || failed_) return;
  draining_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  send();
}

bool Http2ServerCodec::done() const {
  if (open_streams_ > 0 && !failed_) return false;
  if (failed_ || draining_) return !nghttp2_session_want_write(session_) || conn_.closing();
  return !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_);
}

}  // namespace gw
