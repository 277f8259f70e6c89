#include "filters/api_key/api_key_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/filters/auth/auth_metrics.h"
#include "tests/filters/auth/fake_request.h"

namespace gw::api_key {
namespace {

using test_util::FakeRequest;
using test_util::FakeWorker;

std::string hex(const Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

TEST(ApiKeySha256Test, KnownVectors) {
  // FIPS 180-2 examples.
  EXPECT_EQ(hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

class ApiKeyFilterTest : public testing::Test {
 protected:
  ApiKeyFilterTest() {
    std::vector<ApiKeyEntry> entries = {{"partner-one", sha256("key-one")},
                                        {"partner-two", sha256("key-two")}};
    auto config = std::make_shared<const ApiKeyConfig>("partners", SourceLocation{});
    filter_ = std::make_shared<ApiKeyFilter>(config, "X-API-Key",
                                             std::make_shared<const KeyTable>(entries), "keys");
  }

  FilterStatus run(FakeRequest& r) { return filter_->onRequestHeaders(r.ctx, r.headers); }

  FakeWorker worker_;
  std::shared_ptr<ApiKeyFilter> filter_;
};

TEST_F(ApiKeyFilterTest, AKnownKeyNamesTheConsumer) {
  FakeRequest r(worker_);
  r.headers.add("x-api-key", "key-two");
  r.headers.add("X-Consumer", "spoofed");
  EXPECT_EQ(run(r), FilterStatus::Continue);
  EXPECT_EQ(r.ctx.user, "partner-two");
  ASSERT_TRUE(r.ctx.identity);
  EXPECT_EQ(r.ctx.identity->claim("sub"), "partner-two");
  EXPECT_EQ(r.ctx.identity->claim("api_key"), "partner-two");
  EXPECT_EQ(r.ctx.identity->claim("other"), "");
  EXPECT_EQ(r.headers.count("x-consumer"), 1u);
  EXPECT_EQ(r.headers.get("X-Consumer"), "partner-two");
}

TEST_F(ApiKeyFilterTest, MissingUnknownOrAmbiguousKeysAre401) {
  struct Case {
    std::vector<std::string> keys;
    std::string message;
    auth::Reason reason;
  };
  std::vector<Case> cases = {
      {{}, "An API key is required", auth::Reason::Missing},
      {{""}, "An API key is required", auth::Reason::Missing},
      {{"key-three"}, "The API key is not valid", auth::Reason::UnknownKey},
      {{"KEY-ONE"}, "The API key is not valid", auth::Reason::UnknownKey},
      {{"key-one", "key-two"}, "Exactly one API key is required", auth::Reason::Malformed},
  };
  for (const auto& c : cases) {
    FakeRequest r(worker_);
    r.headers.add("X-Consumer", "spoofed");
    for (const auto& k : c.keys) r.headers.add("X-API-Key", k);
    EXPECT_EQ(run(r), FilterStatus::StopReplied);
    EXPECT_EQ(r.driver.status, 401);
    EXPECT_EQ(r.driver.error_code, "UNAUTHORIZED");
    EXPECT_EQ(r.driver.message, c.message);
    EXPECT_EQ(r.responseHeader("WWW-Authenticate"),
              "ApiKey realm=\"gateway\", header=\"X-API-Key\"");
    EXPECT_EQ(r.ctx.user, "");
    EXPECT_FALSE(r.headers.has("X-Consumer"));
  }
  EXPECT_EQ(test_util::authFailures("keys", auth::Reason::Missing), 2u);
  EXPECT_EQ(test_util::authFailures("keys", auth::Reason::UnknownKey), 2u);
  EXPECT_EQ(test_util::authFailures("keys", auth::Reason::Malformed), 1u);
}

TEST(ApiKeyTableTest, LooksUpByDigest) {
  std::vector<ApiKeyEntry> entries;
  for (int i = 0; i < 1000; ++i) {
    entries.push_back({"c" + std::to_string(i), sha256("key-" + std::to_string(i))});
  }
  KeyTable table(entries);
  EXPECT_EQ(table.size(), 1000u);
  ASSERT_TRUE(table.find(sha256("key-637")));
  EXPECT_EQ(table.find(sha256("key-637"))->name, "c637");
  EXPECT_FALSE(table.find(sha256("key-1000")));
  Digest near = sha256("key-1");
  near[31] ^= 1;  // all but the last byte equal
  EXPECT_FALSE(table.find(near));
}

}  // namespace
}  // namespace gw::api_key
