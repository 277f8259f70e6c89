#include "filters/rate_limit/redis_limiter.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "filters/rate_limit/key_hash.h"
#include "filters/rate_limit/rate_limit_stats.h"
#include "gateway/log.h"

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
constexpr uint32_t kMaxScriptValues = 1 + 3 * 32;

// Handshake replies carry one of these as privdata.
char kTagAuth, kTagSelect, kTagLoad, kTagProbe;

LogThrottle g_log_throttle(10'000'000'000);  // one Redis problem line per 10 s per process

bool sameConfig(const RedisConfig& a, const RedisConfig& b) {
  return a.address == b.address && a.timeout == b.timeout && a.on_error == b.on_error &&
         a.replicas == b.replicas && a.key_prefix == b.key_prefix && a.username == b.username &&
         a.password == b.password && a.db == b.db;
}

int64_t steadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// hiredis 0.14's libuv adapter returns on a poll error (status < 0) without telling hiredis,
// and libuv stops the poll handle: a refused connect or a reset connection then hangs
// forever. Later hiredis versions hand the registered events to hiredis instead, which
// reads the socket error and fails the context properly; these hooks do the same and are
// swapped in after redisLibuvAttach (which still sets up and frees the poll handle).
void pollEvents(uv_poll_t* handle, int status, int events) noexcept {
  auto* p = static_cast<redisLibuvEvents*>(handle->data);
  int ev = status != 0 ? p->events : events;
  if (p->context != nullptr && (ev & UV_READABLE)) redisAsyncHandleRead(p->context);
  if (p->context != nullptr && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

// hiredis asks for read interest after every write; restarting the poll handle each time
// would cost epoll_ctl calls per request. Only changes reach libuv.
void setPollEvents(redisLibuvEvents* p, int events) {
  if (events == p->events) return;
  p->events = events;
  if (p->events != 0) {
    uv_poll_start(&p->handle, p->events, pollEvents);
  } else {
    uv_poll_stop(&p->handle);
  }
}

void addRead(void* privdata) {
  auto* p = static_cast<redisLibuvEvents*>(privdata);
  setPollEvents(p, p->events | UV_READABLE);
}
void delRead(void* privdata) {
  auto* p = static_cast<redisLibuvEvents*>(privdata);
  setPollEvents(p, p->events & ~UV_READABLE);
}
void delWrite(void* privdata) {
  auto* p = static_cast<redisLibuvEvents*>(privdata);
  setPollEvents(p, p->events & ~UV_WRITABLE);
}

}  // namespace

std::string_view tokenBucketScript() { return kScript; }

std::string_view tokenBucketSha() {
  static const std::string sha = sha1Hex(kScript);
  return sha;
}

// ---------------------------------------------------------------------------------------
// Settings

std::shared_ptr<const RedisSettings> RedisSettings::get(const RedisConfig& config) {
  static std::mutex mutex;
  static std::weak_ptr<const RedisSettings> last;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto s = last.lock(); s && sameConfig(s->config, config)) return s;

  auto s = std::make_shared<RedisSettings>();
  s->config = config;
  const std::string& a = config.address;
  if (a.rfind("unix:", 0) == 0) {
    s->unix_path = a.substr(5);
  } else {
    size_t colon = a.rfind(':');
    std::string host = a.substr(0, colon == std::string::npos ? a.size() : colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    s->port = colon == std::string::npos ? 6379 : std::atoi(a.c_str() + colon + 1);
    s->host = host;
    // hiredis would resolve a name with a blocking getaddrinfo on the event loop.
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) == 0 && res) {
      char text[NI_MAXHOST];
      if (getnameinfo(res->ai_addr, res->ai_addrlen, text, sizeof text, nullptr, 0,
                      NI_NUMERICHOST) == 0) {
        s->host = text;
      }
      freeaddrinfo(res);
    }
  }
  std::string identity = a + '\n' + config.username + '\n' + config.password + '\n' +
                         std::to_string(config.db);
  s->fingerprint = hashText(identity, 0x5eed);
  static uint64_t serial = 0;
  s->serial = ++serial;
  last = s;
  return s;
}

// ---------------------------------------------------------------------------------------
// Calls and timers

struct RedisLimiter::Call {
  RequestContext* ctx = nullptr;  // null: nobody waits any more (answered, timed out, gone)
  const RedisCheckOwner* owner = nullptr;
  RedisCheck check;
  uint64_t deadline_ms = 0;
  Call* prev = nullptr;  // the waiting list, while linked
  Call* next = nullptr;
  bool linked = false;
  bool evaled = false;  // already resent as EVAL after NOSCRIPT
};

// A timer whose memory outlives the limiter if need be: freed by its close callback.
struct RedisLimiter::Timer {
  uv_timer_t handle{};
  RedisLimiter* owner = nullptr;
  void (RedisLimiter::*fire)() = nullptr;

  static Timer* make(uv_loop_t* loop, RedisLimiter* owner, void (RedisLimiter::*fire)()) {
    auto* t = new Timer;
    uv_timer_init(loop, &t->handle);
    t->handle.data = t;
    t->owner = owner;
    t->fire = fire;
    return t;
  }
  static void onFire(uv_timer_t* h) noexcept {
    auto* t = static_cast<Timer*>(h->data);
    if (t->owner) (t->owner->*t->fire)();
  }
  void start(uint64_t ms) { uv_timer_start(&handle, onFire, ms, 0); }
  void stop() { uv_timer_stop(&handle); }
  void close() {
    owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle),
             [](uv_handle_t* h) noexcept { delete static_cast<Timer*>(h->data); });
  }
};

// Writes the commands queued during one turn of the loop in one go, just before the loop
// waits again (a prepare handle), instead of asking epoll for writability per command.
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
    if (f->owner) f->owner->flush();
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

int RedisLimiter::attach(redisAsyncContext* ac) {
  if (redisLibuvAttach(ac, loop_) != REDIS_OK) return REDIS_ERR;
  ac->ev.addRead = addRead;
  ac->ev.delRead = delRead;
  ac->ev.addWrite = addWriteHook;
  ac->ev.delWrite = delWrite;
  return REDIS_OK;
}

void RedisLimiter::addWriteHook(void* privdata) noexcept {
  auto* p = static_cast<redisLibuvEvents*>(privdata);
  redisAsyncContext* ac = p->context;
  auto* self = ac ? static_cast<RedisLimiter*>(ac->data) : nullptr;
  // Until connected, writability is how the connect completes; while flushing, hiredis
  // asks again only when the socket took less than everything.
  if (self && ac == self->ac_ && (ac->c.flags & REDIS_CONNECTED) && !self->flushing_ &&
      self->flush_) {
    self->flush_->start();
    return;
  }
  setPollEvents(p, p->events | UV_WRITABLE);
}

void RedisLimiter::flush() {
  if (!ac_) return;
  flushing_ = true;
  redisAsyncHandleWrite(ac_);  // may drop the connection (write error)
  flushing_ = false;
}

// ---------------------------------------------------------------------------------------
// Life cycle

RedisLimiter::RedisLimiter(uv_loop_s* loop, uint32_t worker_index)
    : loop_(loop),
      worker_index_(worker_index),
      rng_(processHashSeed() ^ (uint64_t(worker_index) << 32) ^ uint64_t(steadyNs())),
      retry_timer_(Timer::make(loop, this, &RedisLimiter::onRetryTimer)),
      call_timer_(Timer::make(loop, this, &RedisLimiter::onCallTimer)),
      flush_(Flush::make(loop, this)),
      denied_(std::make_unique<Denied[]>(kDeniedSlots)) {}

RedisLimiter::~RedisLimiter() {
  if (state_ != State::Closed) shutdown();
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
  // While a reload drains, requests of the old snapshot keep using the new connection
  // rather than flipping it back and forth.
  if (!limiter.settings_ || settings->serial > limiter.settings_->serial) {
    limiter.configure(settings);
  }
  return limiter;
}

void RedisLimiter::configure(const std::shared_ptr<const RedisSettings>& settings) {
  if (state_ == State::Closed) return;
  bool same_server = settings_ && settings_->fingerprint == settings->fingerprint;
  settings_ = settings;  // a newer snapshot: timeout, on_error may differ
  if (same_server && state_ != State::Idle) return;
  if (ac_) dropConnection("reconfigured");
  retry_timer_->stop();
  attempts_ = 0;
  first_connect_ = true;
  connect();
}

void RedisLimiter::shutdown() {
  if (state_ == State::Closed) return;
  setState(State::Closed);
  if (ac_) {
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    redisAsyncFree(ac);  // answers every pending call with no reply (resolved as errors)
  }
  retry_timer_->close();
  call_timer_->close();
  flush_->close();
  retry_timer_ = call_timer_ = nullptr;
  flush_ = nullptr;
  setRedisLinkState(worker_index_, RedisLinkState::Unused);
}

void RedisLimiter::setState(State s) {
  state_ = s;
  RedisLinkState link = RedisLinkState::Down;
  if (s == State::Up) link = RedisLinkState::Up;
  if (s == State::Connecting || s == State::Idle) link = RedisLinkState::Connecting;
  setRedisLinkState(worker_index_, link);
}

// Deadlines on the real clock: the loop's cached time may be a busy turn old, which would
// shorten a check's timeout. A timer armed on the loop's time may then fire early, and is
// re-armed for what is left.
uint64_t RedisLimiter::nowMs() const { return uint64_t(steadyNs() / 1'000'000); }

void RedisLimiter::connect() {
  setState(State::Connecting);
  probe_outstanding_ = false;
  const RedisSettings& s = *settings_;
  redisAsyncContext* ac = s.unix_path.empty() ? redisAsyncConnect(s.host.c_str(), s.port)
                                              : redisAsyncConnectUnix(s.unix_path.c_str());
  if (!ac) return connectionLost("cannot allocate a connection");
  if (ac->err) {
    std::string why = ac->errstr ? ac->errstr : "connect failed";
    redisAsyncFree(ac);
    return connectionLost(why);
  }
  ac->data = this;
  if (attach(ac) != REDIS_OK) {
    redisAsyncFree(ac);
    return connectionLost("cannot attach to the event loop");
  }
  redisAsyncSetConnectCallback(ac, onConnect);
  redisAsyncSetDisconnectCallback(ac, onDisconnect);
  ac_ = ac;
  // The handshake is pipelined behind the connect; checks queue behind it.
  const RedisConfig& c = s.config;
  if (!c.password.empty()) {
    if (!c.username.empty()) {
      const char* argv[] = {"AUTH", c.username.c_str(), c.password.c_str()};
      size_t lens[] = {4, c.username.size(), c.password.size()};
      redisAsyncCommandArgv(ac, onHandshakeReply, &kTagAuth, 3, argv, lens);
    } else {
      const char* argv[] = {"AUTH", c.password.c_str()};
      size_t lens[] = {4, c.password.size()};
      redisAsyncCommandArgv(ac, onHandshakeReply, &kTagAuth, 2, argv, lens);
    }
  }
  if (c.db != 0) {
    std::string db = std::to_string(c.db);
    const char* argv[] = {"SELECT", db.c_str()};
    size_t lens[] = {6, db.size()};
    redisAsyncCommandArgv(ac, onHandshakeReply, &kTagSelect, 2, argv, lens);
  }
  const char* argv[] = {"SCRIPT", "LOAD", kScript};
  size_t lens[] = {6, 4, sizeof kScript - 1};
  redisAsyncCommandArgv(ac, onHandshakeReply, &kTagLoad, 3, argv, lens);
  retry_timer_->start(std::max<uint64_t>(kMinConnectTimeoutMs, s.config.timeout.count()));
}

// Frees the context; hiredis first answers every pending call with no reply (inside one of
// its own callbacks it defers that until the callback returns).
void RedisLimiter::dropConnection(std::string_view why) {
  redisAsyncContext* ac = ac_;
  ac_ = nullptr;
  if (ac) redisAsyncFree(ac);
  connectionLost(why);
}

void RedisLimiter::connectionLost(std::string_view why) {
  if (state_ == State::Closed) return;
  logProblem("redis connection lost", why);
  probe_outstanding_ = false;
  first_connect_ = false;
  ++attempts_;
  setState(State::Backoff);
  uint64_t delay = kBackoffBaseMs << std::min<uint32_t>(attempts_ - 1, 10);
  delay = std::min(delay, kBackoffMaxMs);
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  delay = delay * 3 / 4 + rng_ % (delay / 2 + 1);  // +-25%: replicas do not reconnect in step
  retry_timer_->start(delay);
}

void RedisLimiter::onRetryTimer() {
  switch (state_) {
    case State::Backoff:
      ++reconnects_;
      connect();
      break;
    case State::Connecting:
      dropConnection("connect timeout");
      break;
    case State::Down:
      // The probe (and everything before it) went unanswered for the stall limit.
      if (probe_outstanding_) dropConnection("no answer");
      break;
    default:
      break;
  }
}

void RedisLimiter::markAnswering() {
  if (state_ != State::Down) return;
  setState(State::Up);
  retry_timer_->stop();
}

void RedisLimiter::markDown() {
  if (state_ != State::Up) return;
  setState(State::Down);
  sendProbe();
}

void RedisLimiter::sendProbe() {
  if (!ac_ || probe_outstanding_) return;
  const char* argv[] = {"PING"};
  size_t lens[] = {4};
  if (redisAsyncCommandArgv(ac_, onHandshakeReply, &kTagProbe, 1, argv, lens) != REDIS_OK) {
    return dropConnection("cannot send");
  }
  probe_outstanding_ = true;
  uint64_t stall = std::max<uint64_t>(kMinConnectTimeoutMs, 10 * settings_->config.timeout.count());
  retry_timer_->start(stall);
}

void RedisLimiter::logProblem(std::string_view what, std::string_view detail) {
  uint64_t suppressed = 0;
  if (!g_log_throttle.allow(steadyNs(), &suppressed)) return;
  std::string worker = std::to_string(worker_index_);
  std::string skipped = std::to_string(suppressed);
  log::warn(what, {{"error", detail},
                   {"address", settings_ ? std::string_view(settings_->config.address) : ""},
                   {"worker", worker},
                   {"suppressed", skipped}});
}

// ---------------------------------------------------------------------------------------
// hiredis callbacks

void RedisLimiter::onConnect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<RedisLimiter*>(ac->data);
  if (ac != self->ac_ || status == REDIS_OK) return;  // Up once SCRIPT LOAD answers
  // hiredis frees the context when this returns.
  self->ac_ = nullptr;
  self->connectionLost(ac->errstr ? ac->errstr : "connect failed");
}

void RedisLimiter::onDisconnect(const redisAsyncContext* ac, int status) noexcept {
  auto* self = static_cast<RedisLimiter*>(ac->data);
  if (ac != self->ac_) return;  // one we dropped ourselves
  self->ac_ = nullptr;
  self->connectionLost(status == REDIS_OK ? "closed" : (ac->errstr ? ac->errstr : "error"));
}

void RedisLimiter::onHandshakeReply(redisAsyncContext* ac, void* r, void* privdata) noexcept {
  auto* self = static_cast<RedisLimiter*>(ac->data);
  auto* reply = static_cast<redisReply*>(r);
  if (ac != self->ac_ || !reply) return;  // an old connection, or this one is going away
  if (privdata == &kTagProbe) {
    self->probe_outstanding_ = false;
    self->markAnswering();
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {
    const char* step = privdata == &kTagAuth ? "redis AUTH failed"
                       : privdata == &kTagSelect ? "redis SELECT failed"
                                                 : "redis SCRIPT LOAD failed";
    self->logProblem(step, reply->str ? reply->str : "");
    self->dropConnection("handshake failed");
    return;
  }
  if (privdata == &kTagLoad) {
    self->retry_timer_->stop();
    self->attempts_ = 0;
    self->first_connect_ = false;
    self->setState(State::Up);
  }
}

void RedisLimiter::onReply(redisAsyncContext* ac, void* r, void* privdata) noexcept {
  auto* self = static_cast<RedisLimiter*>(ac->data);
  auto* call = static_cast<Call*>(privdata);
  auto* reply = static_cast<redisReply*>(r);
  if (reply && ac == self->ac_) self->markAnswering();
  if (!call->ctx) {  // answered late, or abandoned: nobody waits
    self->freeCall(call);
    return;
  }
  if (reply && reply->type == REDIS_REPLY_ERROR && !call->evaled && reply->str &&
      std::strncmp(reply->str, "NOSCRIPT", 8) == 0 && ac == self->ac_) {
    call->evaled = true;
    if (self->sendCall(call, /*eval=*/true)) return;  // still waiting, same deadline
  }
  int64_t values[kMaxScriptValues];
  RedisAnswer answer;
  if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
      reply->elements <= kMaxScriptValues) {
    answer.outcome = RedisOutcome::Ok;
    for (size_t i = 0; i < reply->elements; ++i) {
      const redisReply* e = reply->element[i];
      if (e->type != REDIS_REPLY_INTEGER) answer.outcome = RedisOutcome::Error;
      values[i] = e->type == REDIS_REPLY_INTEGER ? e->integer : 0;
    }
    answer.values = values;
    answer.count = reply->elements;
  } else if (reply) {
    self->logProblem("redis rate limit check failed",
                     reply->type == REDIS_REPLY_ERROR && reply->str ? reply->str : "bad reply");
  }
  self->resolve(call, answer);
  self->freeCall(call);
}

// ---------------------------------------------------------------------------------------
// Checks

bool RedisLimiter::accepting() const {
  if (!ac_) return false;
  return state_ == State::Up || (state_ == State::Connecting && first_connect_);
}

RedisLimiter::Call* RedisLimiter::send(RequestContext& ctx, const RedisCheckOwner& owner,
                                       const RedisCheck& check) {
  if (!accepting()) return nullptr;
  Call* call = allocCall();
  call->ctx = &ctx;
  call->owner = &owner;
  call->check = check;
  call->evaled = false;
  if (!sendCall(call, /*eval=*/false)) {
    call->ctx = nullptr;
    freeCall(call);
    return nullptr;
  }
  call->deadline_ms = nowMs() + uint64_t(settings_->config.timeout.count());
  link(call);
  armCallTimer();
  return call;
}

bool RedisLimiter::sendCall(Call* call, bool eval) {
  const RedisCheck& c = call->check;
  std::string_view head = eval ? std::string_view("EVAL") : std::string_view("EVALSHA");
  std::string_view body = eval ? tokenBucketScript() : tokenBucketSha();
  c.argv[0] = head.data();
  c.argv[1] = body.data();
  c.lens[0] = head.size();
  c.lens[1] = body.size();
  return redisAsyncCommandArgv(ac_, onReply, call, c.argc, c.argv, c.lens) == REDIS_OK;
}

void RedisLimiter::abandon(Call* call) {
  if (!call || !call->ctx) return;
  call->ctx = nullptr;
  unlink(call);  // hiredis still holds it: freed when the answer (or the close) comes
}

void RedisLimiter::resolve(Call* call, const RedisAnswer& answer) {
  RequestContext* ctx = call->ctx;
  if (!ctx) return;
  call->ctx = nullptr;
  unlink(call);
  if (answer.outcome != RedisOutcome::Ok) countRedisError();
  // The owner may send new checks, or drop the connection: nothing of `call` is used after.
  RedisCheck check = call->check;
  call->owner->onRedisDone(*ctx, check, answer);
}

void RedisLimiter::onCallTimer() {
  call_timer_armed_ = false;
  uint64_t now = nowMs();
  while (head_ && head_->deadline_ms <= now) {
    Call* call = head_;
    logProblem("redis rate limit check timed out", "timeout");
    markDown();
    RedisAnswer timeout;
    timeout.outcome = RedisOutcome::Timeout;
    resolve(call, timeout);  // unlinks; the call is freed when hiredis answers it
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
  // Every check has the same timeout, so appending keeps the list in deadline order.
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

RedisLimiter::Call* RedisLimiter::allocCall() {
  if (!free_) {
    calls_.push_back(std::make_unique<Call>());
    return calls_.back().get();
  }
  Call* call = free_;
  free_ = call->next;
  call->next = nullptr;
  return call;
}

void RedisLimiter::freeCall(Call* call) {
  unlink(call);
  call->ctx = nullptr;
  call->next = free_;
  free_ = call;
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
