// HTTP/1.1 chunked framing (RFC 9112 §7.1) of a body whose length is not known in
// advance: the gateway re-chunks both ways, a client's body for the upstream and an
// upstream's body for the client, dropping the sender's chunk boundaries and extensions.
#pragma once

#include <cstddef>

#include "gateway/buffer.h"

namespace gw::http1 {

// `data` is appended as a view (Buffer::appendExternal's contract), not copied.
inline void appendChunk(Buffer& out, const char* data, size_t len) {
  out.appendHex(len);
  out.append("\r\n", 2);
  out.appendExternal(data, len);
  out.append("\r\n", 2);
}

inline void appendLastChunk(Buffer& out) { out.append("0\r\n\r\n", 5); }

}  // namespace gw::http1
