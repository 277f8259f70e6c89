#include "filters/jwt/key_store.h"

#include <algorithm>
#include <map>

#include "filters/jwt/jwks_fetcher.h"
#include "gateway/config/config_loader.h"
#include "gateway/admin/health.h"
#include "gateway/http_util.h"
#include "gateway/log.h"

namespace gw::jwt {
namespace {

std::atomic<uint64_t> g_next_store_id{1};
std::atomic<uint64_t> g_next_version{1};

// By provider name, oldest first: a reload that changed the source adds a store while
// requests of the previous configuration still use the old one.
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::vector<std::weak_ptr<KeyStore>>, std::less<>> stores;

  // The newest live store of `name`; drops the dead ones. Caller holds the mutex.
  std::shared_ptr<KeyStore> newest(const std::string& name) {
    auto it = stores.find(name);
    if (it == stores.end()) return nullptr;
    auto& list = it->second;
    list.erase(std::remove_if(list.begin(), list.end(), [](const auto& w) { return w.expired(); }),
               list.end());
    std::shared_ptr<KeyStore> found = list.empty() ? nullptr : list.back().lock();
    if (list.empty()) stores.erase(it);
    return found;
  }
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: stores may outlive main()
  return *r;
}

std::string timestamp(uint64_t ms) {
  char text[24];
  formatTimestamp(ms, text);
  return std::string(text, sizeof text);
}

bool sameSource(const KeyStore& store, const JwtProviderConfig& provider) {
  if (!provider.jwks_uri.empty()) return store.uri() == provider.jwks_uri;
  return !store.hasUri() && store.sameFileContent(provider.jwks_file_content);
}

// /health "jwks:NAME": not ready, and unhealthy, until the first key set loads (its routes
// answer 503 meanwhile); degraded while the last good set is served because fetches fail.
void registerHealthCheck(const std::shared_ptr<KeyStore>& store) {
  std::weak_ptr<KeyStore> weak = store;
  health::setCheck("jwks:" + store->provider(), [weak] {
    health::Check c;
    std::shared_ptr<KeyStore> s = weak.lock();
    if (!s) return c;  // replaced or removed by a reload a moment ago
    JwksStatus st = s->status();
    c.detail["state"] = std::string(jwksStateName(st.state));
    c.detail["keys"] = st.keys;
    if (s->hasUri()) c.detail["jwks_uri"] = s->uri();
    if (st.loaded_at_ms) c.detail["loaded_at"] = timestamp(st.loaded_at_ms);
    if (st.last_attempt_ms) c.detail["last_fetch"] = timestamp(st.last_attempt_ms);
    if (!st.last_error.empty()) c.detail["last_error"] = st.last_error;
    if (st.state == JwksState::Stale) c.status = health::Status::Degraded;
    if (st.state == JwksState::NeverLoaded) {
      c.status = health::Status::Unhealthy;
      c.ready = false;
    }
    return c;
  });
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : "; ") + item;
  return out;
}

}  // namespace

std::string_view jwksStateName(JwksState state) {
  switch (state) {
    case JwksState::Ok:
      return "ok";
    case JwksState::Stale:
      return "stale";
    case JwksState::NeverLoaded:
      return "never_loaded";
    case JwksState::Unused:
      return "unused";
  }
  return "never_loaded";
}

KeyStore::KeyStore(const JwtProviderConfig& provider, std::shared_ptr<JwksFetcher> fetcher)
    : id_(g_next_store_id.fetch_add(1)),
      provider_(provider.name),
      uri_(provider.jwks_uri),
      file_(provider.jwks_file),
      file_content_(provider.jwks_uri.empty() ? provider.jwks_file_content : std::string()),
      fetcher_(std::move(fetcher)),
      refresh_ms_(uint64_t(provider.jwks_refresh.count())) {
  if (!uri_.empty()) return;
  JwksParseResult parsed = parseJwks(file_content_);
  if (parsed.keys) {
    publish(parsed.keys, file_content_, wallClockMs());
  } else {
    last_error_ = "JWKS file " + file_ + ": " + parsed.error;
    log::error("JWKS file has no usable key", {{"provider", provider_}, {"error", last_error_}});
  }
}

KeyStore::~KeyStore() {
  if (fetcher_) fetcher_->remove(id_);
  // The health check follows the newest store still alive under this name; without one
  // the provider is gone from the configuration.
  std::shared_ptr<KeyStore> successor;  // released after the registry's lock
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    successor = r.newest(provider_);
    if (successor) {
      registerHealthCheck(successor);
    } else {
      health::removeCheck("jwks:" + provider_);
    }
  }
}

std::shared_ptr<const KeySet> KeyStore::snapshot(uint64_t* version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (version) *version = version_.load(std::memory_order_relaxed);
  return keys_;
}

uint64_t KeyStore::requestRefresh(uint64_t now_ms) {
  if (uri_.empty() || !fetcher_) return 0;
  uint64_t target;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    bool recent = kid_refreshed_ && now_ms >= last_kid_refresh_ms_ &&
                  now_ms - last_kid_refresh_ms_ < kKidRefreshIntervalMs;
    if (recent) {
      // Requests that arrive while that refetch runs wait for it too.
      return completed_.load(std::memory_order_acquire) < kid_target_ ? kid_target_ : 0;
    }
    kid_refreshed_ = true;
    last_kid_refresh_ms_ = now_ms;
    kid_target_ = target = started_ + 1;
  }
  fetcher_->refreshNow(id_, target);
  return target;
}

JwksStatus KeyStore::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  JwksStatus s;
  s.provider = provider_;
  s.source = uri_.empty() ? file_ : uri_;
  s.keys = keys_ ? keys_->size() : 0;
  s.loaded_at_ms = loaded_at_ms_;
  s.last_attempt_ms = last_attempt_ms_;
  s.last_error = last_error_;
  s.state = !keys_                ? JwksState::NeverLoaded
            : last_error_.empty() ? JwksState::Ok
                                  : JwksState::Stale;
  return s;
}

uint64_t KeyStore::fetchStarted(uint64_t now_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  last_attempt_ms_ = now_ms;
  return ++started_;
}

bool KeyStore::fetchCompleted(const HttpResult& result, uint64_t now_ms) {
  std::string error = result.error;
  JwksParseResult parsed;
  if (error.empty() && result.status != 200) {
    error = "HTTP status " + std::to_string(result.status);
  } else if (error.empty()) {
    parsed = parseJwks(result.body);
    if (!parsed.keys) error = "unusable key set: " + parsed.error;
  }
  bool was_stale;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    was_stale = !last_error_.empty();
    last_error_ = error;
  }
  if (error.empty()) {
    uint64_t before = version();
    publish(parsed.keys, result.body, now_ms);
    if (version() != before) {
      log::info("JWKS loaded",
                {{"provider", provider_}, {"keys", std::to_string(parsed.keys->size())}});
      if (!parsed.invalid.empty() || !parsed.skipped.empty()) {
        log::warn("JWKS keys left out", {{"provider", provider_},
                                         {"invalid", joined(parsed.invalid)},
                                         {"skipped", joined(parsed.skipped)}});
      }
    } else if (was_stale) {
      log::info("JWKS fetch recovered", {{"provider", provider_}});
    }
  } else {
    log::warn(version() ? "JWKS fetch failed; keeping the last good key set"
                        : "JWKS fetch failed; the provider has no keys yet",
              {{"provider", provider_}, {"uri", uri_}, {"error", error}});
  }
  completed_.fetch_add(1, std::memory_order_release);
  return error.empty();
}

void KeyStore::publish(std::shared_ptr<const KeySet> keys, const std::string& text,
                       uint64_t now_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  // An unchanged document keeps its version: the workers' verified-token caches stay warm
  // across periodic refreshes.
  if (keys_ && text == loaded_text_) return;
  keys_ = std::move(keys);
  loaded_text_ = text;
  loaded_at_ms_ = now_ms;
  version_.store(g_next_version.fetch_add(1), std::memory_order_release);
}

std::shared_ptr<KeyStore> acquireKeyStore(const JwtProviderConfig& provider) {
  // Declared first, destroyed last: a store whose last reference dies here must not run
  // its destructor (which takes the registry's lock) inside the lock.
  std::shared_ptr<KeyStore> existing;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  existing = r.newest(provider.name);
  if (existing && sameSource(*existing, provider)) {
    existing->setRefreshMs(uint64_t(provider.jwks_refresh.count()));
    registerHealthCheck(existing);
    return existing;
  }
  std::shared_ptr<JwksFetcher> fetcher =
      provider.jwks_uri.empty() || validationOnly() ? nullptr : JwksFetcher::instance();
  auto store = std::make_shared<KeyStore>(provider, fetcher);
  if (fetcher) fetcher->add(store);
  r.stores[provider.name].push_back(store);
  registerHealthCheck(store);
  return store;
}

std::vector<JwksStatus> jwksStatus(const Config& config) {
  std::vector<JwksStatus> out;
  Registry& r = registry();
  for (const auto& provider : config.jwt_providers) {
    std::shared_ptr<KeyStore> store;
    {
      std::lock_guard<std::mutex> lock(r.mutex);
      store = r.newest(provider.name);
    }
    if (store && sameSource(*store, provider)) {
      out.push_back(store->status());
      continue;
    }
    JwksStatus s;
    s.provider = provider.name;
    s.state = JwksState::Unused;
    s.source = provider.jwks_uri.empty() ? provider.jwks_file : provider.jwks_uri;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace gw::jwt
