// One connection to one Redis server, on a worker's libuv loop: TCP or a unix socket, in
// clear or TLS (gateway/tls/tls_session.h), speaking RESP. hiredis is used for its reply
// parser only (redisReader), so that TLS goes over our own transport: Debian's hiredis
// 0.14 has no TLS and no way to plug one in.
//
// Contract:
// - Worker thread only; never blocks. connect() starts connecting; commands given before
//   it completes (the handshake) are queued and leave with the first write.
// - command() appends a command to the output; nothing is written before flush(), so
//   every command of a loop turn leaves in one write. Replies are matched to commands in
//   order: each command's ReplyFn runs exactly once, with its reply, or with null when the
//   connection closes first (close(), an error, the peer).
// - Replies are untrusted: a reply no command asked for, an array over kMaxReplyElements or
//   a protocol error closes the connection (and the owner hears why).
// - A ReplyFn may queue commands, close() this connection and connect() it again; it must
//   not destroy it. The object outlives its libuv handle's close by design: the handle is
//   freed by its own close callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/buffer.h"

struct redisReader;
struct redisReply;
struct uv_loop_s;

namespace gw {
class TlsClientContext;
class TlsSession;
}  // namespace gw

namespace gw::rate_limit {

struct RedisEndpoint;

class RedisConnection {
 public:
  using ReplyFn = void (*)(void* target, const ::redisReply* reply, void* privdata);

  class Owner {
   public:
    virtual ~Owner() = default;
    // The connection closed by itself (refused, reset, protocol error, TLS failure),
    // after every waiting command was answered with null.
    virtual void onConnectionLost(std::string_view why) = 0;
  };

  RedisConnection(uv_loop_s* loop, Owner* owner);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // False (and nothing open) if the connection cannot even start; *why says why.
  bool connect(const RedisEndpoint& endpoint, std::shared_ptr<const TlsClientContext> tls,
               std::string* why);
  bool open() const { return handle_ != nullptr; }
  // Queues a command (argv with lengths). False when the connection is not open.
  bool command(ReplyFn fn, void* target, void* privdata, int argc, const char** argv,
               const size_t* lens);
  // Writes what command() queued (and TLS records), if connected.
  void flush();
  // Closes without telling the owner; waiting commands are answered with null.
  void close();

 private:
  struct Handle;
  struct Waiting {
    ReplyFn fn;
    void* target;
    void* privdata;
  };

  void onConnected(int status);
  void onRead(const char* data, long n);
  void onWritten(int status);
  bool feedReader(const char* data, size_t n);
  void dispatchReplies();
  void writeOut();
  void fail(std::string why);
  void answerWaitingWithNull();

  uv_loop_s* loop_;
  Owner* owner_;
  Handle* handle_ = nullptr;
  bool connected_ = false;
  uint64_t generation_ = 0;  // bumped by close(): a reply loop stops when it changes
  redisReader* reader_ = nullptr;
  std::unique_ptr<TlsSession> tls_;
  InputBlock plaintext_;  // TLS: decrypted bytes on their way to the reader
  Buffer out_;            // commands not yet written (plaintext)
  Buffer wire_;           // in clear: the bytes being written
  size_t in_flight_ = 0;  // bytes of the wire buffer handed to uv_write
  std::vector<Waiting> waiting_;  // a ring: [head_, head_ + count_)
  size_t head_ = 0;
  size_t count_ = 0;
};

}  // namespace gw::rate_limit
