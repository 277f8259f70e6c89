// The unit tests' main(): like the gateway's, it runs the shutdown hooks before returning,
// so threads started on demand (the JWKS fetcher) stop, with their OpenSSL per-thread
// state, before LeakSanitizer examines the process.
#include <gtest/gtest.h>

#include "gateway/shutdown.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int status = RUN_ALL_TESTS();
  gw::runShutdownHooks();
  return status;
}
