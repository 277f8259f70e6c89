#include "filters/jwt/jwks_fetcher.h"

#include <openssl/crypto.h>
#include <uv.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "filters/jwt/http_fetch.h"
#include "filters/jwt/key_store.h"
#include "gateway/http_util.h"
#include "gateway/shutdown.h"

namespace gw::jwt {
namespace {

constexpr uint64_t kFetchTimeoutMs = 5000;
constexpr size_t kMaxJwksBytes = 1 << 20;
constexpr uint64_t kFirstRetryMs = 1000;
constexpr uint64_t kMaxRetryMs = 30000;

class Fetcher final : public JwksFetcher {
 public:
  Fetcher() {
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &wake_, onWake);
    wake_.data = this;
    thread_ = std::thread([this] {
      uv_run(&loop_, UV_RUN_DEFAULT);
      OPENSSL_thread_stop();  // this thread's OpenSSL error queue and caches
    });
  }

  ~Fetcher() override { stop(); }

  void add(const std::shared_ptr<KeyStore>& store) override {
    post({Command::Add, store->id(), store, 0});
  }
  void remove(uint64_t store_id) override { post({Command::Remove, store_id, {}, 0}); }
  void refreshNow(uint64_t store_id, uint64_t target) override {
    post({Command::Refresh, store_id, {}, target});
  }

  // Closes every job and joins the thread; later commands are dropped.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
      uv_async_send(&wake_);
    }
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();  // the last reference died on the loop itself: it ends on its own
      return;
    }
    thread_.join();
    uv_loop_close(&loop_);
  }

 private:
  struct Command {
    enum Kind { Add, Remove, Refresh } kind;
    uint64_t id;
    std::weak_ptr<KeyStore> store;
    uint64_t target;
  };

  struct Job {
    Fetcher* owner;
    uint64_t id;
    std::weak_ptr<KeyStore> store;
    std::optional<HttpUrl> url;
    std::string url_error;
    uv_timer_t* timer;  // freed in its close callback
    HttpFetch* inflight = nullptr;
    uint64_t attempt = 0;   // number of the attempt in flight or last made
    uint64_t wanted = 0;    // an attempt numbered at least this was asked for
    uint32_t failures = 0;  // consecutive
  };

  // Under the mutex, so that stop() cannot close the async handle in between.
  void post(Command command) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    commands_.push_back(std::move(command));
    uv_async_send(&wake_);
  }

  static void onWake(uv_async_t* h) noexcept { static_cast<Fetcher*>(h->data)->drain(); }

  void drain() {
    std::vector<Command> commands;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands.swap(commands_);
      stopping = stopping_;
      if (stopping) uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
    }
    if (stopping) {
      while (!jobs_.empty()) closeJob(jobs_.begin()->first);
      return;
    }
    for (auto& c : commands) {
      switch (c.kind) {
        case Command::Add:
          addJob(c.id, std::move(c.store));
          break;
        case Command::Remove:
          closeJob(c.id);
          break;
        case Command::Refresh:
          if (auto it = jobs_.find(c.id); it != jobs_.end()) {
            Job& job = *it->second;
            job.wanted = std::max(job.wanted, c.target);
            if (!job.inflight && job.attempt < job.wanted) startFetch(job);
          }
          break;
      }
    }
  }

  void addJob(uint64_t id, std::weak_ptr<KeyStore> weak) {
    auto store = weak.lock();
    if (!store || jobs_.count(id)) return;
    auto job = std::make_unique<Job>();
    job->owner = this;
    job->id = id;
    job->store = std::move(weak);
    job->url = parseHttpUrl(store->uri(), &job->url_error);
    job->timer = new uv_timer_t;
    uv_timer_init(&loop_, job->timer);
    job->timer->data = job.get();
    Job& ref = *job;
    jobs_.emplace(id, std::move(job));
    startFetch(ref);
  }

  void closeJob(uint64_t id) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    std::unique_ptr<Job> job = std::move(it->second);
    jobs_.erase(it);
    if (job->inflight) cancelHttpGet(job->inflight);
    uv_close(reinterpret_cast<uv_handle_t*>(job->timer),
             [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  void startFetch(Job& job) {
    uv_timer_stop(job.timer);
    std::shared_ptr<KeyStore> store = job.store.lock();
    if (!store) {
      closeJob(job.id);
      return;
    }
    job.attempt = store->fetchStarted(wallClockMs());
    if (!job.url) {
      HttpResult failed;
      failed.error = "jwks_uri: " + job.url_error;
      completed(job, *store, failed);
      return;
    }
    uint64_t id = job.id;
    job.inflight = startHttpGet(&loop_, *job.url, kFetchTimeoutMs, kMaxJwksBytes,
                                [this, id](HttpResult&& result) { fetched(id, result); });
  }

  void fetched(uint64_t id, const HttpResult& result) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    Job& job = *it->second;
    job.inflight = nullptr;
    std::shared_ptr<KeyStore> store = job.store.lock();
    if (!store) {
      closeJob(id);
      return;
    }
    completed(job, *store, result);
  }

  void completed(Job& job, KeyStore& store, const HttpResult& result) {
    bool ok = store.fetchCompleted(result, wallClockMs());
    job.failures = ok ? 0 : job.failures + 1;
    uint64_t refresh = std::max<uint64_t>(store.refreshMs(), 1000);
    uint64_t delay = refresh;
    if (!ok) {
      // Backoff from 1 s, capped at 30 s and at the refresh interval: a provider that has
      // no keys yet is retried quickly, a flapping one does not hammer its server.
      uint32_t shift = std::min<uint32_t>(job.failures - 1, 5);
      delay = std::min({refresh, kMaxRetryMs, kFirstRetryMs << shift});
    }
    if (job.wanted > job.attempt) delay = 0;  // a refetch was asked for during this one
    uv_timer_start(job.timer, onTimer, delay, 0);
  }

  static void onTimer(uv_timer_t* t) noexcept {
    Job* job = static_cast<Job*>(t->data);
    job->owner->startFetch(*job);
  }

  uv_loop_t loop_{};
  uv_async_t wake_{};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Command> commands_;
  bool stopping_ = false;
  std::map<uint64_t, std::unique_ptr<Job>> jobs_;  // loop thread only
};

// Stops the thread during static destruction, whoever still holds the fetcher: after
// main() returns nothing may be fetched or logged any more.
struct Holder {
  std::mutex mutex;
  std::shared_ptr<Fetcher> fetcher;
  ~Holder() {
    if (fetcher) fetcher->stop();
  }
};

Holder& holder() {
  static Holder h;
  return h;
}

}  // namespace

std::shared_ptr<JwksFetcher> JwksFetcher::instance() {
  Holder& h = holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (!h.fetcher) {
    h.fetcher = std::make_shared<Fetcher>();
    // Stopped before main() returns, not only at static destruction, so the thread and
    // its OpenSSL state are gone before the process (and a leak checker) looks.
    atShutdown([] { stopFetcher(); });
  }
  return h.fetcher;
}

void JwksFetcher::stopFetcher() {
  Holder& h = holder();
  std::shared_ptr<Fetcher> f;
  {
    std::lock_guard<std::mutex> lock(h.mutex);
    f = h.fetcher;
  }
  if (f) f->stop();
}

}  // namespace gw::jwt
