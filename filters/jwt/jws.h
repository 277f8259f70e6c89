// JWS signature verification (RFC 7515 §5.2, algorithms of RFC 7518 §3 and RFC 8037 §3.1),
// all through OpenSSL 3.
#pragma once

#include <string_view>

#include "filters/jwt/jwk.h"

namespace gw::jwt {

// Whether `signature` (the decoded JWS Signature) is `alg`'s signature of `signing_input`
// (ASCII(BASE64URL(header) '.' BASE64URL(payload))) by `key`. False, never an exception,
// for anything wrong, including a key that does not allow `alg`. ECDSA signatures are the
// JOSE form (R || S, each the curve's size); HMACs are compared in constant time.
// Thread-safe; allocation-free on the RSA, EdDSA and HMAC paths once warm.
bool verifySignature(Algorithm alg, const Jwk& key, std::string_view signing_input,
                     std::string_view signature);

}  // namespace gw::jwt
