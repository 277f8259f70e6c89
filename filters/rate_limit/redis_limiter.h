// The Redis store (rate_limit_store.type: redis): one hiredis async connection per worker,
// on the worker's libuv loop, kept in WorkerServices::state("redis").
//
// Contract:
// - Worker thread only. Nothing here blocks: connect, AUTH, SELECT, SCRIPT LOAD and every
//   check are asynchronous and pipelined on the one connection.
// - A check is one EVALSHA of the token-bucket script (all the limits of one chain position
//   in one atomic call, timed by the Redis server's clock). NOSCRIPT (a restarted or flushed
//   Redis) is answered by sending the same call as EVAL.
// - Every check ends exactly once through RedisCheckOwner::onRedisDone() - with the
//   script's answer, or Timeout after RedisConfig::timeout, or Error - unless abandon() was
//   called first. onRedisDone never runs from inside send().
// - Health: after a timeout or an error the connection counts as down, and accepting() is
//   false so that requests are decided by on_error at once instead of each waiting for the
//   timeout; a PING probe (or any late answer) brings it back up. A connection that stops
//   answering altogether, or closes, is dropped and reconnected with exponential backoff.
// - shutdown() frees the hiredis context and closes both timers; the loop can then end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config.h"
#include "gateway/filter.h"

struct redisAsyncContext;
struct uv_timer_s;

namespace gw::rate_limit {

// How to reach Redis, shared by every route of one configuration snapshot.
struct RedisSettings {
  RedisConfig config;
  std::string host;  // numeric address (resolved at load); empty for a unix socket
  int port = 0;
  std::string unix_path;
  uint64_t fingerprint = 0;  // address, credentials and db: a change means a new connection
  uint64_t serial = 0;       // creation order: a worker only moves to newer settings

  // Resolves a host name here, at configuration load, never on an event loop. Snapshots
  // with the same settings share one object.
  static std::shared_ptr<const RedisSettings> get(const RedisConfig& config);
};

// The token-bucket script (see token_bucket.h) and its SHA-1 in hex.
std::string_view tokenBucketScript();
std::string_view tokenBucketSha();

// One check: argv = EVALSHA sha numkeys key... arg..., owned by the request's arena.
struct RedisCheck {
  const char** argv = nullptr;
  size_t* lens = nullptr;
  int argc = 0;
  int numkeys = 0;
};

enum class RedisOutcome { Ok, Timeout, Error };

struct RedisAnswer {
  RedisOutcome outcome = RedisOutcome::Error;
  const int64_t* values = nullptr;  // the script's integers when Ok
  size_t count = 0;
};

// Implemented by the filter that waits for a check.
class RedisCheckOwner {
 public:
  virtual ~RedisCheckOwner() = default;
  virtual void onRedisDone(RequestContext& ctx, const RedisCheck& check,
                           const RedisAnswer& answer) const = 0;
};

class RedisLimiter final : public WorkerState {
 public:
  struct Call;

  RedisLimiter(struct uv_loop_s* loop, uint32_t worker_index);
  ~RedisLimiter() override;
  RedisLimiter(const RedisLimiter&) = delete;
  RedisLimiter& operator=(const RedisLimiter&) = delete;

  // The worker's limiter, connecting (or reconnecting, when the address, credentials or db
  // changed with a reload) to the server `settings` names.
  static RedisLimiter& forWorker(WorkerServices& worker,
                                 const std::shared_ptr<const RedisSettings>& settings);
  // The worker's limiter as it is (abandoning a check must not reconnect anything).
  static RedisLimiter& of(WorkerServices& worker);

  // True when a check should be sent: the connection answers, or the first connection
  // after start or reconfiguration is being made (checks queue behind it).
  bool accepting() const;
  // Null if the check could not be queued (then nothing will be called back).
  Call* send(RequestContext& ctx, const RedisCheckOwner& owner, const RedisCheck& check);
  // The request is gone: its answer will be dropped, the owner not called.
  void abandon(Call* call);

  // A per-worker cache of "over the limit" answers: a key Redis refused has no token before
  // the time Redis gave, so requests for it can be refused without asking again. In the
  // units of the filter's clock.
  int64_t deniedUntil(uint64_t key_hash) const;
  void rememberDenied(uint64_t key_hash, int64_t until);

  void shutdown() override;

  // For tests.
  bool connected() const { return ac_ != nullptr && state_ == State::Up; }
  uint32_t reconnects() const { return reconnects_; }

 private:
  enum class State { Idle, Connecting, Up, Down, Backoff, Closed };
  struct Timer;
  struct Flush;

  void configure(const std::shared_ptr<const RedisSettings>& settings);
  int attach(redisAsyncContext* ac);
  void flush();
  void connect();
  void dropConnection(std::string_view why);
  void connectionLost(std::string_view why);
  void setState(State s);
  void markAnswering();
  void markDown();
  void sendProbe();
  bool sendCall(Call* call, bool eval);
  void resolve(Call* call, const RedisAnswer& answer);
  void link(Call* call);
  void unlink(Call* call);
  Call* allocCall();
  void freeCall(Call* call);
  void armCallTimer();
  void onRetryTimer();
  void onCallTimer();
  void logProblem(std::string_view what, std::string_view detail);
  uint64_t nowMs() const;

  static void addWriteHook(void* privdata) noexcept;
  static void onConnect(const redisAsyncContext* ac, int status) noexcept;
  static void onDisconnect(const redisAsyncContext* ac, int status) noexcept;
  static void onReply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
  static void onHandshakeReply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;

  struct uv_loop_s* loop_;
  uint32_t worker_index_;
  std::shared_ptr<const RedisSettings> settings_;
  redisAsyncContext* ac_ = nullptr;
  State state_ = State::Idle;
  bool first_connect_ = true;  // checks may wait for this connection
  bool probe_outstanding_ = false;
  uint32_t attempts_ = 0;  // failed connections in a row
  uint32_t reconnects_ = 0;
  uint64_t rng_;
  Timer* retry_timer_;  // backoff, connect timeout, probe stall
  Timer* call_timer_;   // the earliest waiting check's deadline
  Flush* flush_;        // writes the turn's commands before the loop waits
  bool flushing_ = false;
  bool call_timer_armed_ = false;
  uint64_t call_timer_due_ = 0;
  Call* head_ = nullptr;  // waiting checks, in deadline order
  Call* tail_ = nullptr;
  Call* free_ = nullptr;
  std::vector<std::unique_ptr<Call>> calls_;

  struct Denied {
    uint64_t key = 0;
    int64_t until = 0;
  };
  static constexpr size_t kDeniedSlots = 4096;
  std::unique_ptr<Denied[]> denied_;
};

}  // namespace gw::rate_limit
