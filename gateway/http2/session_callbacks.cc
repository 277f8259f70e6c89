// nghttp2's callbacks into the HTTP/2 codec: frames in (requests, bodies, the flood
// budgets of SPEC §7) and frames out (the output slot, DATA without a copy).
#include <algorithm>
#include <cstring>

#include "gateway/downstream.h"
#include "gateway/http2/server_codec.h"
#include "gateway/http2/session_callbacks.h"
#include "gateway/worker.h"

namespace gw {

namespace {

// SPEC §7's "small rate" of frames that cost the gateway work and carry no request.
constexpr uint32_t kMaxSettingsPerSecond = 50;
constexpr uint32_t kMaxPingsPerSecond = 50;
constexpr uint32_t kMaxPrioritiesPerSecond = 500;
constexpr uint32_t kMaxEmptyDataPerSecond = 100;
// WINDOW_UPDATEs answer the DATA the gateway sends: a client reading a large body sends
// many; one that sends them with nothing to acknowledge is only making work.
constexpr uint32_t kFreeWindowUpdatesPerSecond = 200;
constexpr uint32_t kWindowUpdatesPerDataFrame = 4;
constexpr uint32_t kWindowUpdatesPerStream = 2;

std::string_view view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

}  // namespace


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
    if (s->response_ended && n == s->out.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->has_trailers) {
        s->has_trailers = false;
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(session, stream_id, s->trailers.data(), s->trailers.size()) != 0) {
          return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
      }
    }
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
    ++c.streams_opened_;
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
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s) return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      // Trailers go upstream with the body's end (SPEC §8), within the same list limit.
      s->header_bytes += namelen + valuelen + 32;
      Exchange& ex = s->exchange;
      std::string_view n = view(name, namelen);
      if (s->header_bytes <= c.settings_.max_header_list_bytes && ex.request_trailers.size() < 128 &&
          forwardableTrailer(n)) {
        ex.request_trailers.add(n, view(value, valuelen));
      }
      return 0;
    }
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
                         kFreeWindowUpdatesPerSecond + c.dataFramesSentRecently() * kWindowUpdatesPerDataFrame +
                             c.streamsOpenedRecently() * kWindowUpdatesPerStream)) {
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
    if (frame->hd.type == NGHTTP2_DATA) {
      ++c.data_frames_sent_;
      // Progress: a slow reader is not one holding a zero window.
      s->blocked_since_ms = 0;
      c.connection_blocked_since_ms_ = 0;
    }
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


namespace http2_detail {

const nghttp2_session_callbacks* sessionCallbacks() { return Http2Callbacks::get(); }

ssize_t readResponseData(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                         uint32_t* flags, nghttp2_data_source* source, void* user) {
  return Http2Callbacks::readData(session, stream_id, buf, length, flags, source, user);
}

}  // namespace http2_detail

}  // namespace gw
