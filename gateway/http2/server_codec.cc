#include "gateway/http2/server_codec.h"

#include <algorithm>
#include <cstring>

#include "gateway/downstream.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/path.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// Output queued for the socket above which no more frames are produced until it drains:
// bounds the session's memory whatever its streams send.
constexpr size_t kOutputHighWatermark = 256 * 1024;
// SPEC §7's "small rate" of frames that cost the gateway work and carry no request.
constexpr uint32_t kMaxSettingsPerSecond = 50;
constexpr uint32_t kMaxPingsPerSecond = 50;
constexpr uint32_t kMaxPrioritiesPerSecond = 500;
constexpr uint32_t kMaxEmptyDataPerSecond = 100;
// WINDOW_UPDATEs answer the DATA the gateway sends: a client reading a large body sends
// many; one that sends them with nothing to acknowledge is only making work.
constexpr uint32_t kFreeWindowUpdatesPerSecond = 200;
constexpr uint32_t kWindowUpdatesPerDataFrame = 4;
// CONTINUATION frames after one HEADERS (CVE-2024-27316): a real header block needs few.
constexpr size_t kMaxContinuations = 16;

nghttp2_nv nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

std::string_view view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

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
  data_deferred = closed = body_paused = body_dirty = pump = end_after_response = false;
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
  StringArena& arena = exchange.arena;
  head.clear();
  status_text[0] = char('0' + status / 100 % 10);
  status_text[1] = char('0' + status / 10 % 10);
  status_text[2] = char('0' + status % 10);
  head.push_back(nv(":status", std::string_view(status_text, 3)));
  for (const Header& h : headers) {
    if (isHopByHopHeader(h.name)) continue;  // connection-specific: malformed in HTTP/2
    char* name = arena.allocate(h.name.size());
    for (size_t i = 0; i < h.name.size(); ++i) {
      char c = h.name[i];
      name[i] = c >= 'A' && c <= 'Z' ? char(c + 32) : c;
    }
    head.push_back(nv({name, h.name.size()}, arena.copy(h.value)));
  }
  head_ready = true;
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
// nghttp2's callbacks

struct Http2Callbacks {
  static Http2ServerCodec& codec(void* user) { return *static_cast<Http2ServerCodec*>(user); }

  static ssize_t send(nghttp2_session*, const uint8_t* data, size_t len, int, void* user) {
    Http2ServerCodec& c = codec(user);
    if (c.outputFull()) return NGHTTP2_ERR_WOULDBLOCK;
    if (!c.settings_sent_) {
      c.settings_sent_ = true;
      c.appendSettings(data, len);
      return ssize_t(len);
    }
    c.output_.out.append(data, len);
    return ssize_t(len);
  }

  // DATA without a copy: the frame header, then the stream's bytes moved (as they are,
  // views or slices) to the output.
  // The stream is found again by id, never through the data source: after a defence ended
  // the connection, nghttp2 may still hold a DATA frame of a stream the gateway released.
  static int sendData(nghttp2_session* session, nghttp2_frame* frame, const uint8_t* framehd,
                      size_t length, nghttp2_data_source*, void* user) {
    Http2ServerCodec& c = codec(user);
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s || s->out.size() < length) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (c.outputFull()) return NGHTTP2_ERR_WOULDBLOCK;
    c.output_.out.append(framehd, 9);
    c.output_.out.moveFront(s->out, length);
    s->exchange.bytes_out += length + 9;
    return 0;
  }

  static ssize_t readData(nghttp2_session* session, int32_t stream_id, uint8_t*, size_t length,
                          uint32_t* flags, nghttp2_data_source*, void*) {
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = std::min(length, s->out.size());
    if (n == 0 && !s->response_ended) {
      s->data_deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (s->response_ended && n == s->out.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return ssize_t(n);
  }

  static int beginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    Http2ServerCodec& c = codec(user);
    c.block_bytes_ = 0;  // every header block (trailers, refused streams) is measured
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    c.last_activity_ms_ = c.conn_.worker().nowMs();
    if (c.open_streams_ >= c.settings_.max_concurrent_streams) {
      // A stream beyond SETTINGS_MAX_CONCURRENT_STREAMS: refused, so the client may retry it
      // (RFC 9113 §5.1.2); its header block is still decoded, for HPACK's state. Refusing
      // is cheap, not free: a client that only opens refused streams is ended.
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
      if (c.overBudget(c.refused_, 2 * uint64_t(c.settings_.max_concurrent_streams) + 100)) {
        c.fail("refused_stream_flood", NGHTTP2_ENHANCE_YOUR_CALM);
      }
      return 0;
    }
    Worker& w = c.conn_.worker();
    Http2Stream* s = w.acquireStream();
    s->codec = &c;
    s->id = frame->hd.stream_id;
    s->opened_ms = w.nowMs();
    s->next = c.streams_;
    if (c.streams_) c.streams_->prev = s;
    c.streams_ = s;
    ++c.open_streams_;
    c.ever_opened_ = true;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    s->exchange.begin(*s, w);
    return 0;
  }

  static int header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                    size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    Http2ServerCodec& c = codec(user);
    // Every decoded field costs work, whoever it is for: HPACK lets a few bytes stand for a
    // large field, so a block far beyond the limit is an attack on the decoder.
    c.block_bytes_ += namelen + valuelen + 32;
    if (c.block_bytes_ > 4 * c.settings_.max_header_list_bytes) {
      c.fail("header_list_flood", NGHTTP2_ENHANCE_YOUR_CALM);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;  // trailers: not forwarded to HTTP/1.1 upstreams
    }
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s) return 0;
    // RFC 9113 §6.5.2's measure: name, value and 32 bytes per field.
    s->header_bytes += namelen + valuelen + 32;
    if (s->header_bytes > c.settings_.max_header_list_bytes) {
      s->reject_status = 431;
      return 0;
    }
    if (s->reject_status) return 0;
    Exchange& ex = s->exchange;
    std::string_view n = view(name, namelen), v = view(value, valuelen);
    if (!n.empty() && n[0] == ':') {
      std::string_view copy = ex.arena.copy(v);
      if (n == ":method") s->method = copy;
      else if (n == ":scheme") s->scheme = copy;
      else if (n == ":authority") s->authority = copy;
      else if (n == ":path") s->path = copy;
      return 0;
    }
    if (ex.headers.size() >= 128) {  // as many fields as HTTP/1.1 accepts
      s->reject_status = 431;
      return 0;
    }
    ex.headers.add(n, v);
    return 0;
  }

  static int frameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    Http2ServerCodec& c = codec(user);
    // Only requests count as activity: control frames alone must not keep a connection
    // with no stream open past timeouts.idle.
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) {
      c.last_activity_ms_ = c.conn_.worker().nowMs();
    }
    auto* s = frame->hd.stream_id
                  ? static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id))
                  : nullptr;
    bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (!s) return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          s->headers_done = true;
          s->end_stream = end_stream;
          s->body_progress_ms = c.last_activity_ms_;
          c.onRequestHead(*s);
        } else if (end_stream) {  // trailers end the body
          s->end_stream = true;
          c.pumpBody(*s);
        }
        return 0;
      case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end_stream &&
            c.overBudget(c.empty_data_, kMaxEmptyDataPerSecond)) {
          c.fail("empty_data_flood", NGHTTP2_ENHANCE_YOUR_CALM);
          return 0;
        }
        if (s && end_stream) {
          s->end_stream = true;
          c.pumpBody(*s);
        }
        return 0;
      case NGHTTP2_RST_STREAM:
        if (c.overBudget(c.resets_, c.settings_.max_resets_per_second)) {
          c.fail("rapid_reset", NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && c.overBudget(c.settings_frames_, kMaxSettingsPerSecond)) {
          c.fail("settings_flood", NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      case NGHTTP2_PING:
        // Clients that probe bandwidth (gRPC's BDP estimator) ping as DATA arrives.
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
            c.overBudget(c.pings_, kMaxPingsPerSecond + c.dataFramesSentRecently())) {
          c.fail("ping_flood", NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      case NGHTTP2_PRIORITY:
        if (c.overBudget(c.priorities_, kMaxPrioritiesPerSecond)) {
          c.fail("priority_flood", NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      case NGHTTP2_WINDOW_UPDATE:
        if (c.overBudget(c.window_updates_,
                         kFreeWindowUpdatesPerSecond + c.dataFramesSentRecently() * kWindowUpdatesPerDataFrame)) {
          c.fail("window_update_flood", NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
      default:
        return 0;
    }
  }

  static int dataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                       size_t len, void* user) {
    Http2ServerCodec& c = codec(user);
    // The connection's window reopens at once: one stream's stall must not stall others.
    // The stream's own window reopens only as its exchange takes the bytes.
    nghttp2_session_consume_connection(session, len);
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (!s) return 0;
    c.onData(*s, data, len);
    return 0;
  }

  static int frameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    Http2ServerCodec& c = codec(user);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
      // One nghttp2 sent on its own (a malformed frame, a bad HPACK block, a flood of its
      // own measure): counted by its code.
      c.failed_ = true;
      c.countError(frame->goaway.error_code == NGHTTP2_COMPRESSION_ERROR   ? "hpack"
                   : frame->goaway.error_code == NGHTTP2_FLOW_CONTROL_ERROR ? "flow_control"
                   : frame->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM  ? "flood"
                                                                            : "protocol");
      return 0;
    }
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s) return 0;
    if (frame->hd.type == NGHTTP2_DATA) ++c.data_frames_sent_;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
      // The response is whole. A client still sending a body it will never be read for is
      // told to stop (RFC 9113 §8.1).
      if (!s->end_stream) nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    } else if (frame->hd.type == NGHTTP2_DATA && s->out.size() < 64 * 1024) {
      s->exchange.onResponseDrained();
    }
    return 0;
  }

  static int streamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* user) {
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (!s) return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
    codec(user).closeStream(*s, error_code);
    return 0;
  }

  static const nghttp2_session_callbacks* get() {
    static nghttp2_session_callbacks* cbs = [] {
      nghttp2_session_callbacks* c = nullptr;
      nghttp2_session_callbacks_new(&c);
      nghttp2_session_callbacks_set_send_callback(c, send);
      nghttp2_session_callbacks_set_send_data_callback(c, sendData);
      nghttp2_session_callbacks_set_on_begin_headers_callback(c, beginHeaders);
      nghttp2_session_callbacks_set_on_header_callback(c, header);
      nghttp2_session_callbacks_set_on_frame_recv_callback(c, frameRecv);
      nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, dataChunk);
      nghttp2_session_callbacks_set_on_frame_send_callback(c, frameSend);
      nghttp2_session_callbacks_set_on_stream_close_callback(c, streamClose);
      return c;
    }();
    return cbs;
  }
};

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
  nghttp2_session_server_new2(&session_, Http2Callbacks::get(), this, opt);
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

Http2Stream* Http2ServerCodec::streamOf(int32_t id) {
  return static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session_, id));
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
  if (!closed_or_done(s)) pumpBody(s);
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

bool Http2ServerCodec::closed_or_done(const Http2Stream& s) const {
  return s.closed || s.exchange.response_complete;
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
    bool body = !(s.response_ended && s.out.empty());
    nghttp2_data_provider provider{};
    provider.source.ptr = &s;
    provider.read_callback = Http2Callbacks::readData;
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

// ---------------------------------------------------------------------------------------
// Defences

void Http2ServerCodec::countError(std::string_view reason) {
  if (counted_) return;
  counted_ = true;
  // Interned once per reason (a closed set), not per connection.
  static std::mutex mutex;
  static std::vector<std::pair<std::string, uint16_t>> ids;
  uint16_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& [text, label] : ids) {
      if (text == reason) id = label;
    }
    if (!id) {
      id = metrics::labelId(reason);
      ids.emplace_back(reason, id);
    }
  }
  metrics::local().add(metrics::Id::Http2ProtocolErrors, {conn_.listenerLabel(), id, 0});
  Worker& w = conn_.worker();
  if (w.logThrottle()) {
    char peer[kIpTextMax];
    size_t peer_len = formatIp16(conn_.peerIp16(), peer);
    log::warn("HTTP/2 connection ended", {{"reason", reason}, {"client_ip", std::string_view(peer, peer_len)}});
  }
}

void Http2ServerCodec::fail(std::string_view reason, uint32_t error_code) {
  if (failed_) return;
  countError(reason);
  failed_ = true;
  nghttp2_session_terminate_session(session_, error_code);
  abortAll();
}

bool Http2ServerCodec::overBudget(uint32_t& count, uint64_t limit) {
  uint64_t now = conn_.worker().nowMs();
  if (now - budget_window_ms_ >= 1000) {
    budget_window_ms_ = now;
    data_frames_sent_before_ = data_frames_sent_;
    resets_ = settings_frames_ = pings_ = priorities_ = window_updates_ = empty_data_ = refused_ = 0;
    data_frames_sent_ = 0;
  }
  return ++count > limit;
}

void Http2ServerCodec::armTimer() {
  if (conn_.closing() || conn_.lingering()) {
    uv_timer_stop(timer_);
    return;
  }
  const Worker::ConnectionLimits& l = conn_.worker().limits();
  uint64_t now = conn_.worker().nowMs();
  uint64_t due = UINT64_MAX;
  if (open_streams_ == 0 && !failed_ && !draining_) {
    due = last_activity_ms_ + (ever_opened_ ? l.idle_ms : l.header_read_ms);
  }
  if (send_again_) due = now;
  int32_t connection_window = nghttp2_session_get_remote_window_size(session_);
  for (Http2Stream* s = streams_; s; s = s->next) {
    if (s->closed) continue;
    const Exchange& ex = s->exchange;
    if (!s->headers_done) {
      due = std::min(due, s->opened_ms + l.header_read_ms);
      continue;
    }
    if (!ex.request_complete && !s->body_paused && !ex.waiting_filter && !ex.bodyAwaitsUpstream() &&
        !ex.response_started) {
      due = std::min(due, s->body_progress_ms + l.body_read_ms);
    }
    bool blocked = !s->out.empty() &&
                   (connection_window <= 0 || nghttp2_session_get_stream_remote_window_size(session_, s->id) <= 0);
    if (!blocked) {
      s->blocked_since_ms = 0;
    } else {
      if (!s->blocked_since_ms) s->blocked_since_ms = now;
      due = std::min(due, s->blocked_since_ms + l.idle_ms);
    }
  }
  if (due == UINT64_MAX) {
    uv_timer_stop(timer_);
    timer_due_ = 0;
    return;
  }
  if (due == timer_due_) return;
  timer_due_ = due;
  // At least 1 ms: libuv runs a timer re-armed for "now" again in the same pass.
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Http2ServerCodec*>(t->data)->onTimer(); },
                 due > now ? due - now : 1, 0);
}

void Http2ServerCodec::onTimer() {
  timer_due_ = 0;
  send_again_ = false;
  DownstreamConnection& conn = conn_;
  conn.enterEvent();
  const Worker::ConnectionLimits& l = conn_.worker().limits();
  uint64_t now = conn_.worker().nowMs();
  if (open_streams_ == 0 && !failed_ && !draining_) {
    uint64_t limit = ever_opened_ ? l.idle_ms : l.header_read_ms;
    if (now >= last_activity_ms_ + limit) drain();  // GOAWAY(NO_ERROR), close when written
  }
  for (Http2Stream* s = streams_; s && !failed_; s = s->next) {
    if (s->closed) continue;
    Exchange& ex = s->exchange;
    if (!s->headers_done && now >= s->opened_ms + l.header_read_ms) {
      // A header block never finished: nothing else may be sent on the connection
      // meanwhile (RFC 9113 §6.10), so the connection goes.
      ex.status = 408;
      ex.error_code = errorCodeFor(408);
      fail("header_timeout", NGHTTP2_PROTOCOL_ERROR);
      break;
    }
    if (s->headers_done && !ex.request_complete && !ex.response_started && !s->body_paused &&
        !ex.waiting_filter && !ex.bodyAwaitsUpstream() && now >= s->body_progress_ms + l.body_read_ms) {
      s->end_after_response = true;
      ex.reject(408, "Request body timeout");
      continue;
    }
    if (s->blocked_since_ms && now >= s->blocked_since_ms + l.idle_ms) {
      fail("zero_window", NGHTTP2_ENHANCE_YOUR_CALM);
      break;
    }
  }
  send();
  conn.leaveEvent();
}

}  // namespace gw
