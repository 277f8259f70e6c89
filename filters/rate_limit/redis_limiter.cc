#include "filters/rate_limit/redis_limiter.h"

#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>

#include "filters/rate_limit/arena_array.h"
#include "filters/rate_limit/key_hash.h"
#include "filters/rate_limit/redis_connection.h"
#include "filters/rate_limit/rate_limit_stats.h"
#include "gateway/log.h"
#include "gateway/tls/tls_context.h"

namespace gw::rate_limit {

namespace {

// KEYS[i]: one bucket per limit. ARGV[3i-2], ARGV[3i-1]: the limit's interval and window in
// microseconds; ARGV[3i]: "1" for dry_run. The request is admitted only if every limit that
// is not dry_run has a token, and then takes one from every limit that has one; a refused
// request takes nothing. A bucket's key holds its full_at (token_bucket.h) and expires when
// the bucket is full again. Returns {admitted, then per limit: remaining, ms until full,
// ms until the next token (0 if it had one)}.
constexpr char kScript[] = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local empty, ok = {}, {}
local admitted = 1
for i = 1, #KEYS do
  local interval, window = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local full = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  empty[i] = math.max(full, now) - window
  ok[i] = empty[i] + interval <= now
  if not ok[i] and ARGV[3 * i] ~= '1' then admitted = 0 end
end
local out = {admitted}
for i = 1, #KEYS do
  local interval, window = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local e, retry = empty[i], 0
  if not ok[i] then
    retry = e + interval - now
  elseif admitted == 1 then
    e = e + interval
    redis.call('SET', KEYS[i], string.format('%.0f', e + window), 'PX',
               math.max(1, math.ceil((e + window - now) / 1000)))
  end
  out[#out + 1] = math.max(0, math.floor((now - e) / interval))
  out[#out + 1] = math.max(0, math.ceil((e + window - now) / 1000))
  out[#out + 1] = math.ceil(retry / 1000)
end
return out
)lua";

std::string sha1Hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), md, &len, EVP_sha1(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

constexpr uint64_t kMinConnectTimeoutMs = 1000;
constexpr uint64_t kBackoffBaseMs = 100;
constexpr uint64_t kBackoffMaxMs = 2000;
constexpr int kMaxKeys = 32;
constexpr uint32_t kMaxScriptValues = 1 + 3 * kMaxKeys;
constexpr size_t kSlots = 16384;
// Distinct addresses one worker will talk to: a cluster's masters, seeds and sentinels. A
// redirect to yet another address past this is treated as garbage.
constexpr size_t kMaxNodes = 64;
// A check redirected more often than this is not following a resharding but a loop.
constexpr uint8_t kMaxRedirects = 5;
// The slot map is learnt again at most this often after a redirect or a lost node, and
// every kDiscoveryPeriodMs anyway (a failover that closed no connection); the sentinels are
// asked as often.
constexpr uint64_t kMinDiscoveryGapMs = 100;
constexpr uint64_t kDiscoveryPeriodMs = 1000;

// Handshake and control replies carry one of these as privdata.
char kTagAuth, kTagSelect, kTagReady, kTagProbe, kTagSlots, kTagSentinel;

LogThrottle g_log_throttle(10'000'000'000);  // one Redis problem line per 10 s per process

std::string tlsIdentity(const RedisConfig& c) {
  if (!c.tls) return {};
  return "tls\n" + c.tls->sni + '\n' + c.tls->ca + '\n' + c.tls->cert_file + '\n' +
         c.tls->key_file + '\n' + (c.tls->verify ? "1" : "0");
}

bool sameConfig(const RedisConfig& a, const RedisConfig& b) {
  return a.mode == b.mode && a.address == b.address && a.cluster == b.cluster &&
         a.sentinel_master == b.sentinel_master && a.sentinels == b.sentinels &&
         a.timeout == b.timeout && a.on_error == b.on_error && a.replicas == b.replicas &&
         a.key_prefix == b.key_prefix && a.username == b.username &&
         a.password == b.password && a.db == b.db && tlsIdentity(a) == tlsIdentity(b);
}

bool isError(const redisReply* r, std::string_view prefix) {
  return r && r->type == REDIS_REPLY_ERROR && r->str &&
         std::string_view(r->str, r->len).substr(0, prefix.size()) == prefix;
}

std::string_view textOf(const redisReply* r) {
  if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS &&
             r->type != REDIS_REPLY_ERROR) || !r->str) {
    return {};
  }
  return {r->str, r->len};
}

// A decimal in [min, max], all of `text`.
std::optional<uint32_t> parseNumber(std::string_view text, uint32_t min, uint32_t max) {
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    return std::nullopt;
  }
  return v;
}

// A numeric IPv4 or IPv6 address: what a cluster or a sentinel may name. A host name would
// would need resolving, a blocking call, on the event loop.
bool isNumericHost(std::string_view host) {
  if (host.empty() || host.size() >= INET6_ADDRSTRLEN) return false;
  char text[INET6_ADDRSTRLEN];
  std::memcpy(text, host.data(), host.size());
  text[host.size()] = 0;
  unsigned char addr[sizeof(in6_addr)];
  return inet_pton(AF_INET, text, addr) == 1 || inet_pton(AF_INET6, text, addr) == 1;
}

uint16_t crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= uint16_t(c << 8);
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? uint16_t((crc << 1) ^ 0x1021) : uint16_t(crc << 1);
  }
  return crc;
}

// "0".."32": the numkeys argument of a part of a check.
const std::string& numberText(int n) {
  static const auto texts = [] {
    std::vector<std::string> t;
    for (int i = 0; i <= kMaxKeys; ++i) t.push_back(std::to_string(i));
    return t;
  }();
  return texts[size_t(n)];
}

int64_t steadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string_view tokenBucketScript() { return kScript; }

std::string_view tokenBucketSha() {
  static const std::string sha = sha1Hex(kScript);
  return sha;
}

uint16_t redisKeySlot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return uint16_t(crc16(key) & (kSlots - 1));
}

// ---------------------------------------------------------------------------------------
// Settings

RedisEndpoint RedisEndpoint::parse(const std::string& a) {
  RedisEndpoint e;
  e.text = a;
  if (a.rfind("unix:", 0) == 0) {
    e.unix_path = a.substr(5);
    return e;
  }
  size_t colon = a.rfind(':');
  std::string host = a.substr(0, colon == std::string::npos ? a.size() : colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  e.port = colon == std::string::npos ? 6379 : std::atoi(a.c_str() + colon + 1);
  e.host = host;
  // A name is resolved here, at load: never with a blocking getaddrinfo on the event loop.
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) == 0 && res) {
    char text[NI_MAXHOST];
    if (getnameinfo(res->ai_addr, res->ai_addrlen, text, sizeof text, nullptr, 0,
                    NI_NUMERICHOST) == 0) {
      e.host = text;
    }
    freeaddrinfo(res);
  }
  return e;
}

std::shared_ptr<const RedisSettings> RedisSettings::get(const RedisConfig& config) {
  static std::mutex mutex;
  static std::weak_ptr<const RedisSettings> last;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto s = last.lock(); s && sameConfig(s->config, config)) return s;

  auto s = std::make_shared<RedisSettings>();
  s->config = config;
  std::string identity = std::to_string(int(config.mode)) + '\n';
  auto add = [&](const std::string& address) {
    s->endpoints.push_back(RedisEndpoint::parse(address));
    identity += address + '\n';
  };
  switch (config.mode) {
    case RedisMode::Single:
      add(config.address);
      break;
    case RedisMode::Cluster:
      for (const std::string& a : config.cluster) add(a);
      break;
    case RedisMode::Sentinel:
      for (const std::string& a : config.sentinels) add(a);
      identity += config.sentinel_master + '\n';
      break;
  }
  identity += config.username + '\n' + config.password + '\n' + std::to_string(config.db) +
              '\n' + tlsIdentity(config);
  if (config.tls) {
    // Validated when the configuration loaded; a failure now (a file changed since) is
    // logged and the nodes are then unreachable.
    std::string error;
    s->tls = TlsClientContext::build(*config.tls, &error);
    if (!s->tls) log::warn("redis tls", {{"error", error}});
  }
  s->fingerprint = hashText(identity, 0x5eed);
  static uint64_t serial = 0;
  s->serial = ++serial;
  last = s;
  return s;
}

// ---------------------------------------------------------------------------------------
// Calls, parts and timers

// One check, as the filter sees it: answered once, whatever happens to its parts.
struct RedisLimiter::Call {
  RequestContext* ctx = nullptr;  // null: nobody waits any more (answered, timed out, gone)
  const RedisCheckOwner* owner = nullptr;
  RedisCheck check;
  Node* node = nullptr;  // where its (first) part went: marked down if it times out
  uint64_t deadline_ms = 0;
  Call* prev = nullptr;  // the waiting list, while linked; the free list otherwise
  Call* next = nullptr;
  bool linked = false;
  uint32_t parts_out = 0;      // sent (or waiting for a node) and not answered yet
  uint32_t parts_pending = 0;  // answers still needed
  bool failed = false;         // a part could not be sent: the timer ends it at once
  RedisErrorReason fail_reason = RedisErrorReason::Connect;
  bool held = false;            // waiting for the first slot map or master (held_)
  int64_t values[kMaxScriptValues];
};

// Where the parts of one check go.
struct RedisLimiter::Route {
  Node* nodes[kMaxKeys];
  uint32_t masks[kMaxKeys];  // bit k: the check's key k
  int parts = 0;
};

// One EVALSHA on one node: the whole check, or the keys of one slot when they span several.
struct RedisLimiter::Part {
  Call* call = nullptr;
  Node* node = nullptr;
  const char** argv = nullptr;  // the check's, or the request arena's for a slot's keys
  size_t* lens = nullptr;
  int argc = 0;
  uint32_t key_mask = 0;  // bit k: the check's key k is in this part
  uint8_t redirects = 0;
  bool evaled = false;  // already resent as EVAL after NOSCRIPT
  bool asking = false;  // sent after ASKING (an ASK redirect)
  Part* next = nullptr;  // the free list
};

// A timer whose memory outlives its owner if need be: freed by its close callback.
struct RedisLimiter::Timer {
  uv_timer_t handle{};
  void* target = nullptr;
  void (*fire)(void*) = nullptr;

  static Timer* make(uv_loop_t* loop, void* target, void (*fire)(void*)) {
    auto* t = new Timer;
    uv_timer_init(loop, &t->handle);
    t->handle.data = t;
    t->target = target;
    t->fire = fire;
    return t;
  }
  static void onFire(uv_timer_t* h) noexcept {
    auto* t = static_cast<Timer*>(h->data);
    if (t->target) t->fire(t->target);
  }
  void start(uint64_t ms) { uv_timer_start(&handle, onFire, ms, 0); }
  void stop() { uv_timer_stop(&handle); }
  bool active() const { return uv_is_active(reinterpret_cast<const uv_handle_t*>(&handle)); }
  void close() {
    target = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle),
             [](uv_handle_t* h) noexcept { delete static_cast<Timer*>(h->data); });
  }
};

// Writes the commands queued during one turn of the loop, one write per connection, just
// before the loop waits: every check that became ready in the turn shares it.
struct RedisLimiter::Flush {
  uv_prepare_t handle{};
  RedisLimiter* owner = nullptr;

  static Flush* make(uv_loop_t* loop, RedisLimiter* owner) {
    auto* f = new Flush;
    uv_prepare_init(loop, &f->handle);
    f->handle.data = f;
    f->owner = owner;
    return f;
  }
  static void onPrepare(uv_prepare_t* h) noexcept {
    auto* f = static_cast<Flush*>(h->data);
    uv_prepare_stop(h);
    if (f->owner) f->owner->flushAll();
  }
  void start() {
    auto* h = reinterpret_cast<uv_handle_t*>(&handle);
    if (!uv_is_active(h)) uv_prepare_start(&handle, onPrepare);
  }
  void close() {
    owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle),
             [](uv_handle_t* h) noexcept { delete static_cast<Flush*>(h->data); });
  }
};

// ---------------------------------------------------------------------------------------
// Node: one connection to one server

class RedisLimiter::Node final : public RedisConnection::Owner {
 public:
  enum class State { Idle, Connecting, Up, Down, Backoff };

  Node(RedisLimiter* owner, RedisEndpoint endpoint, bool data, uint8_t index)
      : owner_(owner),
        endpoint_(std::move(endpoint)),
        data_(data),
        index_(index),
        conn_(owner->loop_, this),
        retry_timer_(Timer::make(owner->loop_, this,
                                 [](void* n) { static_cast<Node*>(n)->onRetryTimer(); })) {}
  ~Node() override { close(); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const RedisEndpoint& endpoint() const { return endpoint_; }
  bool data() const { return data_; }
  uint8_t index() const { return index_; }
  State state() const { return state_; }
  bool retired() const { return retired_; }
  bool up() const { return conn_.open() && state_ == State::Up; }
  RedisLinkState linkState() const {
    if (retired_) return RedisLinkState::Unused;
    if (up()) return RedisLinkState::Up;
    if (state_ == State::Connecting || state_ == State::Idle) return RedisLinkState::Connecting;
    return RedisLinkState::Down;
  }

  // What /health was last told about this node (RedisLimiter::publishState).
  RedisLinkState published_state = RedisLinkState::Unused;
  std::string_view published_role;

  // The first connection after start, a reconfiguration or a new master is being made:
  // checks wait for its handshake (never pipelined behind it: a refused AUTH or SELECT
  // would let them run as the default user, or in database 0).
  bool pending() const { return conn_.open() && state_ == State::Connecting && first_connect_; }
  bool usable() const { return up() || pending(); }

  // Connects unless a connection exists or is due (backoff); a retired node is wanted again.
  void ensureConnected() {
    if (retired_) {
      retired_ = false;
      first_connect_ = true;
      attempts_ = 0;
    }
    if (state_ == State::Idle) connect();
  }

  // Not wanted any more (not a master now, settings changed): closed, not reconnected. Its
  // waiting commands are answered with no reply.
  void retire() {
    if (retired_) return;
    retired_ = true;
    retry_timer_->stop();
    conn_.close();
    setState(State::Idle);
    owner_->releaseWaiting(this, /*ready=*/false);
  }

  void close() {
    retire();
    if (retry_timer_) retry_timer_->close();
    retry_timer_ = nullptr;
  }

  // Queued for the turn's flush: every command of a loop turn leaves in one write.
  bool command(RedisConnection::ReplyFn fn, void* privdata, int argc, const char** argv,
               const size_t* lens) {
    if (!conn_.command(fn, this, privdata, argc, argv, lens)) return false;
    if (!wants_write_ && owner_->flush_) {
      wants_write_ = true;
      owner_->flush_->start();
    }
    return true;
  }

  void flush() {
    if (!wants_write_) return;
    wants_write_ = false;
    conn_.flush();  // may drop the connection (write error)
  }

  // A late or any answer: the node is back.
  void markAnswering() {
    if (state_ != State::Down) return;
    setState(State::Up);
    retry_timer_->stop();
  }

  // A check timed out: checks for this node are decided by on_error until a probe answers.
  void markDown() {
    if (state_ != State::Up) return;
    setState(State::Down);
    sendProbe();
  }

  void drop(std::string_view why) {
    conn_.close();
    lost(why);
  }

  void onConnectionLost(std::string_view why) override { lost(why); }

  static void onReply(void* target, const redisReply* reply, void* privdata) {
    auto* self = static_cast<Node*>(target);
    if (reply) self->markAnswering();
    self->owner_->onPartReply(static_cast<Part*>(privdata), self, reply);
  }

  static void onControlReply(void* target, const redisReply* reply, void* privdata) {
    auto* self = static_cast<Node*>(target);
    // Discovery must hear of its question's end even from a connection going away.
    if (privdata == &kTagSlots) return self->owner_->onSlots(self, reply);
    if (privdata == &kTagSentinel) return self->owner_->onSentinelAnswer(self, reply);
    if (!reply) return;
    if (privdata == &kTagProbe) {
      self->probe_outstanding_ = false;
      self->markAnswering();
      return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
      const char* step = privdata == &kTagAuth     ? "redis AUTH failed"
                         : privdata == &kTagSelect ? "redis SELECT failed"
                         : self->data_             ? "redis SCRIPT LOAD failed"
                                                   : "redis sentinel PING failed";
      self->owner_->logProblem(step, textOf(reply), self->endpoint_.text);
      self->drop("handshake failed");
      return;
    }
    if (privdata == &kTagReady) {
      self->retry_timer_->stop();
      self->attempts_ = 0;
      self->first_connect_ = false;
      self->setState(State::Up);
      self->owner_->releaseWaiting(self, /*ready=*/true);
    }
  }

 private:
  void setState(State s) {
    state_ = s;
    owner_->publishState();
  }

  void connect() {
    setState(State::Connecting);
    probe_outstanding_ = false;
    const RedisConfig& c = owner_->settings_->config;
    std::shared_ptr<const TlsClientContext> tls = data_ ? owner_->settings_->tls : nullptr;
    if (data_ && c.tls && !tls) return lost("no TLS context");  // never in clear instead
    std::string why;
    if (!conn_.connect(endpoint_, std::move(tls), &why)) return lost(why);
    // The handshake is queued behind the connect; checks wait for its last answer.
    if (!data_) {
      const char* argv[] = {"PING"};
      size_t lens[] = {4};
      command(onControlReply, &kTagReady, 1, argv, lens);
    } else {
      if (!c.password.empty()) {
        if (!c.username.empty()) {
          const char* argv[] = {"AUTH", c.username.c_str(), c.password.c_str()};
          size_t lens[] = {4, c.username.size(), c.password.size()};
          command(onControlReply, &kTagAuth, 3, argv, lens);
        } else {
          const char* argv[] = {"AUTH", c.password.c_str()};
          size_t lens[] = {4, c.password.size()};
          command(onControlReply, &kTagAuth, 2, argv, lens);
        }
      }
      if (c.db != 0 && c.mode != RedisMode::Cluster) {
        std::string db = std::to_string(c.db);
        const char* argv[] = {"SELECT", db.c_str()};
        size_t lens[] = {6, db.size()};
        command(onControlReply, &kTagSelect, 2, argv, lens);
      }
      const char* argv[] = {"SCRIPT", "LOAD", kScript};
      size_t lens[] = {6, 4, sizeof kScript - 1};
      command(onControlReply, &kTagReady, 3, argv, lens);
    }
    retry_timer_->start(std::max<uint64_t>(kMinConnectTimeoutMs, c.timeout.count()));
  }

  void lost(std::string_view why) {
    if (owner_->closed_ || retired_) return;
    owner_->logProblem("redis connection lost", why, endpoint_.text);
    probe_outstanding_ = false;
    first_connect_ = false;
    wants_write_ = false;
    ++attempts_;
    uint64_t delay = kBackoffBaseMs << std::min<uint32_t>(attempts_ - 1, 10);
    delay = std::min(delay, kBackoffMaxMs);
    uint64_t& rng = owner_->rng_;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    delay = delay * 3 / 4 + rng % (delay / 2 + 1);  // +-25%: replicas do not reconnect in step
    retry_timer_->start(delay);
    setState(State::Backoff);
    owner_->releaseWaiting(this, /*ready=*/false);
    owner_->nodeLost(this);
  }

  void onRetryTimer() {
    switch (state_) {
      case State::Backoff:
        ++owner_->reconnects_;
        connect();
        break;
      case State::Connecting:
        drop("connect timeout");
        break;
      case State::Down:
        // The probe (and everything before it) went unanswered for the stall limit.
        if (probe_outstanding_) drop("no answer");
        break;
      default:
        break;
    }
  }

  void sendProbe() {
    if (!conn_.open() || probe_outstanding_) return;
    const char* argv[] = {"PING"};
    size_t lens[] = {4};
    if (!command(onControlReply, &kTagProbe, 1, argv, lens)) return drop("cannot send");
    probe_outstanding_ = true;
    uint64_t stall = std::max<uint64_t>(kMinConnectTimeoutMs,
                                        10 * owner_->settings_->config.timeout.count());
    retry_timer_->start(stall);
  }

  RedisLimiter* owner_;
  RedisEndpoint endpoint_;
  bool data_;  // a data node (AUTH, SELECT, SCRIPT LOAD), not a sentinel
  uint8_t index_;
  RedisConnection conn_;
  State state_ = State::Idle;
  bool retired_ = false;
  bool first_connect_ = true;  // checks may wait for this connection
  bool probe_outstanding_ = false;
  bool wants_write_ = false;
  uint32_t attempts_ = 0;  // failed connections in a row
  Timer* retry_timer_;     // backoff, connect timeout, probe stall
};

// ---------------------------------------------------------------------------------------
// Life cycle

RedisLimiter::RedisLimiter(uv_loop_s* loop, uint32_t worker_index)
    : loop_(loop),
      worker_index_(worker_index),
      rng_(processHashSeed() ^ (uint64_t(worker_index) << 32) ^ uint64_t(steadyNs())),
      slots_(std::make_unique<uint8_t[]>(kSlots)),
      slots_timer_(Timer::make(loop, this,
                               [](void* l) { static_cast<RedisLimiter*>(l)->onSlotsTimer(); })),
      call_timer_(Timer::make(loop, this,
                              [](void* l) { static_cast<RedisLimiter*>(l)->onCallTimer(); })),
      flush_(Flush::make(loop, this)),
      denied_(std::make_unique<Denied[]>(kDeniedSlots)) {}

RedisLimiter::~RedisLimiter() {
  if (!closed_) shutdown();
}

RedisLimiter& RedisLimiter::of(WorkerServices& worker) {
  return static_cast<RedisLimiter&>(
      worker.state("redis", [](WorkerServices& w) -> std::unique_ptr<WorkerState> {
        return std::make_unique<RedisLimiter>(w.loop(), w.workerIndex());
      }));
}

RedisLimiter& RedisLimiter::forWorker(WorkerServices& worker,
                                      const std::shared_ptr<const RedisSettings>& settings) {
  RedisLimiter& limiter = of(worker);
  // While a reload drains, requests of the old snapshot keep using the new connections
  // rather than flipping them back and forth.
  if (!limiter.settings_ || settings->serial > limiter.settings_->serial) {
    limiter.configure(settings);
  }
  return limiter;
}

void RedisLimiter::configure(const std::shared_ptr<const RedisSettings>& settings) {
  if (closed_) return;
  bool same_servers = settings_ && settings_->fingerprint == settings->fingerprint;
  settings_ = settings;  // a newer snapshot: timeout, on_error may differ
  if (same_servers) return;
  // Nodes are retired, never freed before shutdown: parts may still point at them.
  for (auto& node : nodes_) node->retire();
  master_ = nullptr;
  std::fill_n(slots_.get(), kSlots, uint8_t(0));
  slots_known_ = false;
  discovery_node_ = nullptr;
  discovery_again_ = false;
  discovery_asked_ms_ = 0;
  first_discovery_ = settings_->config.mode != RedisMode::Single;
  slots_timer_->stop();
  switch (settings_->config.mode) {
    case RedisMode::Single:
      master_ = nodeFor(settings_->endpoints.front(), /*data=*/true);
      if (master_) master_->ensureConnected();
      break;
    case RedisMode::Cluster:
      requestSlots();
      break;
    case RedisMode::Sentinel:
      askSentinel();
      break;
  }
  publishState();
}

void RedisLimiter::shutdown() {
  if (closed_) return;
  closed_ = true;
  for (auto& node : nodes_) {
    if (node->published_state == RedisLinkState::Unused) continue;
    setRedisNodeState(worker_index_, node->endpoint().text, node->published_role,
                      RedisLinkState::Unused);
  }
  for (auto& node : nodes_) node->close();  // answers every part sent or waiting with no reply
  slots_timer_->close();
  call_timer_->close();
  flush_->close();
  slots_timer_ = call_timer_ = nullptr;
  flush_ = nullptr;
  setRedisLinkState(worker_index_, RedisLinkState::Unused);
}

void RedisLimiter::flushAll() {
  for (auto& node : nodes_) node->flush();
}

RedisLimiter::Node* RedisLimiter::nodeFor(const RedisEndpoint& endpoint, bool data) {
  for (auto& node : nodes_) {
    if (node->data() == data && node->endpoint().text == endpoint.text) return node.get();
  }
  if (nodes_.size() >= kMaxNodes) return nullptr;
  nodes_.push_back(std::make_unique<Node>(this, endpoint, data, uint8_t(nodes_.size())));
  return nodes_.back().get();
}

RedisLimiter::Node* RedisLimiter::nodeFor(std::string_view host, int port) {
  if (!isNumericHost(host) || port <= 0 || port > 65535) return nullptr;
  RedisEndpoint e;
  e.host = std::string(host);
  e.port = port;
  bool v6 = host.find(':') != std::string_view::npos;
  e.text = (v6 ? "[" + e.host + "]" : e.host) + ":" + std::to_string(port);
  return nodeFor(e, /*data=*/true);
}

RedisLimiter::Node* RedisLimiter::nodeForSlot(uint16_t slot) const {
  uint8_t i = slots_[slot];
  return i == 0 ? nullptr : nodes_[i - 1].get();
}

bool RedisLimiter::connected() const {
  if (!settings_ || closed_) return false;
  if (settings_->config.mode != RedisMode::Cluster) return master_ && master_->up();
  if (!slots_known_) return false;
  for (size_t s = 0; s < kSlots; ++s) {
    Node* n = nodeForSlot(uint16_t(s));
    if (!n || !n->up()) return false;
  }
  return true;
}

// The worker's state for /health: up when every node it needs answers; and each node's.
void RedisLimiter::publishState() {
  if (closed_ || !settings_) return;
  bool cluster = settings_->config.mode == RedisMode::Cluster;
  bool master[kMaxNodes] = {};
  bool uncovered = false;
  for (size_t s = 0; cluster && s < kSlots; ++s) {
    if (slots_[s] == 0) uncovered = true;
    if (slots_[s] != 0) master[slots_[s] - 1] = true;
  }
  if (master_) master[master_->index()] = true;
  bool known = cluster ? slots_known_ : master_ != nullptr;
  RedisLinkState link = known && !uncovered ? RedisLinkState::Up
                        : first_discovery_  ? RedisLinkState::Connecting
                                            : RedisLinkState::Down;
  for (auto& node : nodes_) {
    RedisLinkState state = node->linkState();
    // The worker is as well off as its worst master: down, else connecting, else up.
    if (master[node->index()] && state != RedisLinkState::Up && link != RedisLinkState::Down) {
      link = state == RedisLinkState::Connecting ? RedisLinkState::Connecting
                                                 : RedisLinkState::Down;
    }
    std::string_view role = !node->data()             ? "sentinel"
                            : master[node->index()]   ? "master"
                                                      : "seed";
    if (state != node->published_state || role != node->published_role) {
      if (node->published_state != RedisLinkState::Unused && role != node->published_role) {
        setRedisNodeState(worker_index_, node->endpoint().text, node->published_role,
                          RedisLinkState::Unused);
      }
      setRedisNodeState(worker_index_, node->endpoint().text, role, state);
      node->published_state = state;
      node->published_role = role;
    }
  }
  setRedisLinkState(worker_index_, link);
}

// Deadlines on the real clock: the loop's cached time may be a busy turn old, which would
// shorten a check's timeout. A timer armed on the loop's time may then fire early, and is
// re-armed for what is left.
uint64_t RedisLimiter::nowMs() const { return uint64_t(steadyNs() / 1'000'000); }

void RedisLimiter::logProblem(std::string_view what, std::string_view detail,
                              std::string_view address) {
  uint64_t suppressed = 0;
  if (!g_log_throttle.allow(steadyNs(), &suppressed)) return;
  std::string worker = std::to_string(worker_index_);
  std::string skipped = std::to_string(suppressed);
  log::warn(what, {{"error", detail},
                   {"address", address},
                   {"worker", worker},
                   {"suppressed", skipped}});
}

void RedisLimiter::nodeLost(Node* node) {
  if (closed_ || !settings_) return;
  if (settings_->config.mode == RedisMode::Cluster && node->data()) requestSlots();
  if (settings_->config.mode == RedisMode::Sentinel && node == master_) askSentinel();
}

// ---------------------------------------------------------------------------------------
// Discovery: the cluster's slot map, the sentinels' master

void RedisLimiter::onSlotsTimer() {
  if (closed_ || !settings_) return;
  if (settings_->config.mode == RedisMode::Cluster) requestSlots();
  if (settings_->config.mode == RedisMode::Sentinel) askSentinel();
  if (!slots_timer_->active()) slots_timer_->start(kDiscoveryPeriodMs);
}

// The node to ask: one that answers, else the next configured one (a seed or a sentinel),
// connecting to it (the question queues behind the connection).
RedisLimiter::Node* RedisLimiter::discoverySource(bool data) {
  size_t n = nodes_.size();
  for (size_t i = 0; i < n; ++i) {
    Node* node = nodes_[(next_source_ + i) % n].get();
    if (node->data() == data && !node->retired() && node->up()) {
      next_source_ = uint32_t((next_source_ + i + 1) % n);
      return node;
    }
  }
  const auto& endpoints = settings_->endpoints;
  Node* node = nodeFor(endpoints[next_configured_++ % endpoints.size()], data);
  if (node) node->ensureConnected();
  return node;
}

// At most one question in flight, at most one every kMinDiscoveryGapMs.
bool RedisLimiter::discoveryDue() {
  if (discovery_node_) {
    discovery_again_ = true;
    return false;
  }
  uint64_t now = nowMs();
  if (now < discovery_asked_ms_ + kMinDiscoveryGapMs) {
    if (!slots_timer_->active()) slots_timer_->start(discovery_asked_ms_ + kMinDiscoveryGapMs - now);
    return false;
  }
  discovery_asked_ms_ = now;
  discovery_again_ = false;
  return true;
}

void RedisLimiter::askDiscovery(bool data, void* tag, int argc, const char** argv,
                                const size_t* lens) {
  if (closed_ || !discoveryDue()) return;
  Node* node = discoverySource(data);
  if (node && node->command(Node::onControlReply, tag, argc, argv, lens)) {
    discovery_node_ = node;
  } else {
    ++next_configured_;  // that one could not take it: the next time, another
  }
  if (!slots_timer_->active()) slots_timer_->start(kDiscoveryPeriodMs);
}

void RedisLimiter::discoveryAnswered(Node* from) {
  if (from != discovery_node_) return;
  discovery_node_ = nullptr;
  if (discovery_again_) {
    if (settings_->config.mode == RedisMode::Cluster) requestSlots();
    if (settings_->config.mode == RedisMode::Sentinel) askSentinel();
  }
}

void RedisLimiter::requestSlots() {
  const char* argv[] = {"CLUSTER", "SLOTS"};
  size_t lens[] = {7, 5};
  askDiscovery(/*data=*/true, &kTagSlots, 2, argv, lens);
}

void RedisLimiter::onSlots(Node* from, const redisReply* reply) {
  if (closed_ || from != discovery_node_) return;
  if (reply && !installSlots(from, reply)) {
    logProblem("redis cluster slot map refused", reply->type == REDIS_REPLY_ERROR
                                                     ? textOf(reply)
                                                     : std::string_view("bad reply"),
               from->endpoint().text);
    ++next_configured_;
  }
  discoveryAnswered(from);
}

// CLUSTER SLOTS: [[start, end, [host, port, id...], replica...]...]. Installed only if all
// of it makes sense; the masters are connected to, the nodes no longer named retired.
bool RedisLimiter::installSlots(Node* from, const redisReply* reply) {
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements > kSlots) return false;
  auto map = std::make_unique<uint8_t[]>(kSlots);
  std::fill_n(map.get(), kSlots, uint8_t(0));
  for (size_t i = 0; i < reply->elements; ++i) {
    const redisReply* range = reply->element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) return false;
    const redisReply* lo = range->element[0];
    const redisReply* hi = range->element[1];
    const redisReply* master = range->element[2];
    if (lo->type != REDIS_REPLY_INTEGER || hi->type != REDIS_REPLY_INTEGER || lo->integer < 0 ||
        hi->integer >= static_cast<long long>(kSlots) || lo->integer > hi->integer) {
      return false;
    }
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
        master->element[1]->type != REDIS_REPLY_INTEGER) {
      return false;
    }
    std::string_view host = textOf(master->element[0]);
    // An empty host is "the address you asked": the node that answered.
    if (host.empty()) host = from->endpoint().host;
    long long port = master->element[1]->integer;
    Node* node = port > 0 && port <= 65535 ? nodeFor(host, int(port)) : nullptr;
    if (!node) return false;
    std::fill(map.get() + lo->integer, map.get() + hi->integer + 1, uint8_t(node->index() + 1));
  }
  std::memcpy(slots_.get(), map.get(), kSlots);
  slots_known_ = true;
  bool master[kMaxNodes] = {};
  for (size_t s = 0; s < kSlots; ++s) {
    if (slots_[s] != 0) master[slots_[s] - 1] = true;
  }
  for (auto& node : nodes_) {
    if (!node->data()) continue;
    if (master[node->index()]) {
      node->ensureConnected();
    } else if (node.get() != from) {
      node->retire();  // a replica now, or gone: nothing to send it
    }
  }
  if (first_discovery_) releaseHeld();
  publishState();
  return true;
}

void RedisLimiter::askSentinel() {
  const std::string& name = settings_->config.sentinel_master;
  const char* argv[] = {"SENTINEL", "get-master-addr-by-name", name.c_str()};
  size_t lens[] = {8, 23, name.size()};
  askDiscovery(/*data=*/false, &kTagSentinel, 3, argv, lens);
}

void RedisLimiter::onSentinelAnswer(Node* from, const redisReply* reply) {
  if (closed_ || from != discovery_node_) return;
  Node* node = nullptr;
  if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
    auto port = parseNumber(textOf(reply->element[1]), 1, 65535);
    if (port) node = nodeFor(textOf(reply->element[0]), int(*port));
  }
  if (node) {
    if (node != master_) {
      if (master_) {
        logProblem("redis master moved", node->endpoint().text, master_->endpoint().text);
        master_->retire();
      }
      master_ = node;
    }
    master_->ensureConnected();
    if (first_discovery_) releaseHeld();
    publishState();
  } else if (reply) {
    logProblem("redis sentinel did not name the master",
               reply->type == REDIS_REPLY_NIL ? std::string_view("unknown master name")
                                              : std::string_view("bad reply"),
               from->endpoint().text);
    ++next_configured_;
  }
  discoveryAnswered(from);
}

// ---------------------------------------------------------------------------------------
// Checks

RedisLimiter::Call* RedisLimiter::send(RequestContext& ctx, const RedisCheckOwner& owner,
                                       const RedisCheck& check, RedisErrorReason* why) {
  *why = RedisErrorReason::Connect;
  if (closed_ || !settings_ || check.numkeys < 1 || check.numkeys > kMaxKeys) return nullptr;
  Route route;
  bool unknown = settings_->config.mode == RedisMode::Cluster ? !slots_known_ : !master_;
  // Until the first slot map or master is known (just after start or a change of
  // servers) checks wait for it, as they wait for a first connection.
  if (unknown && !first_discovery_) {
    if (settings_->config.mode == RedisMode::Cluster) requestSlots();
    *why = RedisErrorReason::ClusterDown;
    return nullptr;
  }
  if (!unknown && !routeCheck(check, route, why)) return nullptr;
  Call* call = allocCall();
  call->ctx = &ctx;
  call->owner = &owner;
  call->check = check;
  call->node = nullptr;
  call->failed = false;
  call->held = unknown;
  call->parts_out = 0;
  call->parts_pending = 0;
  call->values[0] = 1;
  if (unknown) {
    held_.push_back(call);
  } else if (!dispatch(call, route)) {
    call->ctx = nullptr;
    releaseCall(call);
    return nullptr;
  }
  call->deadline_ms = call->failed ? 0 : nowMs() + uint64_t(settings_->config.timeout.count());
  link(call);
  armCallTimer();
  return call;
}

// Which node takes which keys: one part per distinct slot (one, with tagged keys).
bool RedisLimiter::routeCheck(const RedisCheck& check, Route& route, RedisErrorReason* why) {
  int n = check.numkeys;
  route.parts = 0;
  if (settings_->config.mode == RedisMode::Cluster) {
    uint16_t slot_of[kMaxKeys];
    for (int k = 0; k < n; ++k) {
      slot_of[k] = redisKeySlot({check.argv[3 + k], check.lens[3 + k]});
      int p = 0;
      while (p < route.parts && slot_of[k] != slot_of[__builtin_ctz(route.masks[p])]) ++p;
      if (p == route.parts) {
        Node* node = nodeForSlot(slot_of[k]);
        if (!node) {
          requestSlots();
          *why = RedisErrorReason::ClusterDown;
          return false;
        }
        route.nodes[p] = node;
        route.masks[route.parts++] = 0;
      }
      route.masks[p] |= 1u << k;
    }
  } else {
    route.nodes[0] = master_;
    route.masks[0] = n == 32 ? ~0u : (1u << n) - 1;
    route.parts = 1;
  }
  for (int p = 0; p < route.parts; ++p) {
    if (!route.nodes[p] || !route.nodes[p]->usable()) {
      // A master that does not answer may have been replaced: the map (or the sentinels) is
      // asked again (at most every 100 ms), so the promoted replica is found within that,
      // not within the periodic refresh.
      if (settings_->config.mode == RedisMode::Cluster) requestSlots();
      if (settings_->config.mode == RedisMode::Sentinel) askSentinel();
      *why = RedisErrorReason::Connect;
      return false;
    }
  }
  return true;
}

// Sends the call's parts; false if none could be sent (then nothing is out). If only some
// could, the call is marked failed: the timer ends it at once.
bool RedisLimiter::dispatch(Call* call, const Route& route) {
  const RedisCheck& check = call->check;
  int n = check.numkeys;
  call->node = route.nodes[0];
  call->parts_pending = uint32_t(route.parts);
  for (int p = 0; p < route.parts; ++p) {
    Part* part = allocPart();
    part->call = call;
    part->node = route.nodes[p];
    part->key_mask = route.masks[p];
    part->redirects = 0;
    part->evaled = false;
    part->asking = false;
    if (route.parts == 1) {
      part->argv = check.argv;
      part->lens = check.lens;
      part->argc = check.argc;
    } else {
      // EVALSHA sha m key... then the three arguments of each of its keys.
      int m = __builtin_popcount(route.masks[p]);
      part->argc = 3 + 4 * m;
      part->argv = arenaArray<const char*>(*call->ctx->arena, size_t(part->argc));
      part->lens = arenaArray<size_t>(*call->ctx->arena, size_t(part->argc));
      part->argv[2] = numberText(m).data();
      part->lens[2] = numberText(m).size();
      int j = 0;
      for (int k = 0; k < n; ++k) {
        if (!(route.masks[p] & (1u << k))) continue;
        part->argv[3 + j] = check.argv[3 + k];
        part->lens[3 + j] = check.lens[3 + k];
        for (int a = 0; a < 3; ++a) {
          part->argv[3 + m + 3 * j + a] = check.argv[3 + n + 3 * k + a];
          part->lens[3 + m + 3 * j + a] = check.lens[3 + n + 3 * k + a];
        }
        ++j;
      }
    }
    if (part->node->pending()) {
      waiting_.push_back(part);
      ++call->parts_out;
      continue;
    }
    if (sendPart(part)) {
      ++call->parts_out;
      continue;
    }
    freePart(part);
    if (call->parts_out == 0) return false;
    call->failed = true;
    call->fail_reason = RedisErrorReason::Connect;
    break;
  }
  return true;
}

// The first slot map or master is known: the checks that waited for it go out.
void RedisLimiter::releaseHeld() {
  first_discovery_ = false;
  // One at a time from the front: an owner called back may abandon a later one.
  while (!held_.empty()) {
    Call* call = held_.front();
    held_.erase(held_.begin());
    call->held = false;
    Route route;
    RedisErrorReason why = RedisErrorReason::Connect;
    if (routeCheck(call->check, route, &why) && dispatch(call, route)) {
      if (call->failed) {  // partly sent: ends at the next timer turn
        unlink(call);
        call->deadline_ms = 0;
        link(call);
      }
      continue;
    }
    RedisAnswer answer;
    answer.outcome = RedisOutcome::Error;
    answer.reason = why;
    resolve(call, answer);
    if (call->parts_out == 0) releaseCall(call);
  }
  armCallTimer();
}

// `node`'s handshake is done (the parts waiting for it go out) or it failed (they fail).
void RedisLimiter::releaseWaiting(Node* node, bool ready) {
  // From the back, one at a time: a callback may add parts or release others.
  for (size_t i = waiting_.size(); i-- > 0;) {
    if (i >= waiting_.size() || waiting_[i]->node != node) continue;
    Part* part = waiting_[i];
    waiting_.erase(waiting_.begin() + long(i));
    RedisErrorReason why = RedisErrorReason::Connect;
    if (!part->call->ctx) {
      partDone(part, nullptr, 0, nullptr);
    } else if (!ready || !sendPart(part)) {
      partDone(part, nullptr, 0, &why);
    }
  }
}

bool RedisLimiter::sendPart(Part* part) {
  std::string_view head = part->evaled ? std::string_view("EVAL") : std::string_view("EVALSHA");
  std::string_view body = part->evaled ? tokenBucketScript() : tokenBucketSha();
  part->argv[0] = head.data();
  part->argv[1] = body.data();
  part->lens[0] = head.size();
  part->lens[1] = body.size();
  if (part->asking) {
    const char* argv[] = {"ASKING"};
    size_t lens[] = {6};
    if (!part->node->command(nullptr, nullptr, 1, argv, lens)) return false;
  }
  return part->node->command(Node::onReply, part, part->argc, part->argv, part->lens);
}

void RedisLimiter::onPartReply(Part* part, Node* node, const redisReply* reply) {
  Call* call = part->call;
  if (!call->ctx) return partDone(part, nullptr, 0, nullptr);  // nobody waits
  RedisErrorReason why = RedisErrorReason::Connect;
  if (!reply) return partDone(part, nullptr, 0, &why);
  if (reply->type == REDIS_REPLY_ERROR && node == part->node) {
    if (!part->evaled && isError(reply, "NOSCRIPT")) {
      part->evaled = true;
      if (sendPart(part)) return;  // still waiting, same deadline
      return partDone(part, nullptr, 0, &why);
    }
    if (isError(reply, "MOVED ") || isError(reply, "ASK ")) {
      if (redirect(part, reply, &why)) return;
      return partDone(part, nullptr, 0, &why);
    }
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    why = isError(reply, "CLUSTERDOWN") ? RedisErrorReason::ClusterDown : RedisErrorReason::Reply;
    logProblem("redis rate limit check failed", textOf(reply), node->endpoint().text);
    // A master demoted under us (sentinel failover) answers READONLY.
    if (isError(reply, "READONLY") && settings_->config.mode == RedisMode::Sentinel) {
      askSentinel();
    }
    if (why == RedisErrorReason::ClusterDown) requestSlots();
    return partDone(part, nullptr, 0, &why);
  }
  size_t want = 1 + 3 * size_t(__builtin_popcount(part->key_mask));
  int64_t values[kMaxScriptValues];
  bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements == want;
  for (size_t i = 0; ok && i < want; ++i) {
    ok = reply->element[i]->type == REDIS_REPLY_INTEGER;
    if (ok) values[i] = reply->element[i]->integer;
  }
  if (!ok) {
    why = RedisErrorReason::BadReply;
    logProblem("redis rate limit check failed", "bad reply", node->endpoint().text);
    return partDone(part, nullptr, 0, &why);
  }
  partDone(part, values, want, nullptr);
}

// MOVED slot host:port (the map changed: learn it again) or ASK slot host:port (this one
// command goes there after ASKING). A garbage address is not followed.
bool RedisLimiter::redirect(Part* part, const redisReply* reply, RedisErrorReason* why) {
  std::string_view text = textOf(reply);
  bool ask = text.substr(0, 4) == "ASK ";
  text.remove_prefix(ask ? 4 : 6);
  size_t space = text.find(' ');
  size_t colon = text.rfind(':');
  std::optional<uint32_t> slot, port;
  if (space != std::string_view::npos && colon != std::string_view::npos && colon > space) {
    slot = parseNumber(text.substr(0, space), 0, kSlots - 1);
    port = parseNumber(text.substr(colon + 1), 1, 65535);
  }
  Node* node = slot && port ? nodeFor(text.substr(space + 1, colon - space - 1), int(*port))
                            : nullptr;
  if (!node || settings_->config.mode != RedisMode::Cluster) {
    *why = RedisErrorReason::BadReply;
    logProblem("redis redirect refused", textOf(reply), part->node->endpoint().text);
    return false;
  }
  if (++part->redirects > kMaxRedirects) {
    *why = RedisErrorReason::MovedStorm;
    logProblem("redis redirects without end", textOf(reply), part->node->endpoint().text);
    requestSlots();
    return false;
  }
  if (!ask) {
    slots_[*slot] = uint8_t(node->index() + 1);
    requestSlots();
  }
  part->asking = ask;
  part->node = node;
  node->ensureConnected();
  *why = RedisErrorReason::Connect;
  if (node->pending()) {
    waiting_.push_back(part);
    return true;
  }
  return node->up() && sendPart(part);
}

// One part's end: its values merged into the call's (admitted only if every part admits),
// or the call failed. The call is freed once it is answered and no part is out.
void RedisLimiter::partDone(Part* part, const int64_t* values, size_t count,
                            RedisErrorReason* failed) {
  Call* call = part->call;
  uint32_t mask = part->key_mask;
  freePart(part);
  if (call->ctx) {
    if (failed) {
      RedisAnswer answer;
      answer.outcome = RedisOutcome::Error;
      answer.reason = *failed;
      resolve(call, answer);
    } else if (values && count >= 1) {
      call->values[0] = call->values[0] != 0 && values[0] != 0 ? 1 : 0;
      size_t j = 0;
      for (int k = 0; k < call->check.numkeys; ++k) {
        if (!(mask & (1u << k))) continue;
        std::memcpy(&call->values[1 + 3 * k], &values[1 + 3 * j], 3 * sizeof(int64_t));
        ++j;
      }
      if (--call->parts_pending == 0) {
        RedisAnswer answer;
        answer.outcome = RedisOutcome::Ok;
        answer.values = call->values;
        answer.count = 1 + 3 * size_t(call->check.numkeys);
        resolve(call, answer);
      }
    }
  }
  if (--call->parts_out == 0 && !call->ctx) releaseCall(call);
}

void RedisLimiter::abandon(Call* call) {
  if (!call || !call->ctx) return;
  call->ctx = nullptr;
  unlink(call);  // its parts are still out: freed when answered or dropped
  if (call->parts_out == 0) releaseCall(call);
}

void RedisLimiter::resolve(Call* call, const RedisAnswer& answer) {
  RequestContext* ctx = call->ctx;
  if (!ctx) return;
  call->ctx = nullptr;
  unlink(call);
  if (answer.outcome != RedisOutcome::Ok) countRedisError(answer.reason);
  // The owner may send new checks, or drop connections: nothing of `call` is used after.
  RedisCheck check = call->check;
  call->owner->onRedisDone(*ctx, check, answer);
}

void RedisLimiter::onCallTimer() {
  call_timer_armed_ = false;
  uint64_t now = nowMs();
  while (head_ && head_->deadline_ms <= now) {
    Call* call = head_;
    RedisAnswer answer;
    answer.outcome = RedisOutcome::Timeout;
    answer.reason = RedisErrorReason::Timeout;
    if (call->failed) {
      answer.outcome = RedisOutcome::Error;
      answer.reason = call->fail_reason;
    } else {
      logProblem("redis rate limit check timed out", "timeout",
                 call->node ? std::string_view(call->node->endpoint().text) : "");
      if (call->node) call->node->markDown();
    }
    resolve(call, answer);  // unlinks
    if (call->parts_out == 0) releaseCall(call);
  }
  armCallTimer();
}

void RedisLimiter::armCallTimer() {
  if (!head_ || !call_timer_) return;
  if (call_timer_armed_ && call_timer_due_ <= head_->deadline_ms) return;
  uint64_t now = nowMs();
  call_timer_due_ = head_->deadline_ms;
  call_timer_armed_ = true;
  call_timer_->start(head_->deadline_ms > now ? head_->deadline_ms - now : 0);
}

void RedisLimiter::link(Call* call) {
  // Deadlines are now + the one timeout, so appending keeps the list in deadline order; a
  // call that already failed (deadline 0) goes first.
  if (call->deadline_ms == 0 && head_) {
    call->prev = nullptr;
    call->next = head_;
    head_->prev = call;
    head_ = call;
    call->linked = true;
    return;
  }
  call->prev = tail_;
  call->next = nullptr;
  if (tail_) {
    tail_->next = call;
  } else {
    head_ = call;
  }
  tail_ = call;
  call->linked = true;
}

void RedisLimiter::unlink(Call* call) {
  if (!call->linked) return;
  (call->prev ? call->prev->next : head_) = call->next;
  (call->next ? call->next->prev : tail_) = call->prev;
  call->prev = call->next = nullptr;
  call->linked = false;
}

RedisLimiter::Call* RedisLimiter::allocCall() { return calls_.take(); }

void RedisLimiter::releaseCall(Call* call) {
  unlink(call);
  if (call->held) {
    call->held = false;
    auto it = std::find(held_.begin(), held_.end(), call);
    if (it != held_.end()) held_.erase(it);
  }
  call->ctx = nullptr;
  calls_.give(call);
}

RedisLimiter::Part* RedisLimiter::allocPart() { return parts_.take(); }

void RedisLimiter::freePart(Part* part) {
  part->call = nullptr;
  parts_.give(part);
}

int64_t RedisLimiter::deniedUntil(uint64_t key_hash) const {
  const Denied& d = denied_[key_hash & (kDeniedSlots - 1)];
  return d.key == key_hash ? d.until : 0;
}

void RedisLimiter::rememberDenied(uint64_t key_hash, int64_t until) {
  Denied& d = denied_[key_hash & (kDeniedSlots - 1)];
  d.key = key_hash;
  d.until = until;
}

}  // namespace gw::rate_limit
