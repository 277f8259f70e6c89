#include "filters/jwt/jwt_verifier.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "filters/jwt/base64url.h"
#include "filters/jwt/jws.h"

namespace gw::jwt {
namespace {

using Json = nlohmann::json;
using auth::Reason;

// Parses a JSON object, refusing a member name given twice at the top level: parsers
// disagree on which one wins (RFC 7515 §5.2, RFC 8725 §3.9).
std::optional<Json> parseObject(std::string_view text) {
  std::vector<std::string> names;
  bool duplicate = false;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1) {
      const auto& name = parsed.get_ref<const std::string&>();
      if (std::find(names.begin(), names.end(), name) != names.end()) duplicate = true;
      names.push_back(name);
    }
    return true;
  };
  Json doc = Json::parse(text, callback, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || duplicate) return std::nullopt;
  return doc;
}

std::string scalarText(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return {};
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Claim makeClaim(const std::string& name, const Json& value) {
  Claim claim;
  claim.name = name;
  if (value.is_array()) {
    claim.is_array = true;
    for (const auto& element : value) {
      claim.elements.push_back(scalarText(element));
      if (claim.elements.size() > 1) claim.text += ',';
      claim.text += claim.elements.back();
    }
  } else {
    claim.text = scalarText(value);
  }
  return claim;
}

void addScopes(const Json& value, std::vector<std::string>& scopes) {
  if (value.is_string()) {
    std::string_view rest = value.get_ref<const std::string&>();
    while (!rest.empty()) {
      size_t space = rest.find(' ');
      if (space != 0) scopes.emplace_back(rest.substr(0, space));
      if (space == std::string_view::npos) break;
      rest.remove_prefix(space + 1);
    }
  } else if (value.is_array()) {
    for (const auto& s : value) {
      if (s.is_string()) scopes.push_back(s.get<std::string>());
    }
  }
}

// A NumericDate (RFC 7519 §2) in ms; nullopt when present but not a number.
std::optional<double> numericDateMs(const Json& claims, const char* name, bool& present) {
  auto it = claims.find(name);
  present = it != claims.end();
  if (!present) return 0.0;
  if (!it->is_number()) return std::nullopt;
  double seconds = it->get<double>();
  if (!std::isfinite(seconds)) return std::nullopt;
  return seconds * 1000.0;
}

// exp, nbf, iat, iss, aud. Returns the failure, or nullopt when the token passes.
std::optional<Reason> checkClaims(const Json& claims, const VerifyPolicy& policy, double now_ms,
                                  uint64_t& expires_at_ms) {
  double leeway = double(policy.leeway_ms);
  bool present = false;
  auto exp = numericDateMs(claims, "exp", present);
  if (!exp) return Reason::Malformed;
  expires_at_ms = UINT64_MAX;
  if (present) {
    if (now_ms >= *exp + leeway) return Reason::Expired;
    double until = *exp + leeway;
    expires_at_ms = until >= 1.8e19 ? UINT64_MAX : uint64_t(until);
  }
  for (const char* name : {"nbf", "iat"}) {
    auto at = numericDateMs(claims, name, present);
    if (!at) return Reason::Malformed;
    if (present && now_ms + leeway < *at) return Reason::NotYetValid;
  }
  if (!policy.issuer.empty()) {
    auto iss = claims.find("iss");
    if (iss != claims.end() && !iss->is_string()) return Reason::Malformed;
    if (iss == claims.end() || iss->get_ref<const std::string&>() != policy.issuer) {
      return Reason::WrongIssuer;
    }
  }
  if (!policy.audiences.empty()) {
    auto aud = claims.find("aud");
    if (aud == claims.end()) return Reason::WrongAudience;
    auto accepted = [&](const Json& a) {
      return std::find(policy.audiences.begin(), policy.audiences.end(),
                       a.get_ref<const std::string&>()) != policy.audiences.end();
    };
    bool any = false;
    if (aud->is_string()) {
      any = accepted(*aud);
    } else if (aud->is_array()) {
      for (const auto& a : *aud) {
        if (!a.is_string()) return Reason::Malformed;
        any = any || accepted(a);
      }
    } else {
      return Reason::Malformed;
    }
    if (!any) return Reason::WrongAudience;
  }
  if (auto sub = claims.find("sub"); sub != claims.end() && !sub->is_string()) {
    return Reason::Malformed;
  }
  return std::nullopt;
}

struct Parts {
  std::string_view header_b64, payload_b64, signature_b64, signing_input;
};

bool split(std::string_view token, Parts& parts) {
  size_t first = token.find('.');
  if (first == std::string_view::npos) return false;
  size_t second = token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return false;  // JWE compact has five parts: not supported
  }
  parts.header_b64 = token.substr(0, first);
  parts.payload_b64 = token.substr(first + 1, second - first - 1);
  parts.signature_b64 = token.substr(second + 1);
  parts.signing_input = token.substr(0, second);
  return !parts.header_b64.empty() && !parts.signature_b64.empty();
}

VerifyResult fail(Reason reason) {
  VerifyResult r;
  r.failure = reason;
  return r;
}

VerifyResult verifyUnchecked(std::string_view token, const KeySet& keys, const VerifyPolicy& policy,
                             uint64_t now_ms) {
  Parts parts;
  if (token.size() > kMaxTokenBytes || !split(token, parts)) return fail(Reason::Malformed);
  std::string header_text, payload_text, signature;
  if (!decodeBase64Url(parts.header_b64, header_text) ||
      !decodeBase64Url(parts.payload_b64, payload_text) ||
      !decodeBase64Url(parts.signature_b64, signature)) {
    return fail(Reason::Malformed);
  }
  std::optional<Json> header = parseObject(header_text);
  if (!header) return fail(Reason::Malformed);
  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string()) return fail(Reason::Malformed);
  // "none" (in any case) is not a name algorithmFromName knows: refused here.
  std::optional<Algorithm> alg = algorithmFromName(alg_it->get_ref<const std::string&>());
  if (!alg || !(policy.algorithms & algorithmBit(*alg))) return fail(Reason::AlgNotAllowed);
  // We understand no extension, so any critical one makes the token unusable (§4.1.11).
  if (header->contains("crit")) return fail(Reason::Malformed);

  const std::string* kid = nullptr;
  if (auto k = header->find("kid"); k != header->end()) {
    if (!k->is_string()) return fail(Reason::Malformed);
    kid = &k->get_ref<const std::string&>();
  }
  bool kid_seen = false;
  bool verified = false;
  bool tried = false;
  for (const Jwk& key : keys.keys()) {
    if (kid && key.kid() != *kid) continue;
    kid_seen = true;
    if (!key.allows(*alg)) continue;
    tried = true;
    if (verifySignature(*alg, key, parts.signing_input, signature)) {
      verified = true;
      break;
    }
  }
  if (!tried) {
    VerifyResult r = fail(kid && kid_seen ? Reason::AlgNotAllowed : Reason::UnknownKid);
    r.kid_not_found = kid && !kid_seen;
    return r;
  }
  if (!verified) return fail(Reason::BadSignature);

  // The payload is parsed only once its signature holds: unauthenticated JSON never
  // reaches the parser beyond the header.
  std::optional<Json> claims = parseObject(payload_text);
  if (!claims) return fail(Reason::Malformed);
  uint64_t expires_at_ms = UINT64_MAX;
  if (auto failure = checkClaims(*claims, policy, double(now_ms), expires_at_ms)) {
    return fail(*failure);
  }
  std::vector<Claim> list;
  list.reserve(claims->size());
  std::vector<std::string> scopes;
  for (const auto& [name, value] : claims->items()) {
    list.push_back(makeClaim(name, value));
    if (name == "scope" || name == "scp") addScopes(value, scopes);
  }
  VerifyResult r;
  r.identity =
      std::make_shared<const TokenIdentity>(std::move(list), std::move(scopes), expires_at_ms);
  return r;
}

}  // namespace

TokenIdentity::TokenIdentity(std::vector<Claim> claims, std::vector<std::string> scopes,
                             uint64_t expires_at_ms)
    : claims_(std::move(claims)), scopes_(std::move(scopes)), expires_at_ms_(expires_at_ms) {
  std::sort(claims_.begin(), claims_.end(),
            [](const Claim& a, const Claim& b) { return a.name < b.name; });
}

const Claim* TokenIdentity::find(std::string_view name) const {
  auto it = std::lower_bound(claims_.begin(), claims_.end(), name,
                             [](const Claim& c, std::string_view n) { return c.name < n; });
  return it != claims_.end() && it->name == name ? &*it : nullptr;
}

std::string_view TokenIdentity::claim(std::string_view name) const {
  const Claim* c = find(name);
  return c ? std::string_view(c->text) : std::string_view();
}

bool TokenIdentity::hasScope(std::string_view scope) const {
  return std::find(scopes_.begin(), scopes_.end(), scope) != scopes_.end();
}

bool TokenIdentity::claimMatches(std::string_view name,
                                 const std::vector<std::string>& accepted) const {
  const Claim* c = find(name);
  if (!c) return false;
  auto ok = [&](const std::string& v) {
    return std::find(accepted.begin(), accepted.end(), v) != accepted.end();
  };
  if (!c->is_array) return ok(c->text);
  return std::any_of(c->elements.begin(), c->elements.end(), ok);
}

VerifyResult verifyToken(std::string_view token, const KeySet& keys, const VerifyPolicy& policy,
                         uint64_t now_ms) {
  try {
    return verifyUnchecked(token, keys, policy, now_ms);
  } catch (const std::exception&) {
    // nlohmann accessors are only used after type checks and the allocator is the only
    // other thrower; a token must never take the worker down either way.
    return fail(Reason::Malformed);
  }
}

}  // namespace gw::jwt
