// The Redis store against a real redis-server (started on a free port, killed at the end;
// skipped when redis-server is not installed), driven through a fake worker's libuv loop.
#include "filters/rate_limit/redis_limiter.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "filters/rate_limit/rate_limit_stats.h"
#include "tests/filters/rate_limit/rate_limit_test_util.h"

namespace gw::rate_limit::test {
namespace {

constexpr const char* kRedisServer = "/usr/bin/redis-server";

int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A redis-server child process on its own port.
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    port_ = freePort();
    start();
  }
  ~RedisServer() { stop(); }

  void start() {
    std::vector<std::string> args = {kRedisServer, "--port", std::to_string(port_),
                                     "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execv(kRedisServer, argv.data());
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {  // up to 5 s
      if (redisReply* r = command({"PING"})) {
        freeReplyObject(r);
        return;
      }
      usleep(10000);
    }
    ADD_FAILURE() << "redis-server did not start on port " << port_;
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // A blocking command from the test itself (never on the loop under test).
  redisReply* command(std::vector<std::string> args) {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (!c || c->err) {
      if (c) redisFree(c);
      return nullptr;
    }
    if (!password_.empty()) {
      freeReplyObject(redisCommand(c, "AUTH %s", password_.c_str()));
    }
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.c_str());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, int(argv.size()), argv.data(), lens.data()));
    redisFree(c);
    return r;
  }
  long long integer(std::vector<std::string> args) {
    redisReply* r = command(std::move(args));
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    return v;
  }
  void setPassword(std::string p) { password_ = std::move(p); }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::vector<std::string> extra_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string password_;
};

class RedisLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kRedisServer, X_OK) != 0) GTEST_SKIP() << "redis-server is not installed";
  }

  static Config redisConfig(const std::string& address, const std::string& prefix,
                            RedisOnError on_error = RedisOnError::Allow, uint32_t replicas = 1,
                            Millis timeout = Millis(50)) {
    Config c;
    c.rate_limit_store.type = RateLimitStoreType::Redis;
    c.rate_limit_store.redis.address = address;
    c.rate_limit_store.redis.key_prefix = prefix;
    c.rate_limit_store.redis.on_error = on_error;
    c.rate_limit_store.redis.replicas = replicas;
    c.rate_limit_store.redis.timeout = timeout;
    return c;
  }

  // Runs one request to its answer; `waited` says whether it went to Redis.
  static int run(const Route& route, Request& r, FakeWorker& worker, bool* waited = nullptr) {
    route.start(r, &worker);
    if (waited) *waited = r.waiting;
    if (r.waiting) {
      bool done = worker.runUntil([&] { return r.driver.continues + r.driver.replies > 0; });
      EXPECT_TRUE(done) << "no answer from the Redis check";
      route.resumeAfterWait(r);
    }
    return r.response.status;
  }
};

// The slots Redis 7's CLUSTER KEYSLOT gives for the same keys: a hash tag is the first
// non-empty {...}; an empty one hashes the whole key.
TEST(RedisKeySlotTest, MatchesRedis) {
  EXPECT_EQ(redisKeySlot("foo"), 12182);
  EXPECT_EQ(redisKeySlot("123456789"), 12739);
  EXPECT_EQ(redisKeySlot("gw:rl:r:api:0:10/1000ms/10:{1.2.3.4}"), 1781);
  EXPECT_EQ(redisKeySlot("{1.2.3.4}"), 1781);
  EXPECT_EQ(redisKeySlot("a{}b"), 13694);
  EXPECT_EQ(redisKeySlot("a{b}c{d}"), 3300);
  EXPECT_EQ(redisKeySlot("{}}x"), 1961);
  EXPECT_EQ(redisKeySlot("x{y"), 2740);
}

TEST_F(RedisLimiterTest, CountsExactlyWithRedisTime) {
  RedisServer redis;
  Route route("redis-exact", "limits: [{key: client_ip, requests: 5, per: 1h}]",
              redisConfig(redis.address(), "t1:"));
  FakeWorker worker;
  for (int i = 0; i < 5; ++i) {
    Request r;
    bool waited = false;
    EXPECT_EQ(run(route, r, worker, &waited), 200) << i;
    EXPECT_TRUE(waited);
    EXPECT_EQ(r.header("RateLimit-Remaining"), std::to_string(4 - i));
    EXPECT_EQ(r.header("RateLimit-Limit"), "5");
  }
  Request sixth;
  EXPECT_EQ(run(route, sixth, worker), 429);
  EXPECT_EQ(sixth.header("Retry-After"), "720");
  EXPECT_EQ(sixth.header("RateLimit-Reset"), "3600");
  EXPECT_EQ(sixth.header("RateLimit"), R"("client_ip-1h";r=0;t=720)");  // t: Retry-After's moment
  // The refusal is remembered: the next one is refused without asking Redis.
  Request seventh;
  bool waited = true;
  EXPECT_EQ(run(route, seventh, worker, &waited), 429);
  EXPECT_FALSE(waited);
  EXPECT_EQ(seventh.header("Retry-After"), "720");
  EXPECT_EQ(seventh.header("RateLimit"), R"("client_ip-1h";r=0;t=720)");
  // The key carries its expiry: the time until the bucket is full again.
  long long pttl = redis.integer({"PTTL", "t1:rl:r:redis-exact:0:5/3600000ms/5:192.0.2.1"});
  EXPECT_GT(pttl, 3'590'000);
  EXPECT_LE(pttl, 3'600'000);
}

TEST_F(RedisLimiterTest, WorkersShareOneLimit) {
  RedisServer redis;
  Route route("redis-shared", "limits: [{key: route, requests: 10, per: 1h}]",
              redisConfig(redis.address(), "t2:"));
  FakeWorker a(0), b(1);
  int admitted = 0;
  for (int i = 0; i < 20; ++i) {
    Request r;
    admitted += run(route, r, i % 2 ? a : b) == 200;
  }
  EXPECT_EQ(admitted, 10);
}

TEST_F(RedisLimiterTest, NoscriptIsAnsweredWithEval) {
  RedisServer redis;
  Route route("redis-noscript", "limits: [{key: client_ip, requests: 3, per: 1m}]",
              redisConfig(redis.address(), "t3:"));
  FakeWorker worker;
  Request first;
  EXPECT_EQ(run(route, first, worker), 200);
  freeReplyObject(redis.command({"SCRIPT", "FLUSH"}));
  uint64_t errors = redisErrorsTotal();
  Request second;
  EXPECT_EQ(run(route, second, worker), 200);
  EXPECT_EQ(second.header("RateLimit-Remaining"), "1");  // answered by Redis, not on_error
  EXPECT_EQ(redisErrorsTotal(), errors);
}

TEST_F(RedisLimiterTest, TimeoutFollowsOnError) {
  RedisServer redis;
  FakeWorker worker;
  auto pausedCheck = [&](const Route& route, Request& r) {
    freeReplyObject(redis.command({"CLIENT", "PAUSE", "300", "ALL"}));
    auto start = std::chrono::steady_clock::now();
    int status = run(route, r, worker);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    EXPECT_LT(ms, 200) << "waited beyond the timeout";
    // Redis answers again once the pause ends: the connection comes back.
    auto& limiter = RedisLimiter::of(worker);
    EXPECT_TRUE(worker.runUntil([&] { return limiter.connected(); }));
    return status;
  };
  const char* limits = "limits: [{key: client_ip, requests: 4, per: 1h}]";
  uint64_t errors = redisErrorsTotal();
  Route allow("redis-allow", limits, redisConfig(redis.address(), "t4:", RedisOnError::Allow));
  Request a;
  EXPECT_EQ(pausedCheck(allow, a), 200);
  EXPECT_FALSE(a.response.headers.has("RateLimit-Limit"));  // nothing was counted
  EXPECT_GT(redisErrorsTotal(), errors);

  Route deny("redis-deny", limits, redisConfig(redis.address(), "t4:", RedisOnError::Deny));
  Request d;
  EXPECT_EQ(pausedCheck(deny, d), 503);
  EXPECT_EQ(d.driver.error_code, "SERVICE_UNAVAILABLE");

  // local: 4 per hour over 2 replicas is 2 per hour here, burst 2.
  Route local("redis-local", limits,
              redisConfig(redis.address(), "t4:", RedisOnError::Local, /*replicas=*/2));
  Request l1;
  EXPECT_EQ(pausedCheck(local, l1), 200);
  EXPECT_EQ(l1.header("RateLimit-Remaining"), "1");
  Request l2;
  EXPECT_EQ(pausedCheck(local, l2), 200);
  Request l3;
  EXPECT_EQ(pausedCheck(local, l3), 429);
  EXPECT_EQ(l3.header("Retry-After"), "1800");
  EXPECT_EQ(l3.header("RateLimit"), R"("client_ip-1h";r=0;t=1800)");
}

TEST_F(RedisLimiterTest, DownIsDecidedAtOnceAndRecovers) {
  auto redis = std::make_unique<RedisServer>();
  Route route("redis-restart", "limits: [{key: client_ip, requests: 2, per: 1h}]",
              redisConfig(redis->address(), "t5:", RedisOnError::Deny));
  FakeWorker worker;
  Request up;
  EXPECT_EQ(run(route, up, worker), 200);
  redis->stop();
  auto& limiter = RedisLimiter::of(worker);
  EXPECT_TRUE(worker.runUntil([&] { return !limiter.connected(); }));
  for (int i = 0; i < 3; ++i) {
    Request r;
    bool waited = true;
    EXPECT_EQ(run(route, r, worker, &waited), 503);
    EXPECT_FALSE(waited);  // no waiting for a timeout while Redis is known to be down
  }
  EXPECT_EQ(redisHealth().status(), "down");
  redis->start();  // same port; the bucket is gone with the old server
  EXPECT_TRUE(worker.runUntil([&] { return limiter.connected(); }, std::chrono::milliseconds(5000)));
  EXPECT_GE(limiter.reconnects(), 1u);
  EXPECT_EQ(redisHealth().status(), "up");
  int admitted = 0;
  for (int i = 0; i < 4; ++i) {
    Request r;
    admitted += run(route, r, worker) == 200;
  }
  EXPECT_EQ(admitted, 2);  // enforced again
}

TEST_F(RedisLimiterTest, RefusedConnectionFailsFast) {
  int port = freePort();  // nothing listens there
  Route route("redis-refused", "limits: [{key: client_ip, requests: 2, per: 1h}]",
              redisConfig("127.0.0.1:" + std::to_string(port), "t6:", RedisOnError::Deny,
                          1, Millis(2000)));
  FakeWorker worker;
  auto start = std::chrono::steady_clock::now();
  Request r;
  EXPECT_EQ(run(route, r, worker), 503);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start)
                .count();
  EXPECT_LT(ms, 1000) << "a refused connect must not wait for the 2 s timeout";
}

TEST_F(RedisLimiterTest, AuthAndDatabase) {
  RedisServer redis({"--requirepass", "s3cret"});
  redis.setPassword("s3cret");
  Config c = redisConfig(redis.address(), "t7:", RedisOnError::Deny);
  c.rate_limit_store.redis.password = "s3cret";
  c.rate_limit_store.redis.db = 3;
  Route route("redis-auth", "limits: [{key: route, requests: 1, per: 1h}]", c);
  FakeWorker worker;
  Request r1, r2;
  EXPECT_EQ(run(route, r1, worker), 200);
  EXPECT_EQ(run(route, r2, worker), 429);
  redisReply* keys = redis.command({"KEYS", "t7:*"});
  ASSERT_TRUE(keys);
  EXPECT_EQ(keys->elements, 0u);  // not in db 0
  freeReplyObject(keys);
  EXPECT_EQ(redis.integer({"EVAL", "redis.call('SELECT', 3) return #redis.call('KEYS', 't7:*')",
                           "0"}),
            1);

  Config wrong = c;
  wrong.rate_limit_store.redis.password = "wrong";
  Route bad("redis-bad-auth", "limits: [{key: route, requests: 1, per: 1h}]", wrong);
  FakeWorker other;
  Request r3;
  EXPECT_EQ(run(bad, r3, other), 503);
}

TEST_F(RedisLimiterTest, AbandonedCheckIsDropped) {
  RedisServer redis;
  Route route("redis-abandon", "limits: [{key: client_ip, requests: 2, per: 1h}]",
              redisConfig(redis.address(), "t8:"));
  FakeWorker worker;
  {
    Request warm;
    run(route, warm, worker);  // connected
  }
  auto r = std::make_unique<Request>();
  route.start(*r, &worker);
  ASSERT_TRUE(r->waiting);
  route.chain()[0]->onAbandon(r->ctx);
  r.reset();  // the request is gone
  // The answer arrives and is dropped (ASan would see a use of the freed request).
  worker.runUntil([] { return false; }, std::chrono::milliseconds(100));
  Request next;
  EXPECT_EQ(run(route, next, worker), 429);  // the abandoned check still counted in Redis
}

}  // namespace
}  // namespace gw::rate_limit::test
