// The HTTP/2 side of an upstream connection (SPEC §8): one nghttp2 client session per
// connection, one Http2UpstreamStream per request in flight on it.
//
// Contract:
// - Owned by its UpstreamConnection, which keeps the transport (socket, TLS, the write,
//   the one libuv timer) and hands every plaintext byte to receive(); the session frames
//   what is to be sent into the connection's output in produce().
// - The upstream is as hostile as a client: nghttp2's RFC 9113 checks apply to responses
//   (pseudo-headers, connection-specific fields, content-length against DATA), a head
//   larger than limits.max_response_header_bytes fails its stream with HeadTooLarge, and a
//   connection error fails every stream on it. Nothing it sends reaches the client unchecked.
// - Flow control end to end: the connection window is given back as bytes arrive; a
//   stream's only once its exchange took them and is not paused (the client reads slowly),
//   so a slow client stalls its own stream, never the connection.
// - Streams are freed only once both nghttp2 and their handler are done with them, and
//   never inside a callback (sweep()).
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <vector>

#include "gateway/upstream/upstream_stream.h"

namespace gw {

class UpstreamConnection;
class Http2ClientSession;

struct Http2UpstreamStream final : public UpstreamStream {
  // UpstreamStream
  UpstreamProtocolUsed protocol() const override { return UpstreamProtocolUsed::H2; }
  void sendHead(const UpstreamRequestHead& head) override;
  void sendBody(const char* data, size_t len) override { out.appendExternal(data, len); }
  void endRequest(const HeaderList* trailers) override;
  void flush() override;
  size_t pendingBytes() const override { return out.size(); }
  bool takeUnsentBody(Buffer& to) override {
    to.moveFrom(out);
    return !body_sent;
  }
  void resendBody(Buffer& from) override { out.moveFrom(from); }
  void pauseReading() override { paused = true; }
  void resumeReading() override;
  bool reused() const override { return reused_connection; }
  const SocketAddress& endpoint() const override;
  size_t endpointIndex() const override;
  void release() override { abort(); }
  void abort() override;

  Http2ClientSession* session = nullptr;
  UpstreamHandler* handler = nullptr;
  int32_t id = -1;  // nghttp2's, once submitted
  StringArena arena;
  HeaderList fields{&arena};      // the response head, then its trailers
  std::vector<nghttp2_nv> nv;     // scratch: a head or trailers being submitted
  Buffer out;                     // request body not yet framed (views until flush())
  int status = 0;
  uint64_t head_bytes = 0;        // decoded bytes of the header block being received
  uint64_t deadline_ms = 0;       // loop time the stream fails (response timeout); 0: none
  uint64_t timeout_ms = 0;
  size_t unconsumed = 0;          // response bytes not yet given back to the stream window
  bool reused_connection = false;
  bool head_received = false;     // a final response head reached the handler
  bool request_ended = false;
  bool body_sent = false;         // body bytes went to the wire: a refusal cannot be retried
  bool has_trailers = false;      // `nv` holds request trailers to submit at the body's end
  bool data_deferred = false;     // the body's data source waits for more of `out`
  bool paused = false;
  bool read_done_due = false;     // body views went to the handler in this read
  bool complete_due = false;      // END_STREAM arrived: complete after the read
  bool response_ended = false;    // END_STREAM arrived
  bool too_large = false;
  bool malformed = false;         // a response nghttp2 let through that the gateway refuses
  bool closed = false;            // nghttp2 is done with it
  Http2UpstreamStream* next = nullptr;  // the session's streams
  Http2UpstreamStream* prev = nullptr;

  void recycle();
};

class Http2ClientSession {
 public:
  explicit Http2ClientSession(UpstreamConnection& conn);
  ~Http2ClientSession();
  Http2ClientSession(const Http2ClientSession&) = delete;
  Http2ClientSession& operator=(const Http2ClientSession&) = delete;

  // A stream for one request: may take one more (no GOAWAY, below the upstream's
  // SETTINGS_MAX_CONCURRENT_STREAMS, stream ids left).
  bool hasCapacity() const;
  Http2UpstreamStream* open(UpstreamHandler* handler);
  size_t streams() const { return streams_; }
  bool goingAway() const { return goaway_; }

  // Plaintext from the upstream. False: the connection failed (every stream was told).
  bool receive(const char* data, size_t len);
  // Frames into the connection's output; stops when that is full (resumed after the write).
  // False: the session failed.
  bool produce();
  // The connection's output was written: uploads below the low watermark take more.
  void notifyDrained();
  // The connection failed: every stream with a handler gets the error.
  void failAll(UpstreamError e);
  // The connection's timer fired: fails the streams whose response timeout passed.
  void onTimer(uint64_t now_ms);
  // Connected: the streams' response timeouts run from now (the connect deadline ran
  // until then).
  void restartDeadlines();
  // Nothing more will be exchanged: the connection may close.
  bool finished() const;

  UpstreamConnection& connection() { return conn_; }
  void flushSoon();  // flush now, or after the callback or read being processed
  void resumeData(Http2UpstreamStream& s);
  void consume(Http2UpstreamStream& s);
  void detach(Http2UpstreamStream& s);
  void armDeadline(Http2UpstreamStream& s, uint64_t timeout_ms);
  // Body bytes were framed, or queued: the stream's upload deadline follows.
  void bodyProgress(Http2UpstreamStream& s);

 private:
  friend struct Http2ClientCallbacks;
  friend struct Http2UpstreamStream;
  void deliverReads();
  void streamEnded(Http2UpstreamStream& s);
  void closed(Http2UpstreamStream& s, uint32_t error_code);
  // A refused stream's error: Refused, unless it can no longer be sent again whole.
  static UpstreamError refusal(const Http2UpstreamStream& s);
  void sweep();
  Http2UpstreamStream* streamOf(int32_t id);

  UpstreamConnection& conn_;
  nghttp2_session* session_ = nullptr;
  Http2UpstreamStream* list_ = nullptr;
  std::vector<Http2UpstreamStream*> touched_;  // got body bytes during this read
  size_t streams_ = 0;                          // in use: a handler or open at nghttp2
  int depth_ = 0;       // streams are not freed while a loop over them or a callback runs
  int in_nghttp2_ = 0;  // inside nghttp2: sending waits until it returns
  bool flush_wanted_ = false;
  bool sweep_due_ = false;  // a stream lost its handler or closed since the last sweep
  bool goaway_ = false;
  bool failed_ = false;
  // A response came over it: a later close before any answer may be the upstream ending a
  // connection it thought idle, and an idempotent request may go once more (reused()).
  bool served_ = false;
};

}  // namespace gw
