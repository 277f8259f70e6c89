// The HTTP/2 codec's defences and deadlines: the count and GOAWAY of a connection that broke
// the protocol or a limit, the per-second frame budgets, and the one timer that carries the
// per-stream header_read and body_read, the idle timeout and the zero-window clocks.
#include <algorithm>

#include "gateway/downstream.h"
#include "gateway/http2/server_codec.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/worker.h"

namespace gw {


void Http2ServerCodec::countError(std::string_view reason) {
  if (counted_) return;
  counted_ = true;
  // labelId() takes a lock: paid once per connection ended, never per request.
  uint16_t id = metrics::labelId(reason);
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
    streams_opened_before_ = streams_opened_;
    resets_ = settings_frames_ = pings_ = priorities_ = window_updates_ = empty_data_ = refused_ = 0;
    data_frames_sent_ = streams_opened_ = 0;
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
  bool connection_waits = false;
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
    // A zero window is the client's to hold: its stream's (the stream waits), or the
    // connection's (every stream waits). Each clock stops as soon as DATA goes out again.
    if (s->out.empty()) {
      s->blocked_since_ms = 0;
      continue;
    }
    if (connection_window <= 0) connection_waits = true;
    if (nghttp2_session_get_stream_remote_window_size(session_, s->id) > 0) {
      s->blocked_since_ms = 0;
    } else {
      if (!s->blocked_since_ms) s->blocked_since_ms = now;
      due = std::min(due, s->blocked_since_ms + l.idle_ms);
    }
  }
  if (!connection_waits) {
    connection_blocked_since_ms_ = 0;
  } else {
    if (!connection_blocked_since_ms_) connection_blocked_since_ms_ = now;
    due = std::min(due, connection_blocked_since_ms_ + l.idle_ms);
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
    if ((s->blocked_since_ms && now >= s->blocked_since_ms + l.idle_ms) ||
        (connection_blocked_since_ms_ && now >= connection_blocked_since_ms_ + l.idle_ms)) {
      fail("zero_window", NGHTTP2_ENHANCE_YOUR_CALM);
      break;
    }
  }
  send();
  conn.leaveEvent();
}

}  // namespace gw
