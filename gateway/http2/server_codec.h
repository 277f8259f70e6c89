// The HTTP/2 server codec (SPEC §7): one nghttp2 session per client connection, one
// Http2Stream (a DownstreamStream with its Exchange) per request stream.
//
// Contract:
// - Hosted by its transport (DownstreamConnection) exactly as the HTTP/1.1 codec is: the
//   transport owns the socket, TLS and the write slot; it hands every decrypted byte to
//   processInput() and calls afterEvent() when its outermost event scope closes.
// - nghttp2 does the framing, HPACK, flow-control accounting and RFC 9113's message
//   checks (pseudo-headers, upper-case names, connection-specific fields, content-length
//   against DATA): a stream that fails them is reset with PROTOCOL_ERROR before an
//   Exchange sees its head, so nothing of it reaches an upstream. The codec adds the
//   gateway's own checks (Host against :authority, the header-list limit as 431, the
//   request target) and the defences of SPEC §7, each counted in
//   gateway_http2_protocol_errors_total{listener,reason}.
// - Flow control end to end: a stream's request bytes are given back to the client's
//   window only once its exchange took them and its upstream is not congested; response
//   bytes wait in the stream (bounded by the exchange's high watermark, which stops
//   reading the upstream) until the client's windows admit them. A slow stream stalls
//   itself, not the connection.
// - Streams are released (exchange finished, back to the worker's pool) only from
//   afterEvent(), never inside an nghttp2 callback or an exchange's call.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "gateway/buffer.h"
#include "gateway/config/config.h"
#include "gateway/downstream_stream.h"
#include "gateway/exchange.h"
#include "gateway/output_slot.h"

namespace gw {

class DownstreamConnection;
class Http2ServerCodec;

// One request stream. Pooled per worker (Worker::acquireStream).
struct Http2Stream final : public DownstreamStream {
  void recycle();  // back to the pool: as new

  Exchange exchange;
  Http2ServerCodec* codec = nullptr;
  int32_t id = 0;
  Http2Stream* next = nullptr;  // the connection's streams
  Http2Stream* prev = nullptr;
  Buffer out;        // response body not yet framed (views until flush() returns)
  Buffer held_body;  // request body the exchange cannot take yet (copied)
  std::vector<nghttp2_nv> head;  // the response head until submitted; arena-owned text
  std::vector<nghttp2_nv> trailers;  // the response's trailers, sent after its body
  char status_text[4] = {};
  std::string_view method, scheme, authority, path;  // pseudo-headers, arena-owned
  uint64_t header_bytes = 0;  // as SETTINGS_MAX_HEADER_LIST_SIZE counts them
  uint64_t opened_ms = 0;
  uint64_t body_progress_ms = 0;  // the last DATA, for body_read
  uint64_t blocked_since_ms = 0;  // response data held back by a zero window (0: not)
  size_t unconsumed = 0;  // request bytes received, not yet given back to the window
  int reject_status = 0;  // found while the head was read (431)
  bool headers_done = false;
  bool end_stream = false;      // the client's END_STREAM arrived
  bool head_ready = false;      // `head` holds a response head not yet submitted
  bool head_submitted = false;
  bool response_ended = false;  // endResponse(): `out` holds the rest of the body
  bool data_deferred = false;   // the data source waits for more of `out`
  bool closed = false;          // nghttp2 closed the stream
  bool body_paused = false;     // the upstream is congested: the window stays shut
  bool body_dirty = false;      // body views went to the upstream during processInput()
  bool pump = false;            // held body or completion to hand on in afterEvent()
  bool end_after_response = false;
  bool has_trailers = false;  // `trailers` go out when the body ends

  // DownstreamStream
  const Ip16& peerIp16() const override;
  const TlsHandshakeInfo* tlsInfo() const override;
  size_t listenerIndex() const override;
  bool admin() const override { return false; }
  std::string_view protocol() const override { return "HTTP/2"; }
  void sendHead(int status, const HeaderList& headers, bool length_known) override;
  void sendBody(const char* data, size_t len) override { out.appendExternal(data, len); }
  void sendTrailers(const HeaderList& fields) override;
  void endResponse() override { response_ended = true; }
  void flush() override;
  bool takeBackHead() override;
  void reset() override;  // DownstreamStream's: RST_STREAM (see resetStream)
  size_t queuedBytes() const override { return out.size(); }
  void endAfterResponse() override { end_after_response = true; }
  void requestBodyWanted() override {}
  void holdRequestHead(bool) override {}  // the head lives in the exchange's arena
  void resumeReading() override {}
  void resumeRequest() override { wantPump(); }
  void completeBodilessRequest() override { wantPump(); }
  void requestBodyUnblocked() override { wantPump(); }
  void resumeRequestBody() override { wantPump(); }
  bool requestBodyPaused() const override { return body_paused || !held_body.empty(); }
  void relayPendingTunnelBytes() override {}
  void enterEvent() override;
  void leaveEvent() override;

 private:
  void wantPump();
  // Fields as HTTP/2 wants them: lower-case names, no connection-specific field; copied.
  void appendFields(const HeaderList& fields, std::vector<nghttp2_nv>& to);
};

class Http2ServerCodec {
 public:
  Http2ServerCodec(DownstreamConnection& conn, const Http2Settings& settings);
  ~Http2ServerCodec();
  Http2ServerCodec(const Http2ServerCodec&) = delete;
  Http2ServerCodec& operator=(const Http2ServerCodec&) = delete;

  // --- driven by the transport ---
  void processInput();  // everything in the input block is consumed
  OutputSlot& output() { return output_; }
  void onOutputDrained();  // written to the socket: more frames may go
  void afterEvent();
  // The client is gone or the connection failed: every stream is aborted.
  void abortAll();
  // The connection closed: every stream is finished and released.
  void releaseAll();
  // GOAWAY with the last stream id; the connection closes when its streams are done.
  void drain();
  bool done() const;  // nothing more to read or write: close

  // --- used by its streams ---
  DownstreamConnection& connection() { return conn_; }
  void flushStream(Http2Stream& s);
  void runDeferredSend();  // the worker's end of loop iteration (Worker::deferSend)
  void resetStream(Http2Stream& s, uint32_t error_code);
  void schedulePump() { pump_pending_ = true; }

 private:
  friend struct Http2Callbacks;

  bool outputFull() const;
  void appendSettings(const uint8_t* frame, size_t len);
  void onRequestHead(Http2Stream& s);
  bool checkHead(Http2Stream& s, RequestTarget& target);
  void onData(Http2Stream& s, const uint8_t* data, size_t len);
  void pumpBody(Http2Stream& s);
  void giveBackWindow(Http2Stream& s);
  void closeStream(Http2Stream& s, uint32_t error_code);
  void send();
  void releaseClosed();
  // A defence fired or the peer broke the protocol: counted, GOAWAY, close after it.
  void fail(std::string_view reason, uint32_t error_code);
  void countError(std::string_view reason);
  // Frames beyond a small per-second rate end the connection (SETTINGS, PING, PRIORITY,
  // WINDOW_UPDATE, empty DATA, resets).
  bool overBudget(uint32_t& count, uint64_t limit);
  uint64_t dataFramesSentRecently() const { return uint64_t(data_frames_sent_) + data_frames_sent_before_; }
  uint64_t streamsOpenedRecently() const { return uint64_t(streams_opened_) + streams_opened_before_; }
  void armTimer();
  void onTimer();

  DownstreamConnection& conn_;
  Http2Settings settings_;  // a copy: a reload may free the configuration
  nghttp2_session* session_ = nullptr;
  OutputSlot output_;
  Http2Stream* streams_ = nullptr;  // open, then closed awaiting release
  size_t open_streams_ = 0;
  std::vector<Http2Stream*> dirty_;  // body views handed upstream during processInput()
  uv_timer_t* timer_ = nullptr;       // per-stream deadlines (header_read, body_read), idle
  uint64_t timer_due_ = 0;
  uint64_t last_activity_ms_ = 0;
  uint64_t connection_blocked_since_ms_ = 0;  // responses wait on a zero connection window
  // Per-second frame budgets (SPEC §7's floods).
  uint64_t budget_window_ms_ = 0;
  uint32_t resets_ = 0, settings_frames_ = 0, pings_ = 0, priorities_ = 0, window_updates_ = 0,
           empty_data_ = 0, refused_ = 0;
  // DATA frames sent in this window and the one before: acknowledgements (WINDOW_UPDATE,
  // gRPC's BDP pings) of a burst at a window's end arrive in the next one.
  uint32_t data_frames_sent_ = 0, data_frames_sent_before_ = 0;
  // Streams opened likewise: a client may raise each new stream's window at once (gRPC's
  // clients do, 200 calls at a time).
  uint32_t streams_opened_ = 0, streams_opened_before_ = 0;
  uint64_t block_bytes_ = 0;  // decoded bytes of the header block being received
  bool settings_sent_ = false;
  bool send_again_ = false;
  bool send_deferred_ = false;  // queued with the worker for the end of this iteration  // send() yielded with frames still to produce
  bool in_input_ = false;  // inside processInput(): sending waits for its end
  bool sending_ = false;
  bool pump_pending_ = false;
  bool failed_ = false;     // GOAWAY with an error queued: close once it is written
  bool draining_ = false;
  bool ever_opened_ = false;  // a stream was opened (the idle timeout applies from then)
  bool counted_ = false;      // this connection's protocol error is counted
};

}  // namespace gw
