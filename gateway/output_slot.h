// What a codec hands its transport to write: the bytes, and the libuv write in flight.
// An HTTP/1.1 request owns one (so an idle connection owns none); an HTTP/2 session one
// for all its streams.
#pragma once

#include <uv.h>

#include <cstddef>

#include "gateway/buffer.h"

namespace gw {

struct OutputSlot {
  Buffer out;
  uv_write_t write_req{};
  size_t writing_bytes = 0;  // handed to uv_write, drained from `out` on completion
};

}  // namespace gw
