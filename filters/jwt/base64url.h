// base64url without padding (RFC 7515 §2, RFC 4648 §5), decoded strictly: one spelling per
// byte string, so that two different token texts never carry the same signature.
#pragma once

#include <string>
#include <string_view>

namespace gw::jwt {

// Appends the decoded bytes of `in` to `out`. False (out unspecified) on padding,
// whitespace, a character outside [A-Za-z0-9_-], a length of 4k+1, or non-zero bits left
// over in the last character.
bool decodeBase64Url(std::string_view in, std::string& out);

std::string encodeBase64Url(std::string_view in);

}  // namespace gw::jwt
