#include "gateway/deadline_list.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace gw {
namespace {

// Unlinks every node from the front and returns them in that order.
std::vector<const DeadlineNode*> drainOrder(DeadlineList& list) {
  std::vector<const DeadlineNode*> out;
  while (DeadlineNode* n = list.front()) {
    out.push_back(n);
    DeadlineList::unlink(n);
  }
  return out;
}

class DeadlineListTest : public ::testing::Test {
 protected:
  void pushABC() {
    list.push(&a, 1);
    list.push(&b, 2);
    list.push(&c, 3);
  }

  DeadlineList list;
  DeadlineNode a, b, c;
};

TEST_F(DeadlineListTest, EmptyListHasNoFront) {
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.front(), nullptr);
}

TEST_F(DeadlineListTest, PushedNodesComeOutFirstInFirstOut) {
  pushABC();
  EXPECT_FALSE(list.empty());
  EXPECT_TRUE(a.linked() && b.linked() && c.linked());
  EXPECT_EQ(list.front(), &a);
  EXPECT_EQ(a.deadline_ms, 1u);
  EXPECT_EQ(drainOrder(list), (std::vector<const DeadlineNode*>{&a, &b, &c}));
  EXPECT_TRUE(list.empty());
  EXPECT_FALSE(a.linked() || b.linked() || c.linked());
}

TEST_F(DeadlineListTest, UnlinkFromTheMiddleKeepsTheRestInOrder) {
  pushABC();
  DeadlineList::unlink(&b);
  EXPECT_FALSE(b.linked());
  EXPECT_EQ(b.prev, nullptr);
  EXPECT_EQ(b.next, nullptr);
  EXPECT_EQ(drainOrder(list), (std::vector<const DeadlineNode*>{&a, &c}));
}

TEST_F(DeadlineListTest, UnlinkOfTheOnlyNodeEmptiesTheList) {
  list.push(&a, 1);
  DeadlineList::unlink(&a);
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.front(), nullptr);
}

TEST_F(DeadlineListTest, UnlinkOfAnUnlinkedNodeDoesNothing) {
  DeadlineNode loose;
  list.push(&a, 1);
  DeadlineList::unlink(&loose);
  DeadlineList::unlink(&loose);
  EXPECT_EQ(list.front(), &a);
  DeadlineList::unlink(&a);
  DeadlineList::unlink(&a);  // twice: still fine
  EXPECT_TRUE(list.empty());
}

TEST_F(DeadlineListTest, RepushMovesANodeToTheTailWithItsNewDeadline) {
  pushABC();
  list.push(&a, 4);  // activity on a: its deadline starts again
  EXPECT_EQ(a.deadline_ms, 4u);
  EXPECT_EQ(list.front(), &b);
  list.push(&c, 5);  // the tail re-pushed stays the tail
  EXPECT_EQ(drainOrder(list), (std::vector<const DeadlineNode*>{&b, &a, &c}));
}

TEST_F(DeadlineListTest, NodeMovesBetweenLists) {
  // A connection goes from the header-read list to the idle list.
  DeadlineList header_read, idle;
  header_read.push(&a, 10);
  header_read.push(&b, 20);
  idle.push(&a, 30);
  EXPECT_EQ(header_read.front(), &b);
  EXPECT_EQ(idle.front(), &a);
  EXPECT_EQ(drainOrder(header_read), (std::vector<const DeadlineNode*>{&b}));
  EXPECT_EQ(drainOrder(idle), (std::vector<const DeadlineNode*>{&a}));
}

TEST_F(DeadlineListTest, FrontIsAlwaysTheEarliestDeadline) {
  // Same-duration lists stay sorted by construction: push with a non-decreasing clock,
  // interleaving unlinks and re-pushes, and the front is always the minimum.
  DeadlineNode nodes[16];
  uint64_t now = 1000;
  uint32_t x = 7;
  for (int step = 0; step < 2000; ++step) {
    x = x * 1664525u + 1013904223u;
    now += (x >> 28);
    DeadlineNode& n = nodes[(x >> 8) % 16];
    if ((x >> 4) % 4 == 0) {
      DeadlineList::unlink(&n);
    } else {
      list.push(&n, now + 500);
    }
    uint64_t min = UINT64_MAX;
    for (const DeadlineNode& m : nodes) {
      if (m.linked() && m.deadline_ms < min) min = m.deadline_ms;
    }
    if (min == UINT64_MAX) {
      ASSERT_TRUE(list.empty());
    } else {
      ASSERT_NE(list.front(), nullptr);
      ASSERT_EQ(list.front()->deadline_ms, min) << "step " << step;
    }
  }
}

}  // namespace
}  // namespace gw
