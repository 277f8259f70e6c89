#include "gateway/buffer.h"

#include <gtest/gtest.h>
#include <sys/uio.h>

#include <cstring>
#include <ostream>
#include <string>
#include <vector>

namespace gw {
namespace {

// A recognisable byte sequence: no two nearby offsets hold the same pattern, so a
// misplaced or reordered segment shows up in a string comparison.
std::string pattern(size_t n, unsigned seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char('a' + (i * 7 + seed + i / 26) % 26);
  return s;
}

// Empties the calling thread's free list so that freeCount() counts only what the test
// gives back (the pool keeps at most a few dozen slices; an empty one has room).
void emptyLocalPool() {
  SlicePool& pool = SlicePool::local();
  std::vector<Slice*> taken;
  while (pool.freeCount() > 0) taken.push_back(pool.acquire());
  for (Slice* s : taken) delete s;
}

std::string iovecsToString(const Buffer& b, size_t max = 64) {
  std::vector<iovec> iov(max);
  size_t n = b.peek(iov.data(), iov.size());
  std::string out;
  for (size_t i = 0; i < n; ++i) out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  return out;
}

size_t iovecCount(const Buffer& b) {
  iovec iov[64];
  return b.peek(iov, 64);
}

TEST(BufferTest, EmptyBufferHasNothingToPeek) {
  Buffer b;
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(iovecCount(b), 0u);
  EXPECT_EQ(b.toString(), "");
  EXPECT_FALSE(b.hasExternal());
}

TEST(BufferTest, AppendAcrossSliceBoundariesKeepsEveryByteInOrder) {
  // Pieces of awkward sizes so that appends straddle the 16 KiB slice boundaries.
  const std::string data = pattern(2 * kSliceSize + 1234);
  Buffer b;
  size_t pos = 0;
  size_t step = 1;
  while (pos < data.size()) {
    size_t n = std::min(step, data.size() - pos);
    b.append(data.data() + pos, n);
    pos += n;
    step = step * 3 + 1;  // 1, 4, 13, 40, ... 9841, then the rest
  }
  EXPECT_EQ(b.size(), data.size());
  EXPECT_EQ(b.toString(), data);
  EXPECT_EQ(iovecsToString(b), data);
  // Contiguous appends share a slice until it is full: three slices, three iovecs.
  EXPECT_EQ(iovecCount(b), 3u);
  iovec iov[4];
  ASSERT_EQ(b.peek(iov, 4), 3u);
  EXPECT_EQ(iov[0].iov_len, kSliceSize);
  EXPECT_EQ(iov[1].iov_len, kSliceSize);
  EXPECT_EQ(iov[2].iov_len, 1234u);
}

TEST(BufferTest, AppendOfExactlyOneSliceFillsItWithoutASecond) {
  Buffer b;
  b.append(pattern(kSliceSize));
  EXPECT_EQ(iovecCount(b), 1u);
  b.append("x");
  EXPECT_EQ(iovecCount(b), 2u);
  EXPECT_EQ(b.toString(), pattern(kSliceSize) + "x");
}

TEST(BufferTest, PeekFillsAtMostMaxIovecs) {
  Buffer b;
  b.append(pattern(3 * kSliceSize));
  iovec iov[2];
  EXPECT_EQ(b.peek(iov, 2), 2u);
  EXPECT_EQ(iov[0].iov_len + iov[1].iov_len, 2 * kSliceSize);
}

TEST(BufferTest, ReserveAndCommitWriteInPlaceAtTheTail) {
  Buffer b;
  b.append("head:");
  size_t got = 0;
  char* p = b.reserve(8, &got);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(got, 8u);
  // The space continues the slice that holds "head:".
  EXPECT_EQ(got, kSliceSize - 5);
  std::memcpy(p, "12345678", 8);
  b.commit(5);  // only part of what was reserved
  EXPECT_EQ(b.size(), 10u);
  EXPECT_EQ(b.toString(), "head:12345");
  EXPECT_EQ(iovecCount(b), 1u);
  b.append("-tail");
  EXPECT_EQ(b.toString(), "head:12345-tail");
  EXPECT_EQ(iovecCount(b), 1u);
}

TEST(BufferTest, ReserveTakesAFreshSliceWhenTheTailHasTooLittleRoom) {
  Buffer b;
  b.append(pattern(kSliceSize - 3));
  size_t got = 0;
  char* p = b.reserve(10, &got);
  EXPECT_EQ(got, kSliceSize);
  std::memcpy(p, "0123456789", 10);
  b.commit(10);
  EXPECT_EQ(b.toString(), pattern(kSliceSize - 3) + "0123456789");
  EXPECT_EQ(iovecCount(b), 2u);
}

TEST(BufferTest, ReserveOnEmptyBufferThenCommitNothingLeavesItEmpty) {
  Buffer b;
  size_t got = 0;
  ASSERT_NE(b.reserve(1, &got), nullptr);
  b.commit(0);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(iovecCount(b), 0u);  // the parked zero-length segment is not exported
  b.append("a");
  EXPECT_EQ(b.toString(), "a");
}

TEST(BufferTest, AppendExternalThenInternalizePreservesOrderAndDetachesFromSource) {
  std::string ext1 = "EXTERNAL-ONE";
  std::string ext2 = pattern(kSliceSize + 100, 5);  // spans more than a slice once copied
  Buffer b;
  b.append("a:");
  b.appendExternal(ext1.data(), ext1.size());
  b.append(":b:");
  b.appendExternal(ext2.data(), ext2.size());
  b.append(":c");
  const std::string expected = "a:" + ext1 + ":b:" + ext2 + ":c";
  EXPECT_TRUE(b.hasExternal());
  EXPECT_EQ(b.toString(), expected);
  // External segments are referenced, not copied: the iovec points at the source.
  iovec iov[8];
  ASSERT_GE(b.peek(iov, 8), 2u);
  EXPECT_EQ(iov[1].iov_base, ext1.data());

  b.internalize();
  EXPECT_FALSE(b.hasExternal());
  EXPECT_EQ(b.size(), expected.size());
  // The source memory may now be reused.
  std::fill(ext1.begin(), ext1.end(), '#');
  std::fill(ext2.begin(), ext2.end(), '#');
  EXPECT_EQ(b.toString(), expected);
  EXPECT_EQ(iovecsToString(b), expected);
}

TEST(BufferTest, InternalizeAfterPartialDrainOfAnExternalSegment) {
  std::string ext = "0123456789";
  Buffer b;
  b.appendExternal(ext.data(), ext.size());
  b.append("tail");
  b.drain(4);
  b.internalize();
  ext.assign(ext.size(), '#');
  EXPECT_FALSE(b.hasExternal());
  EXPECT_EQ(b.toString(), "456789tail");
}

TEST(BufferTest, DrainingAnExternalSegmentWhollyClearsHasExternal) {
  std::string ext = "xyz";
  Buffer b;
  b.appendExternal(ext.data(), ext.size());
  b.append("owned");
  EXPECT_TRUE(b.hasExternal());
  b.drain(3);
  EXPECT_FALSE(b.hasExternal());
  EXPECT_EQ(b.toString(), "owned");
}

TEST(BufferTest, AppendExternalOfNothingIsIgnored) {
  Buffer b;
  b.appendExternal("x", 0);
  EXPECT_TRUE(b.empty());
  EXPECT_FALSE(b.hasExternal());
}

struct DrainCase {
  std::vector<size_t> drains;  // successive drain() amounts
};

void PrintTo(const DrainCase& c, std::ostream* os) {
  for (size_t n : c.drains) *os << "drain(" << n << ") ";
}

class BufferDrainTest : public ::testing::TestWithParam<DrainCase> {};

// Segments: owned "abcde", external "FGHIJ", then owned data spanning two slices.
TEST_P(BufferDrainTest, PeekAndDrainFollowPartialSegments) {
  const std::string ext = "FGHIJ";
  const std::string big = pattern(kSliceSize + 10, 3);
  Buffer b;
  b.append("abcde");
  b.appendExternal(ext.data(), ext.size());
  b.append(big);
  std::string expected = "abcde" + ext + big;
  for (size_t n : GetParam().drains) {
    b.drain(n);
    expected.erase(0, n);
    ASSERT_EQ(b.size(), expected.size()) << "after drain(" << n << ")";
    ASSERT_EQ(b.toString(), expected) << "after drain(" << n << ")";
    ASSERT_EQ(iovecsToString(b), expected) << "after drain(" << n << ")";
    if (!expected.empty()) {
      iovec iov[1];
      ASSERT_EQ(b.peek(iov, 1), 1u);
      EXPECT_EQ(*static_cast<const char*>(iov[0].iov_base), expected[0]);
    }
  }
  EXPECT_EQ(b.empty(), expected.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Amounts, BufferDrainTest,
    ::testing::Values(DrainCase{{0}}, DrainCase{{1}}, DrainCase{{5}}, DrainCase{{2, 3}},
                      DrainCase{{3, 4}},                     // into the external segment
                      DrainCase{{10}},                       // exactly both small segments
                      DrainCase{{7, 1, 1, 1}},               // byte by byte over a boundary
                      DrainCase{{11, kSliceSize}},           // up to the last slice
                      DrainCase{{kSliceSize + 9, 10, 1}},    // down to empty
                      DrainCase{{kSliceSize + 20}}));        // all at once

TEST(BufferTest, ManySmallDrainsKeepContentsRight) {
  // Enough segments that the drained front of the queue gets compacted away.
  std::string expected;
  std::vector<std::string> externals;
  externals.reserve(100);
  Buffer b;
  for (int i = 0; i < 100; ++i) {
    externals.push_back("ext" + std::to_string(i) + ";");
    b.appendExternal(externals.back().data(), externals.back().size());
    expected += externals.back();
  }
  while (expected.size() > 7) {
    b.drain(7);
    expected.erase(0, 7);
    ASSERT_EQ(b.toString(), expected);
  }
  b.internalize();
  EXPECT_EQ(b.toString(), expected);
}

TEST(BufferTest, MoveFromAppendsEverythingAndEmptiesTheSource) {
  std::string ext = "external";
  Buffer src;
  src.append(pattern(kSliceSize + 5));
  src.appendExternal(ext.data(), ext.size());
  src.append("end");
  Buffer dst;
  dst.append("start:");
  dst.moveFrom(src);
  const std::string expected = "start:" + pattern(kSliceSize + 5) + ext + "end";
  EXPECT_EQ(dst.toString(), expected);
  EXPECT_EQ(dst.size(), expected.size());
  EXPECT_TRUE(dst.hasExternal());
  EXPECT_TRUE(src.empty());
  EXPECT_EQ(src.size(), 0u);
  EXPECT_FALSE(src.hasExternal());
  EXPECT_EQ(iovecCount(src), 0u);
  // Both stay usable.
  src.append("again");
  dst.append("+more");
  EXPECT_EQ(src.toString(), "again");
  EXPECT_EQ(dst.toString(), expected + "+more");
  dst.internalize();
  EXPECT_EQ(dst.toString(), expected + "+more");
}

TEST(BufferTest, AppendViewsSharesTheBytesUntilInternalizeAndKeepsTheSource) {
  std::string ext = "external";
  Buffer src;
  src.append("dropped:");
  src.append(pattern(kSliceSize + 5));
  src.appendExternal(ext.data(), ext.size());
  src.drain(8);  // a drained front is not viewed
  const std::string expected = pattern(kSliceSize + 5) + ext;
  Buffer dst;
  dst.append("start:");
  dst.appendViews(src);
  dst.appendViews(src);  // the source can be sent again, as a retried request head is
  EXPECT_EQ(dst.toString(), "start:" + expected + expected);
  EXPECT_TRUE(dst.hasExternal());
  EXPECT_EQ(src.toString(), expected);
  dst.internalize();  // from here on dst owns copies
  EXPECT_FALSE(dst.hasExternal());
  ext.assign(ext.size(), '#');
  src.clear();
  EXPECT_EQ(dst.toString(), "start:" + pattern(kSliceSize + 5) + "external" +
                                pattern(kSliceSize + 5) + "external");
}

TEST(BufferTest, MoveFromEmptyBufferChangesNothing) {
  Buffer src;
  Buffer dst;
  dst.append("x");
  dst.moveFrom(src);
  EXPECT_EQ(dst.toString(), "x");
  EXPECT_TRUE(src.empty());
}

TEST(BufferTest, ClearReturnsEverySliceToThePool) {
  emptyLocalPool();
  SlicePool& pool = SlicePool::local();
  std::string ext = "ext";
  {
    Buffer b;
    b.append(pattern(2 * kSliceSize + 1));  // three slices
    b.appendExternal(ext.data(), ext.size());
    EXPECT_EQ(pool.freeCount(), 0u);
    b.clear();
    EXPECT_EQ(pool.freeCount(), 3u);
    EXPECT_TRUE(b.empty());
    EXPECT_FALSE(b.hasExternal());
    EXPECT_EQ(iovecCount(b), 0u);
    // The next append reuses a pooled slice.
    b.append("reuse");
    EXPECT_EQ(pool.freeCount(), 2u);
  }
  // The destructor gives it back too.
  EXPECT_EQ(pool.freeCount(), 3u);
}

TEST(SlicePoolTest, ReleasesWhatAWholePeriodLeftUnused) {
  emptyLocalPool();
  SlicePool& pool = SlicePool::local();
  pool.releaseUnused();  // a period starts now, with an empty pool
  // A burst of 5, then steady traffic that never needs more than 2 at once.
  std::vector<Slice*> burst;
  for (int i = 0; i < 5; ++i) burst.push_back(pool.acquire());
  for (Slice* s : burst) pool.release(s);
  EXPECT_EQ(pool.releaseUnused(), 0u);  // the burst itself was this period: all were used
  for (int period = 0; period < 2; ++period) {
    Slice* a = pool.acquire();
    Slice* b = pool.acquire();
    a->data[0] = 'a';
    pool.release(b);
    pool.release(a);
    // 3 stayed free the whole period in the first; none were left over in the second.
    EXPECT_EQ(pool.releaseUnused(), period == 0 ? 3u : 0u);
    EXPECT_EQ(pool.freeCount(), 2u);
  }
  // The slices kept are the ones traffic uses: the last released comes out first.
  Slice* first = pool.acquire();
  EXPECT_EQ(first->data[0], 'a');
  pool.release(first);
  // A quiet period gives back everything.
  EXPECT_EQ(pool.releaseUnused(), 1u);  // the acquire above touched one; one stayed below it
  EXPECT_EQ(pool.releaseUnused(), 1u);
  EXPECT_EQ(pool.freeCount(), 0u);
}

TEST(BufferTest, DrainingEverythingReleasesTheSlices) {
  emptyLocalPool();
  SlicePool& pool = SlicePool::local();
  Buffer b;
  b.append(pattern(kSliceSize + 1));
  b.drain(kSliceSize);
  EXPECT_EQ(pool.freeCount(), 1u);  // the first slice, fully drained
  b.drain(1);
  EXPECT_EQ(pool.freeCount(), 2u);  // an empty Buffer holds no slice
  EXPECT_TRUE(b.empty());
}

TEST(BufferTest, MovedSlicesAreReleasedOnceByTheirNewOwner) {
  emptyLocalPool();
  SlicePool& pool = SlicePool::local();
  {
    Buffer dst;
    {
      Buffer src;
      src.append(pattern(kSliceSize + 1));
      dst.moveFrom(src);
    }
    EXPECT_EQ(pool.freeCount(), 0u);  // src's destructor released nothing
  }
  EXPECT_EQ(pool.freeCount(), 2u);
}

// ---------------------------------------------------------------------------------------
// InputBlock

void fill(InputBlock& block, size_t limit, unsigned seed, std::string& mirror) {
  size_t n = 0;
  char* p = block.writable(&n, limit);
  ASSERT_NE(p, nullptr);
  std::string bytes = pattern(n, seed);
  std::memcpy(p, bytes.data(), n);
  block.added(n);
  mirror += bytes;
}

std::string contents(const InputBlock& block) { return std::string(block.data(), block.length()); }

TEST(InputBlockTest, StartsUnallocatedAndTakesOneSliceOnFirstWrite) {
  InputBlock block;
  EXPECT_FALSE(block.allocated());
  EXPECT_EQ(block.capacity(), 0u);
  size_t n = 0;
  ASSERT_NE(block.writable(&n, 64 * 1024), nullptr);
  EXPECT_TRUE(block.allocated());
  EXPECT_EQ(n, kSliceSize);
  EXPECT_EQ(block.capacity(), kSliceSize);
}

TEST(InputBlockTest, WritableReturnsTheRestOfAPartlyFilledBlock) {
  InputBlock block;
  size_t n = 0;
  char* p = block.writable(&n, kSliceSize);
  std::memcpy(p, "hello", 5);
  block.added(5);
  char* q = block.writable(&n, kSliceSize);
  EXPECT_EQ(q, p + 5);
  EXPECT_EQ(n, kSliceSize - 5);
}

TEST(InputBlockTest, GrowsWhenFullUpToTheLimitKeepingContent) {
  const size_t limit = 3 * kSliceSize + 1000;  // not a power-of-two multiple
  InputBlock block;
  std::string mirror;
  fill(block, limit, 1, mirror);
  EXPECT_EQ(block.capacity(), kSliceSize);
  fill(block, limit, 2, mirror);  // full: doubles
  EXPECT_EQ(block.capacity(), 2 * kSliceSize);
  EXPECT_EQ(contents(block), mirror);
  fill(block, limit, 3, mirror);  // doubling would pass the limit: stops at it
  EXPECT_EQ(block.capacity(), limit);
  EXPECT_EQ(block.length(), limit);
  EXPECT_EQ(contents(block), mirror);
  size_t n = 123;
  EXPECT_EQ(block.writable(&n, limit), nullptr);  // full at the limit
  EXPECT_EQ(contents(block), mirror);
}

TEST(InputBlockTest, FullSliceAtALimitBelowItsSizeCannotGrow) {
  InputBlock block;
  std::string mirror;
  fill(block, kSliceSize, 1, mirror);
  size_t n = 0;
  EXPECT_EQ(block.writable(&n, kSliceSize / 2), nullptr);
  EXPECT_EQ(contents(block), mirror);
}

TEST(InputBlockTest, FullBlockWithConsumedBytesCompactsInsteadOfGrowing) {
  InputBlock block;
  std::string mirror;
  fill(block, 4 * kSliceSize, 1, mirror);
  block.consume(100);
  size_t n = 0;
  char* p = block.writable(&n, 4 * kSliceSize);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(block.capacity(), kSliceSize);
  EXPECT_EQ(n, 100u);
  EXPECT_EQ(block.consumed(), 0u);
  EXPECT_EQ(contents(block), mirror.substr(100));
}

TEST(InputBlockTest, CompactMovesUnconsumedBytesToTheFront) {
  InputBlock block;
  size_t n = 0;
  char* p = block.writable(&n, kSliceSize);
  std::memcpy(p, "GET / HTTP/1.1\r\n\r\nPOST", 22);
  block.added(22);
  block.consume(18);
  EXPECT_EQ(block.unconsumed(), 4u);
  block.compact();
  EXPECT_TRUE(block.allocated());
  EXPECT_EQ(block.consumed(), 0u);
  EXPECT_EQ(block.length(), 4u);
  EXPECT_EQ(contents(block), "POST");
}

TEST(InputBlockTest, CompactWithNothingConsumedKeepsTheBlock) {
  InputBlock block;
  size_t n = 0;
  std::memcpy(block.writable(&n, kSliceSize), "abc", 3);
  block.added(3);
  block.compact();
  EXPECT_EQ(contents(block), "abc");
}

TEST(InputBlockTest, CompactWhenEverythingIsConsumedReleasesTheSlice) {
  emptyLocalPool();
  InputBlock block;
  size_t n = 0;
  std::memcpy(block.writable(&n, kSliceSize), "abc", 3);
  block.added(3);
  block.consume(3);
  block.compact();
  EXPECT_FALSE(block.allocated());
  EXPECT_EQ(block.capacity(), 0u);
  EXPECT_EQ(block.length(), 0u);
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
}

TEST(InputBlockTest, ReleaseOfAGrownBlockFreesItAndReturnsNoSlice) {
  emptyLocalPool();
  InputBlock block;
  std::string mirror;
  fill(block, 2 * kSliceSize, 1, mirror);
  fill(block, 2 * kSliceSize, 2, mirror);  // moved to a heap block; the slice went back
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
  block.release();
  EXPECT_FALSE(block.allocated());
  EXPECT_EQ(block.capacity(), 0u);
  EXPECT_EQ(block.length(), 0u);
  EXPECT_EQ(block.consumed(), 0u);
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
  // Usable again from scratch.
  size_t n = 0;
  ASSERT_NE(block.writable(&n, kSliceSize), nullptr);
  EXPECT_EQ(n, kSliceSize);
  EXPECT_EQ(SlicePool::local().freeCount(), 0u);
}

TEST(InputBlockTest, ReserveBulkGivesAnEmptyBlockOneLargeHeapBlockTakingNoSlice) {
  emptyLocalPool();
  SlicePool::local().release(SlicePool::local().acquire());
  InputBlock block;
  block.reserveBulk();
  size_t n = 0;
  char* p = block.writable(&n, kSliceSize);  // the limit only bounds growth
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(n, kBulkBlockSize);
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
  std::memset(p, 'x', n);
  block.added(n);
  block.consume(n);
  block.compact();  // all consumed: freed, as a grown block is
  EXPECT_FALSE(block.allocated());
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
}

TEST(InputBlockTest, ReserveBulkKeepsABlockAlreadyInUse) {
  InputBlock block;
  size_t n = 0;
  std::memcpy(block.writable(&n, kSliceSize), "abc", 3);
  block.added(3);
  block.reserveBulk();
  EXPECT_EQ(block.capacity(), kSliceSize);
  EXPECT_EQ(std::string_view(block.data(), block.length()), "abc");
}

TEST(InputBlockTest, DestructorReturnsTheSlice) {
  emptyLocalPool();
  {
    InputBlock block;
    size_t n = 0;
    ASSERT_NE(block.writable(&n, kSliceSize), nullptr);
    EXPECT_EQ(SlicePool::local().freeCount(), 0u);
  }
  EXPECT_EQ(SlicePool::local().freeCount(), 1u);
}

TEST(BufferTest, AppendFieldLineWritesNameColonValueCrlf) {
  Buffer b;
  b.append("HTTP/1.1 200 OK\r\n");
  b.appendFieldLine("Content-Type", "text/plain");
  b.appendFieldLine("X-Empty", "");
  b.appendFieldLine("", "odd");
  EXPECT_EQ(b.toString(), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty: \r\n: odd\r\n");
}

TEST(BufferTest, AppendFieldLineAcrossASliceBoundaryAndBehindAnExternalSegment) {
  const std::string value = pattern(kSliceSize);  // never fits behind the tail
  std::string ext = "external";
  Buffer b;
  b.append(pattern(kSliceSize - 3));  // 3 bytes of room: the line spills into a new slice
  b.appendFieldLine("Name", "v");
  b.appendExternal(ext.data(), ext.size());  // no tail room after it
  b.appendFieldLine("Long", value);
  EXPECT_EQ(b.toString(), pattern(kSliceSize - 3) + "Name: v\r\n" + ext + "Long: " + value + "\r\n");
  EXPECT_EQ(b.size(), b.toString().size());
}

}  // namespace
}  // namespace gw
