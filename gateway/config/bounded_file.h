// Reading the files a configuration is made of: the file itself and every file it names
// (certificates, keys, CA bundles, JWKS, API key lists). They are read whole into memory,
// at start, on `--check` and on every reload, so a path naming a FIFO (open() would block),
// a device such as /dev/zero (read() never ends) or a huge file must be refused before
// anything is read, and a file growing while it is read must not be followed.
//
// Contract: regular files only, at most kMaxConfigFileBytes; never blocks on the path's
// kind; errors are short phrases ("not a regular file (a FIFO)", "larger than the 16 MiB
// limit", strerror text) for the caller to put after the path.
#pragma once

#include <cstdint>
#include <string>

namespace gw {

inline constexpr uint64_t kMaxConfigFileBytes = uint64_t(16) << 20;

// Opens `path` for reading if it is a regular file of at most kMaxConfigFileBytes;
// returns the fd (O_CLOEXEC; the caller closes it), or -1 with `error` set.
int openBoundedFile(const std::string& path, std::string& error);
// Reads `path` whole under the same conditions; on failure returns false, leaves `out`
// empty and sets `error`.
bool readBoundedFile(const std::string& path, std::string& out, std::string& error);

}  // namespace gw
