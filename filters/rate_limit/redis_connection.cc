#include "filters/rate_limit/redis_connection.h"

#include <hiredis/hiredis.h>
#include <uv.h>

#include <cstdio>
#include <cstring>

#include "filters/rate_limit/redis_limiter.h"
#include "gateway/stream_write.h"
#include "gateway/tls/tls_context.h"
#include "gateway/tls/tls_session.h"

namespace gw::rate_limit {

namespace {

// CLUSTER SLOTS of a fully fragmented 16384-slot map is the longest reply we ask for.
constexpr int kMaxReplyElements = 65536;
// Decrypted bytes waiting for the reader: a TLS record at a time is enough.
constexpr size_t kPlaintextLimit = 64 * 1024;

// hiredis' reader builds every reply through these functions. Refusing here (the reader
// then fails) keeps two replies a hostile server can send from reaching hiredis' own
// handling, which aborts the process on them: an array too long to allocate (its
// out-of-memory handler), and — in its async layer — a reply no command asked for.
const redisReplyObjectFunctions* g_hiredis_functions = nullptr;

bool unsolicited(const redisReadTask* task) {
  const auto* waiting = static_cast<const size_t*>(task->privdata);
  return task->parent == nullptr && waiting != nullptr && *waiting == 0;
}
void* guardedString(const redisReadTask* t, char* str, size_t len) {
  return unsolicited(t) ? nullptr : g_hiredis_functions->createString(t, str, len);
}
void* guardedArray(const redisReadTask* t, int elements) {
  if (unsolicited(t) || elements > kMaxReplyElements) return nullptr;
  return g_hiredis_functions->createArray(t, elements);
}
void* guardedInteger(const redisReadTask* t, long long value) {
  return unsolicited(t) ? nullptr : g_hiredis_functions->createInteger(t, value);
}
void* guardedNil(const redisReadTask* t) {
  return unsolicited(t) ? nullptr : g_hiredis_functions->createNil(t);
}
void freeGuarded(void* reply) { g_hiredis_functions->freeObject(reply); }

redisReplyObjectFunctions g_guarded_functions = {guardedString, guardedArray, guardedInteger,
                                                 guardedNil, freeGuarded};

redisReader* guardedReader(const size_t* waiting) {
  redisReader* r = redisReaderCreate();
  if (!r) return nullptr;
  // hiredis' defaults, the same for every reader: kept once, by whichever thread is first.
  static const bool kept = [r] {
    g_hiredis_functions = r->fn;
    return true;
  }();
  (void)kept;
  r->fn = &g_guarded_functions;
  r->privdata = const_cast<size_t*>(waiting);
  return r;
}

}  // namespace

// The libuv side, freed by its close callback (the connection may be connecting again by
// then with a new one).
struct RedisConnection::Handle {
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } stream_handle;
  uv_connect_t connect_req{};
  uv_write_t write_req{};
  RedisConnection* conn = nullptr;  // null once closed
  char read_buf[16 * 1024];

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&stream_handle); }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&stream_handle); }
};

RedisConnection::RedisConnection(uv_loop_s* loop, Owner* owner) : loop_(loop), owner_(owner) {}

RedisConnection::~RedisConnection() { close(); }

bool RedisConnection::connect(const RedisEndpoint& endpoint,
                              std::shared_ptr<const TlsClientContext> tls, std::string* why) {
  close();
  auto* h = new Handle;
  h->conn = this;
  h->connect_req.data = h;
  h->write_req.data = h;
  auto connected = [](uv_connect_t* req, int status) {
    auto* hh = static_cast<Handle*>(req->data);
    if (hh->conn) hh->conn->onConnected(status);
  };
  int rc = 0;
  bool initialized = false;
  if (!endpoint.unix_path.empty()) {
    rc = uv_pipe_init(loop_, &h->stream_handle.pipe, 0);
    initialized = rc == 0;
    if (initialized) {
      uv_pipe_connect(&h->connect_req, &h->stream_handle.pipe, endpoint.unix_path.c_str(),
                      connected);
    }
  } else {
    sockaddr_storage addr{};
    rc = endpoint.host.find(':') == std::string::npos
             ? uv_ip4_addr(endpoint.host.c_str(), endpoint.port,
                           reinterpret_cast<sockaddr_in*>(&addr))
             : uv_ip6_addr(endpoint.host.c_str(), endpoint.port,
                           reinterpret_cast<sockaddr_in6*>(&addr));
    if (rc == 0) rc = uv_tcp_init(loop_, &h->stream_handle.tcp);
    initialized = rc == 0;
    if (initialized) {
      uv_tcp_nodelay(&h->stream_handle.tcp, 1);
      rc = uv_tcp_connect(&h->connect_req, &h->stream_handle.tcp,
                          reinterpret_cast<const sockaddr*>(&addr), connected);
    }
  }
  // uv_*_init resets the handle's data: set it again.
  h->handle()->data = h;
  if (rc != 0) {
    *why = std::string("connect: ") + uv_strerror(rc);
    if (initialized) {
      handle_ = h;
      close();
    } else {
      delete h;
    }
    return false;
  }
  handle_ = h;
  reader_ = guardedReader(&count_);
  if (tls) tls_ = std::make_unique<TlsSession>(std::move(tls), endpoint.text);
  return true;
}

bool RedisConnection::command(ReplyFn fn, void* target, void* privdata, int argc,
                              const char** argv, const size_t* lens) {
  if (!handle_) return false;
  // RESP: *argc, then $len and the bytes of each argument.
  char head[32];
  out_.append(head, size_t(std::snprintf(head, sizeof head, "*%d\r\n", argc)));
  for (int i = 0; i < argc; ++i) {
    out_.append(head, size_t(std::snprintf(head, sizeof head, "$%zu\r\n", lens[i])));
    out_.append(argv[i], lens[i]);
    out_.append("\r\n", 2);
  }
  if (count_ == waiting_.size()) {
    std::vector<Waiting> grown(std::max<size_t>(16, waiting_.size() * 2));
    for (size_t i = 0; i < count_; ++i) grown[i] = waiting_[(head_ + i) % waiting_.size()];
    waiting_.swap(grown);
    head_ = 0;
  }
  waiting_[(head_ + count_) % waiting_.size()] = Waiting{fn, target, privdata};
  ++count_;
  return true;
}

void RedisConnection::flush() { writeOut(); }

void RedisConnection::onConnected(int status) {
  if (status < 0) return fail(std::string("connect: ") + uv_strerror(status));
  connected_ = true;
  if (tls_ && !tls_->start()) return fail("TLS: " + tls_->error());
  uv_read_start(
      handle_->stream(),
      [](uv_handle_t* hh, size_t, uv_buf_t* buf) {
        auto* h = static_cast<Handle*>(hh->data);
        *buf = uv_buf_init(h->read_buf, sizeof h->read_buf);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* h = static_cast<Handle*>(s->data);
        if (h->conn) h->conn->onRead(buf->base, long(n));
      });
  writeOut();
}

void RedisConnection::onRead(const char* data, long n) {
  if (n < 0) return fail(n == UV_EOF ? "closed" : uv_strerror(int(n)));
  if (n == 0) return;
  uint64_t generation = generation_;
  if (!tls_) {
    if (feedReader(data, size_t(n))) dispatchReplies();
    return;
  }
  TlsFeedResult r = tls_->feed(data, size_t(n), plaintext_, kPlaintextLimit);
  for (;;) {
    if (tls_->state() == TlsState::Error) return fail("TLS: " + tls_->error());
    if (plaintext_.unconsumed() > 0) {
      bool ok = feedReader(plaintext_.data() + plaintext_.consumed(), plaintext_.unconsumed());
      plaintext_.consume(plaintext_.unconsumed());
      plaintext_.compact();
      if (!ok) return;
      dispatchReplies();
      if (generation != generation_) return;
    }
    if (!r.sink_full) break;
    r = tls_->feed(nullptr, 0, plaintext_, kPlaintextLimit);
  }
  if (tls_->peerClosed()) return fail("closed");
  if (tls_->wantsWrite()) writeOut();  // handshake messages, answers to the peer's
}

bool RedisConnection::feedReader(const char* data, size_t n) {
  if (redisReaderFeed(reader_, data, n) == REDIS_OK) return true;
  fail("protocol error");
  return false;
}

void RedisConnection::dispatchReplies() {
  uint64_t generation = generation_;
  for (;;) {
    void* reply = nullptr;
    if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
      return fail(reader_->err == REDIS_ERR_OOM ? "a reply no command asked for, or too long"
                                                : std::string("protocol error: ") +
                                                      reader_->errstr);
    }
    if (!reply) return;
    if (count_ == 0) {  // the guard above makes this unreachable; kept as a last line
      freeReplyObject(reply);
      return fail("a reply no command asked for");
    }
    Waiting w = waiting_[head_];
    head_ = (head_ + 1) % waiting_.size();
    --count_;
    if (w.fn) w.fn(w.target, static_cast<const redisReply*>(reply), w.privdata);
    freeReplyObject(reply);
    if (generation != generation_) return;  // the callback closed this connection
  }
}

void RedisConnection::writeOut() {
  if (!handle_ || !connected_) return;
  Buffer* buf = &wire_;
  if (tls_) {
    if (!out_.empty() && !tls_->encrypt(out_)) return fail("TLS: " + tls_->error());
    buf = &tls_->output();
  } else {
    wire_.moveFrom(out_);
  }
  WriteResult r = writeBuffer(handle_->stream(), &handle_->write_req, *buf, &in_flight_,
                              [](uv_write_t* req, int status) {
                                auto* h = static_cast<Handle*>(req->data);
                                if (h->conn) h->conn->onWritten(status);
                              });
  if (r == WriteResult::Failed) fail("write failed");
}

void RedisConnection::onWritten(int status) {
  Buffer& buf = tls_ ? tls_->output() : wire_;
  buf.drain(in_flight_);
  in_flight_ = 0;
  if (status < 0) return fail(std::string("write: ") + uv_strerror(status));
  if (!out_.empty() || !buf.empty()) writeOut();
}

void RedisConnection::close() {
  if (!handle_) return;
  Handle* h = handle_;
  handle_ = nullptr;
  h->conn = nullptr;
  // Pending connect and write requests are cancelled before the close callback runs.
  uv_close(h->handle(), [](uv_handle_t* hh) { delete static_cast<Handle*>(hh->data); });
  ++generation_;
  connected_ = false;
  tls_.reset();
  plaintext_.release();
  out_.clear();
  wire_.clear();
  in_flight_ = 0;
  if (reader_) redisReaderFree(reader_);
  reader_ = nullptr;
  answerWaitingWithNull();
}

void RedisConnection::answerWaitingWithNull() {
  std::vector<Waiting> waiting;
  waiting.reserve(count_);
  for (size_t i = 0; i < count_; ++i) waiting.push_back(waiting_[(head_ + i) % waiting_.size()]);
  head_ = 0;
  count_ = 0;
  for (const Waiting& w : waiting) {
    if (w.fn) w.fn(w.target, nullptr, w.privdata);
  }
}

void RedisConnection::fail(std::string why) {
  close();
  owner_->onConnectionLost(why);
}

}  // namespace gw::rate_limit
