// Between the files of the HTTP/2 codec only: nghttp2's callbacks (session_callbacks.cc)
// as the session (server_codec.cc) installs them.
#pragma once

#include <nghttp2/nghttp2.h>

namespace gw::http2_detail {

const nghttp2_session_callbacks* sessionCallbacks();
// The data source of every response body (a stream found by its id).
ssize_t readResponseData(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                         uint32_t* flags, nghttp2_data_source* source, void* user);

}  // namespace gw::http2_detail
