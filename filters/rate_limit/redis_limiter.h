// The Redis store (rate_limit_store.type: redis): per worker, on the worker's libuv loop, a
// connection (redis_connection.h: TCP or TLS) to each Redis node it needs, kept in
// WorkerServices::state("redis").
//
// Contract:
// - Worker thread only. Nothing here blocks: connect, AUTH, SELECT, SCRIPT LOAD, the slot map
//   and the sentinels' answers, and every check are asynchronous; the commands of one loop
//   turn leave in one write per connection, and their replies are matched in order.
// - Modes (RedisConfig::mode): one server; a Redis Cluster (CLUSTER SLOTS learnt from any
//   node, each check sent to the master of its keys' slot, MOVED and ASK followed, the map
//   learnt again after a redirect or a lost node); Sentinel (the master asked of the
//   sentinels, asked again every second and when the master is lost).
// - A check is one EVALSHA of the token-bucket script (all the limits of one chain position
//   in one atomic call, timed by the Redis server's clock). NOSCRIPT (a restarted, flushed
//   or newly promoted Redis) is answered by sending the same call as EVAL, which loads it.
//   In a cluster, keys are tagged (`{value}`) so that the limits of one check share a slot;
//   a check whose keys still span several slots is one call per slot, admitted only if
//   every part admits it.
// - Every check ends exactly once through RedisCheckOwner::onRedisDone() - with the
//   script's answer, or Timeout after RedisConfig::timeout, or Error - unless abandon() was
//   called first. onRedisDone never runs from inside send().
// - Every byte from Redis is untrusted: a reply of the wrong shape, a redirect to a bad
//   address or a slot map out of range is a counted error (gateway_redis_errors_total
//   {reason}) decided by on_error, never a crash.
// - Health: after a timeout or an error a connection counts as down, and checks for it are
//   decided by on_error at once instead of each waiting for the timeout; a PING probe (or
//   any late answer) brings it back up. A connection that stops answering altogether, or
//   closes, is dropped and reconnected with exponential backoff.
// - shutdown() closes the connections (answering what waits) and the timers; the loop can
//   then end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filters/rate_limit/rate_limit_stats.h"
#include "gateway/config/config.h"
#include "gateway/filter.h"

struct redisAsyncContext;
struct redisReply;
struct uv_timer_s;

namespace gw {
class TlsClientContext;
}

namespace gw::rate_limit {

// How to reach Redis, shared by every route of one configuration snapshot.
struct RedisEndpoint {
  std::string host;  // numeric address (resolved at load); empty for a unix socket
  int port = 0;
  std::string unix_path;
  std::string text;  // host:port or unix:/path, for logs and /health

  // host:port or unix:/path; a host name is resolved here (a blocking call: load time only).
  static RedisEndpoint parse(const std::string& address);
};

struct RedisSettings {
  RedisConfig config;
  // The single server, the cluster's seed nodes, or the sentinels.
  std::vector<RedisEndpoint> endpoints;
  std::shared_ptr<const TlsClientContext> tls;  // when config.tls: for the data nodes
  uint64_t fingerprint = 0;  // mode, addresses, credentials and db: a change means new connections
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

// Redis Cluster's key slot (CRC16/XMODEM of the key, or of its first non-empty {tag}).
uint16_t redisKeySlot(std::string_view key);

struct RedisAnswer {
  RedisOutcome outcome = RedisOutcome::Error;
  RedisErrorReason reason = RedisErrorReason::Reply;  // when not Ok
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

  // The worker's limiter, connecting (or reconnecting, when the servers, credentials or db
  // changed with a reload) to what `settings` names.
  static RedisLimiter& forWorker(WorkerServices& worker,
                                 const std::shared_ptr<const RedisSettings>& settings);
  // The worker's limiter as it is (abandoning a check must not reconnect anything).
  static RedisLimiter& of(WorkerServices& worker);

  // Null if the check could not be queued (nothing will be called back); *why then says
  // what was missing. A check is sent when the node for its keys answers, or while the
  // first connection to it after start or reconfiguration is being made (it queues).
  Call* send(RequestContext& ctx, const RedisCheckOwner& owner, const RedisCheck& check,
             RedisErrorReason* why);
  // The request is gone: its answer will be dropped, the owner not called.
  void abandon(Call* call);

  // A per-worker cache of "over the limit" answers: a key Redis refused has no token before
  // the time Redis gave, so requests for it can be refused without asking again. In the
  // units of the filter's clock.
  int64_t deniedUntil(uint64_t key_hash) const;
  void rememberDenied(uint64_t key_hash, int64_t until);

  void shutdown() override;

  // For tests.
  bool connected() const;
  uint32_t reconnects() const { return reconnects_; }

 private:
  class Node;
  struct Part;
  struct Route;
  struct Timer;
  struct Flush;

  void configure(const std::shared_ptr<const RedisSettings>& settings);
  void closeNodes();
  Node* nodeFor(const RedisEndpoint& endpoint, bool data);
  Node* nodeFor(std::string_view host, int port);
  Node* nodeForSlot(uint16_t slot) const;
  void flushAll();
  void publishState();

  // Discovery: the cluster's slot map, or the sentinels' master.
  Node* discoverySource(bool data);
  bool discoveryDue();
  void askDiscovery(bool data, void* tag, int argc, const char** argv, const size_t* lens);
  void discoveryAnswered(Node* from);
  void onSlotsTimer();
  void requestSlots();
  void onSlots(Node* from, const ::redisReply* reply);
  bool installSlots(Node* from, const ::redisReply* reply);
  void askSentinel();
  void onSentinelAnswer(Node* from, const ::redisReply* reply);

  bool routeCheck(const RedisCheck& check, Route& route, RedisErrorReason* why);
  bool dispatch(Call* call, const Route& route);
  void releaseHeld();
  void releaseWaiting(Node* node, bool ready);
  bool sendPart(Part* part);
  void onPartReply(Part* part, Node* node, const ::redisReply* reply);
  bool redirect(Part* part, const ::redisReply* reply, RedisErrorReason* why);
  void partDone(Part* part, const int64_t* values, size_t count, RedisErrorReason* failed);
  void resolve(Call* call, const RedisAnswer& answer);
  void link(Call* call);
  void unlink(Call* call);
  Call* allocCall();
  void releaseCall(Call* call);
  Part* allocPart();
  void freePart(Part* part);
  void armCallTimer();
  void onCallTimer();
  void nodeLost(Node* node);
  void logProblem(std::string_view what, std::string_view detail, std::string_view address);
  uint64_t nowMs() const;

  struct uv_loop_s* loop_;
  uint32_t worker_index_;
  std::shared_ptr<const RedisSettings> settings_;
  bool closed_ = false;
  uint32_t reconnects_ = 0;
  uint64_t rng_;
  std::vector<std::unique_ptr<Node>> nodes_;  // never freed before shutdown: parts point here
  Node* master_ = nullptr;                    // single server, or the sentinels' master
  // Cluster: slot -> index in nodes_ + 1 (0: no master known).
  std::unique_ptr<uint8_t[]> slots_;
  bool slots_known_ = false;
  bool first_discovery_ = false;  // no map or master learnt yet: checks wait in held_
  std::vector<Call*> held_;
  std::vector<Part*> waiting_;  // parts for a node whose first handshake is not done
  Node* discovery_node_ = nullptr;  // asked CLUSTER SLOTS or the sentinel, not answered yet
  bool discovery_again_ = false;    // asked for again meanwhile
  uint64_t discovery_asked_ms_ = 0;
  uint32_t next_source_ = 0;      // round robin over the nodes that answer
  uint32_t next_configured_ = 0;  // round robin over the seeds or sentinels
  Timer* slots_timer_;        // slot-map refreshes, sentinel polls
  Timer* call_timer_;         // the earliest waiting check's deadline
  Flush* flush_;              // writes the turn's commands before the loop waits
  bool call_timer_armed_ = false;
  uint64_t call_timer_due_ = 0;
  Call* head_ = nullptr;  // waiting checks, in deadline order
  Call* tail_ = nullptr;
  // Calls and parts are reused, so a warm worker allocates nothing per check; their
  // addresses are stable (hiredis holds them).
  template <class T>
  struct Pool {
    std::vector<std::unique_ptr<T>> all;
    T* free = nullptr;  // linked through T::next
    T* take() {
      if (!free) return all.emplace_back(std::make_unique<T>()).get();
      T* t = free;
      free = t->next;
      t->next = nullptr;
      return t;
    }
    void give(T* t) {
      t->next = free;
      free = t;
    }
  };
  Pool<Call> calls_;
  Pool<Part> parts_;

  struct Denied {
    uint64_t key = 0;
    int64_t until = 0;
  };
  static constexpr size_t kDeniedSlots = 4096;
  std::unique_ptr<Denied[]> denied_;
};

}  // namespace gw::rate_limit
