#include "filters/jwt/jwt_filter.h"

#include <uv.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <functional>

#include "gateway/log.h"

namespace gw::jwt {
namespace {

using auth::Reason;

// A parked request waits for the refetch its unknown kid started; the fetch itself gives
// up after 5 s, so this bound is only a backstop.
constexpr uint64_t kPollIntervalMs = 10;
constexpr uint64_t kMaxWaitMs = 6000;
// Snapshots kept per worker and provider: the current store and, during a reload that
// changed the key source, the previous one.
constexpr size_t kMaxSnapshots = 4;

constexpr std::string_view kRealm = "Bearer realm=\"gateway\"";

std::string_view describe(Reason reason) {
  switch (reason) {
    case Reason::Missing:
      return "A bearer token is required";
    case Reason::Malformed:
      return "The token is malformed";
    case Reason::BadSignature:
      return "The token signature is invalid";
    case Reason::Expired:
      return "The token has expired";
    case Reason::NotYetValid:
      return "The token is not valid yet";
    case Reason::WrongIssuer:
      return "The token issuer is not accepted";
    case Reason::WrongAudience:
      return "The token audience is not accepted";
    case Reason::UnknownKid:
      return "The token signing key is unknown";
    case Reason::AlgNotAllowed:
      return "The token algorithm is not accepted";
    case Reason::InsufficientScope:
      return "The token does not grant access to this resource";
    case Reason::KeysUnavailable:
      return "Token verification keys are not available yet";
    default:
      break;
  }
  return "The token is not accepted";
}

// RFC 6750 §3: the challenge of each 401. Built once; replies point into it.
std::string_view unauthorizedChallenge(Reason reason) {
  static const std::array<std::string, auth::kReasonCount> kChallenges = [] {
    std::array<std::string, auth::kReasonCount> out;
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = std::string(kRealm) + ", error=\"invalid_token\", error_description=\"" +
               std::string(describe(static_cast<Reason>(i))) + "\"";
    }
    return out;
  }();
  // RFC 6750 §3.1: no error code when no credentials were presented.
  if (reason == Reason::Missing) return kRealm;
  return kChallenges[static_cast<size_t>(reason)];
}

enum class BearerStatus { Found, Missing, Malformed };

BearerStatus bearerToken(const HeaderList& headers, std::string_view& token) {
  size_t count = 0;
  std::string_view value;
  for (const Header& h : headers) {
    if (equalsIgnoreCase(h.name, "authorization")) {
      ++count;
      value = h.value;
    }
  }
  if (count == 0) return BearerStatus::Missing;
  if (count > 1) return BearerStatus::Malformed;  // which one would the upstream believe?
  // RFC 6750 §2.1 / RFC 9110 §11.4: the scheme is case-insensitive; another scheme means
  // no bearer credentials at all.
  if (value.size() < 6 || !equalsIgnoreCase(value.substr(0, 6), "bearer")) {
    return BearerStatus::Missing;
  }
  value.remove_prefix(6);
  if (!value.empty() && value.front() != ' ') return BearerStatus::Missing;
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return BearerStatus::Malformed;
  token = value;
  return BearerStatus::Found;
}

// A claim goes upstream only if it cannot break the header block (CR, LF, NUL...).
bool validHeaderValue(std::string_view value) {
  return std::all_of(value.begin(), value.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return c == '\t' || (c >= 0x20 && c != 0x7f);
  });
}

struct Parked {
  RequestContext* ctx;
  HeaderList* headers;
  const JwtFilter* filter;  // alive: the request pins its configuration
  std::string_view token;   // arena-owned
  uint64_t target;          // the fetch to wait for
  uint64_t deadline_ms;     // loop time
};

// A worker's state for one provider: its verified tokens, the key sets it last saw, and
// the requests waiting for a refetch. Survives reloads (keyed by provider name).
class ProviderState final : public WorkerState {
 public:
  explicit ProviderState(WorkerServices& worker) : worker_(worker) {}
  ~ProviderState() override { shutdown(); }

  TokenCache& cache() { return cache_; }

  // The store's current key set (null before its first load) and its version. Takes the
  // store's mutex only when the version moved since this worker last looked.
  const KeySet* keys(const KeyStore& store, uint64_t& version) {
    uint64_t current = store.version();
    for (auto& s : snapshots_) {
      if (s.store_id != store.id()) continue;
      if (s.version != current) s.keys = store.snapshot(&s.version);
      version = s.version;
      return s.keys.get();
    }
    if (snapshots_.size() >= kMaxSnapshots) snapshots_.erase(snapshots_.begin());
    Snapshot s{store.id(), 0, nullptr};
    s.keys = store.snapshot(&s.version);
    snapshots_.push_back(std::move(s));
    version = snapshots_.back().version;
    return snapshots_.back().keys.get();
  }

  void park(const Parked& p) {
    parked_.push_back(p);
    if (!timer_) {
      timer_ = new uv_timer_t;
      uv_timer_init(worker_.loop(), timer_);
      timer_->data = this;
    }
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) {
      uv_timer_start(timer_, onPoll, kPollIntervalMs, kPollIntervalMs);
    }
  }

  void abandon(const RequestContext& ctx) {
    parked_.erase(std::remove_if(parked_.begin(), parked_.end(),
                                 [&](const Parked& p) { return p.ctx == &ctx; }),
                  parked_.end());
  }

  uint64_t loopNow() { return uv_now(worker_.loop()); }

  void shutdown() override {
    parked_.clear();
    if (timer_) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_),
               [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_timer_t*>(h); });
      timer_ = nullptr;
    }
  }

 private:
  struct Snapshot {
    uint64_t store_id;
    uint64_t version;
    std::shared_ptr<const KeySet> keys;
  };

  static void onPoll(uv_timer_t* t) noexcept { static_cast<ProviderState*>(t->data)->poll(); }

  void poll() {
    uint64_t now = loopNow();
    auto ready = [&](const Parked& p) {
      return p.filter->provider().keys().completedFetches() >= p.target || now >= p.deadline_ms;
    };
    // One at a time, looking afresh each time: resuming runs the rest of that request's
    // chain, which may park another request or abandon one (its client went away).
    for (auto it = std::find_if(parked_.begin(), parked_.end(), ready); it != parked_.end();
         it = std::find_if(parked_.begin(), parked_.end(), ready)) {
      Parked p = *it;
      parked_.erase(it);
      p.filter->resume(*p.ctx, *p.headers, p.token);
    }
    if (parked_.empty() && timer_) uv_timer_stop(timer_);
  }

  WorkerServices& worker_;
  TokenCache cache_;
  std::vector<Snapshot> snapshots_;
  std::vector<Parked> parked_;
  uv_timer_t* timer_ = nullptr;
};

std::unique_ptr<WorkerState> makeProviderState(WorkerServices& worker) {
  return std::make_unique<ProviderState>(worker);
}

ProviderState& providerState(WorkerServices& worker, const Provider& provider) {
  return static_cast<ProviderState&>(worker.state(provider.stateKey(), makeProviderState));
}

uint64_t fingerprintOf(const VerifyPolicy& policy) {
  std::string canonical = policy.issuer;
  for (const auto& a : policy.audiences) canonical += '\0' + a;
  canonical += '\0' + std::to_string(policy.algorithms) + '\0' + std::to_string(policy.leeway_ms);
  return std::hash<std::string>{}(canonical);
}

}  // namespace

Provider::Provider(const JwtProviderConfig& config, std::shared_ptr<KeyStore> keys)
    : name_(config.name),
      forward_claims_(config.forward_claims),
      keys_(std::move(keys)),
      state_key_("jwt:" + config.name) {
  policy_.issuer = config.issuer;
  policy_.audiences = config.audiences;
  policy_.leeway_ms = uint64_t(config.leeway.count());
  for (const auto& name : config.algorithms) {
    if (auto alg = algorithmFromName(name)) policy_.algorithms |= algorithmBit(*alg);
  }
  fingerprint_ = fingerprintOf(policy_);
}

JwtFilter::JwtFilter(std::shared_ptr<const JwtConfig> config,
                     std::shared_ptr<const Provider> provider, std::string_view route)
    : config_(std::move(config)), provider_(std::move(provider)), failures_(route) {
  forbidden_challenge_ = std::string(kRealm) +
                         ", error=\"insufficient_scope\", error_description=\"" +
                         std::string(describe(Reason::InsufficientScope)) + "\"";
  if (!config_->scopes().empty()) {
    std::string scopes;
    for (const auto& s : config_->scopes()) scopes += (scopes.empty() ? "" : " ") + s;
    forbidden_challenge_ += ", scope=\"" + scopes + "\"";
  }
}

FilterStatus JwtFilter::onRequestHeaders(RequestContext& ctx, HeaderList& headers) const {
  // Whatever happens next, a client must not be able to pose as a claim.
  for (const auto& forward : provider_->forwardClaims()) headers.remove(forward.second);
  std::string_view token;
  BearerStatus bearer = bearerToken(headers, token);
  // authenticate() looks the key set up first: one lookup for a request with a token.
  if (bearer == BearerStatus::Found) return authenticate(ctx, headers, token, /*may_wait=*/true);
  // A provider that never loaded a key set can authenticate nobody: its routes answer 503
  // (SPEC §2), to a request without a usable token too.
  uint64_t version = 0;
  if (!providerState(*ctx.worker, *provider_).keys(provider_->keys(), version)) {
    return refuse(ctx, Reason::KeysUnavailable);
  }
  return refuse(ctx, bearer == BearerStatus::Missing ? Reason::Missing : Reason::Malformed);
}

FilterStatus JwtFilter::authenticate(RequestContext& ctx, HeaderList& headers,
                                     std::string_view token, bool may_wait) const {
  ProviderState& state = providerState(*ctx.worker, *provider_);
  uint64_t version = 0;
  const KeySet* keys = state.keys(provider_->keys(), version);
  if (!keys) return refuse(ctx, Reason::KeysUnavailable);
  // The key set's version and the policy, folded: an entry verified under other keys or
  // other rules is a miss.
  uint64_t stamp = provider_->policyFingerprint() ^ (version * 0x9E3779B97F4A7C15ull);
  if (auto* cached = state.cache().find(token, stamp, ctx.now_ms))
    return admit(ctx, headers, *cached);

  VerifyResult result = verifyToken(token, *keys, provider_->policy(), ctx.now_ms);
  if (result.identity) {
    state.cache().insert(token, stamp, ctx.now_ms, result.identity);
    return admit(ctx, headers, result.identity);
  }
  if (result.kid_not_found && may_wait) {
    if (uint64_t target = provider_->keys().requestRefresh(ctx.now_ms)) {
      state.park(
          {&ctx, &headers, this, ctx.arena->copy(token), target, state.loopNow() + kMaxWaitMs});
      return FilterStatus::StopWait;
    }
  }
  return refuse(ctx, result.failure);
}

void JwtFilter::resume(RequestContext& ctx, HeaderList& headers, std::string_view token) const {
  if (authenticate(ctx, headers, token, /*may_wait=*/false) == FilterStatus::Continue) {
    ctx.continueRequest();
  }
}

void JwtFilter::onAbandon(RequestContext& ctx) const {
  providerState(*ctx.worker, *provider_).abandon(ctx);
}

FilterStatus JwtFilter::admit(RequestContext& ctx, HeaderList& headers,
                              const std::shared_ptr<const TokenIdentity>& identity) const {
  for (const auto& [claim, values] : config_->requireClaims()) {
    if (!identity->claimMatches(claim, values)) return refuse(ctx, Reason::InsufficientScope);
  }
  for (const auto& scope : config_->scopes()) {
    if (!identity->hasScope(scope)) return refuse(ctx, Reason::InsufficientScope);
  }
  ctx.identity = identity;
  ctx.user = ctx.arena->copy(identity->subject());
  for (const auto& [claim, header] : provider_->forwardClaims()) {
    const Claim* c = identity->find(claim);
    if (c && validHeaderValue(c->text)) headers.addRef(header, ctx.arena->copy(c->text));
  }
  return FilterStatus::Continue;
}

FilterStatus JwtFilter::refuse(RequestContext& ctx, Reason reason) const {
  failures_.count(reason);
  if (log::enabled(LogLevel::Debug)) {
    log::debug("jwt authentication failed",
               {{"route", ctx.route ? std::string_view(ctx.route->name) : std::string_view()},
                {"provider", provider_->name()},
                {"reason", auth::reasonName(reason)}});
  }
  if (reason == Reason::KeysUnavailable) {
    ctx.sendLocalReply(503, "SERVICE_UNAVAILABLE", describe(reason));
  } else if (reason == Reason::InsufficientScope) {
    ctx.response_headers_to_add.addRef("WWW-Authenticate", forbidden_challenge_);
    ctx.sendLocalReply(403, "FORBIDDEN", describe(reason));
  } else {
    ctx.response_headers_to_add.addRef("WWW-Authenticate", unauthorizedChallenge(reason));
    ctx.sendLocalReply(401, "UNAUTHORIZED", describe(reason));
  }
  return FilterStatus::StopReplied;
}

const TokenCache& tokenCache(WorkerServices& worker, const Provider& provider) {
  return providerState(worker, provider).cache();
}

void buildJwtFilter(const std::shared_ptr<const FilterConfig>& config, const RouteConfig* route,
                    const Config& whole, std::vector<std::shared_ptr<const Filter>>& chain) {
  auto jwt = std::static_pointer_cast<const JwtConfig>(config);
  auto it = std::find_if(whole.jwt_providers.begin(), whole.jwt_providers.end(),
                         [&](const JwtProviderConfig& p) { return p.name == jwt->provider(); });
  if (it == whole.jwt_providers.end()) {
    // The loader refuses unknown providers; building a route without its authentication
    // would fail open, so a broken invariant stops here.
    log::error("jwt filter names an unknown provider", {{"provider", jwt->provider()}});
    std::abort();
  }
  auto provider = std::make_shared<const Provider>(*it, acquireKeyStore(*it));
  chain.push_back(std::make_shared<JwtFilter>(std::move(jwt), std::move(provider),
                                              route ? std::string_view(route->name) : ""));
}

}  // namespace gw::jwt
