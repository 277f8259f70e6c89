#include "gateway/tracing/span_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace gw::tracing {
namespace {

TEST(SpanQueueTest, BoundedAndInOrder) {
  SpanQueue q(3);
  std::string s;
  for (const char* text : {"a", "b", "c"}) {
    s = text;
    EXPECT_GT(q.push(s), 0u);
    EXPECT_TRUE(s.empty());  // taken
  }
  s = "d";
  EXPECT_EQ(q.push(s), 0u);  // full: refused and left with the caller
  EXPECT_EQ(s, "d");
  std::string out;
  EXPECT_EQ(q.takeInto(out, 2), 2u);
  EXPECT_EQ(out, "ab");
  EXPECT_EQ(q.push(s), 2u);
  out.clear();
  EXPECT_EQ(q.takeInto(out, 10), 2u);
  EXPECT_EQ(out, "cd");
  EXPECT_EQ(q.size(), 0u);
}

TEST(SpanQueueTest, HandsBackCapacity) {
  // Buffers circulate (worker -> slot -> consumer -> slot -> worker): once each has been
  // round once, a span is handed over without a new allocation on either side.
  SpanQueue q(1);
  std::string s, out;
  for (int round = 0; round < 2; ++round) {
    s.assign(200, 'x');
    q.push(s);
    out.clear();
    q.takeInto(out, 1);
    EXPECT_EQ(out, std::string(200, 'x'));
  }
  s.assign(100, 'y');
  q.push(s);
  EXPECT_GE(s.capacity(), 200u);
  out.clear();
  q.takeInto(out, 1);
  EXPECT_EQ(out, std::string(100, 'y'));
}

TEST(SpanQueueTest, ResizeKeepsTheOldestAndCountsTheRest) {
  SpanQueue q(4);
  std::string s;
  for (const char* text : {"a", "b", "c", "d"}) {
    s = text;
    q.push(s);
  }
  std::string out;
  q.takeInto(out, 1);  // the ring now starts inside its array
  s = "e";
  q.push(s);
  EXPECT_EQ(q.resize(2), 2u);
  EXPECT_EQ(q.capacity(), 2u);
  out.clear();
  q.takeInto(out, 10);
  EXPECT_EQ(out, "bc");
  EXPECT_EQ(q.resize(8), 0u);
}

TEST(SpanQueueTest, ManyProducers) {
  SpanQueue q(1000);
  std::vector<std::thread> threads;
  std::atomic<size_t> refused{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::string s;
      for (int i = 0; i < 500; ++i) {
        s = "x";
        if (q.push(s) == 0) ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(q.size(), 1000u);
  EXPECT_EQ(refused.load(), 1000u);
}

}  // namespace
}  // namespace gw::tracing
