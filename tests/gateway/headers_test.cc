#include "gateway/headers.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gw {
namespace {

bool pointsInto(std::string_view view, const std::string& storage) {
  return view.data() >= storage.data() && view.data() + view.size() <= storage.data() + storage.size();
}

// ---------------------------------------------------------------------------------------
// StringArena

TEST(StringArenaTest, FreshArenaHoldsNoMemory) {
  StringArena arena;
  EXPECT_EQ(arena.capacity(), 0u);
}

TEST(StringArenaTest, CopiesStayValidAcrossNewBlocks) {
  StringArena arena;
  std::vector<std::string> originals;
  std::vector<std::string_view> copies;
  for (int i = 0; i < 500; ++i) {
    originals.push_back("value-" + std::to_string(i) + std::string(size_t(i % 37), 'x'));
    copies.push_back(arena.copy(originals.back()));
  }
  EXPECT_GT(arena.capacity(), 1024u);  // several blocks by now
  for (size_t i = 0; i < originals.size(); ++i) {
    ASSERT_EQ(copies[i], originals[i]) << i;
    EXPECT_NE(copies[i].data(), originals[i].data());
  }
}

TEST(StringArenaTest, CopyOfAnEmptyStringIsEmptyAndAllocatesNothing) {
  StringArena arena;
  EXPECT_TRUE(arena.copy("").empty());
  EXPECT_EQ(arena.capacity(), 0u);
}

TEST(StringArenaTest, AllocationsDoNotOverlap) {
  StringArena arena;
  char* a = arena.allocate(10);
  char* b = arena.allocate(10);
  std::memset(a, 'a', 10);
  std::memset(b, 'b', 10);
  EXPECT_EQ(std::string(a, 10), std::string(10, 'a'));
  EXPECT_EQ(std::string(b, 10), std::string(10, 'b'));
}

TEST(StringArenaTest, ResetKeepsOneBlockAndReusesIt) {
  StringArena arena;
  for (int i = 0; i < 100; ++i) arena.allocate(100);  // 10,000 bytes over several blocks
  size_t grown = arena.capacity();
  ASSERT_GT(grown, 4096u);
  arena.reset();
  size_t kept = arena.capacity();
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, grown);
  // The kept block is the largest: a request of the same size as that block fits in it
  // without allocating.
  char* p = arena.allocate(kept);
  std::memset(p, 'z', kept);
  EXPECT_EQ(arena.capacity(), kept);
  arena.reset();
  EXPECT_EQ(arena.capacity(), kept);
}

TEST(StringArenaTest, ResetOfASingleBlockKeepsIt) {
  StringArena arena;
  arena.copy("abc");
  size_t cap = arena.capacity();
  arena.reset();
  EXPECT_EQ(arena.capacity(), cap);
  arena.copy("def");
  EXPECT_EQ(arena.capacity(), cap);
}

TEST(StringArenaTest, BigAllocationGetsABlockOfItsOwnSize) {
  StringArena arena;
  arena.copy("small");
  const size_t big = 1 << 20;
  char* p = arena.allocate(big);
  std::memset(p, 'q', big);  // the whole range is writable (ASan checks)
  EXPECT_GE(arena.capacity(), big);
  std::string_view after = arena.copy("after");
  EXPECT_EQ(after, "after");
  EXPECT_EQ(p[big - 1], 'q');  // not overwritten by the next copy
  arena.reset();
  size_t kept = arena.capacity();
  EXPECT_GE(kept, big);  // the largest block is the one kept
  char* again = arena.allocate(big);
  std::memset(again, 'r', big);
  EXPECT_EQ(arena.capacity(), kept);  // and it serves the same allocation again
}

// ---------------------------------------------------------------------------------------
// HeaderList

TEST(HeaderListTest, LookupsIgnoreAsciiCase) {
  HeaderList h;
  h.addRef("Content-Type", "text/plain");
  h.addRef("X-Forwarded-For", "1.2.3.4");
  h.addRef("x-forwarded-for", "5.6.7.8");
  struct Case {
    std::string_view name;
    bool has;
    size_t count;
    std::string_view first;
  };
  const Case cases[] = {
      {"content-type", true, 1, "text/plain"},
      {"CONTENT-TYPE", true, 1, "text/plain"},
      {"Content-type", true, 1, "text/plain"},
      {"x-forwarded-for", true, 2, "1.2.3.4"},
      {"X-FORWARDED-FOR", true, 2, "1.2.3.4"},
      {"content-typ", false, 0, ""},
      {"content-type ", false, 0, ""},
      {"", false, 0, ""},
      {"host", false, 0, ""},
  };
  for (const Case& c : cases) {
    bool found = !c.has;
    EXPECT_EQ(h.get(c.name, &found), c.first) << c.name;
    EXPECT_EQ(found, c.has) << c.name;
    EXPECT_EQ(h.has(c.name), c.has) << c.name;
    EXPECT_EQ(h.count(c.name), c.count) << c.name;
  }
}

TEST(HeaderListTest, CaseFoldingIsAsciiOnly) {
  // Bytes that differ by 0x20 outside A-Z are different characters.
  HeaderList h;
  h.addRef("x-a[", "1");
  EXPECT_FALSE(h.has("X-A{"));
  EXPECT_FALSE(h.has("x-a\x7b"));
  EXPECT_TRUE(h.has("X-A["));
  EXPECT_TRUE(equalsIgnoreCase("ABC-xyz", "abc-XYZ"));
  EXPECT_FALSE(equalsIgnoreCase("@", "`"));  // 0x40 and 0x60
}

TEST(HeaderListTest, GetWithoutFoundFlagAndEmptyValue) {
  HeaderList h;
  h.addRef("X-Empty", "");
  bool found = false;
  EXPECT_EQ(h.get("x-empty", &found), "");
  EXPECT_TRUE(found);  // present with an empty value is not absent
  EXPECT_TRUE(h.has("x-empty"));
  EXPECT_EQ(h.get("x-missing"), "");
}

TEST(HeaderListTest, SetReplacesEveryFieldOfThatNameAtTheEnd) {
  StringArena arena;
  HeaderList h(&arena);
  h.addRef("Via", "1");
  h.addRef("X-A", "one");
  h.addRef("Host", "h");
  h.addRef("x-a", "two");
  h.set("X-a", "three");
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].name, "Via");
  EXPECT_EQ(h[1].name, "Host");
  EXPECT_EQ(h[2].name, "X-a");
  EXPECT_EQ(h[2].value, "three");
  EXPECT_EQ(h.count("x-a"), 1u);
}

TEST(HeaderListTest, RemoveReturnsHowManyAndKeepsTheOrderOfTheRest) {
  HeaderList h;
  for (const char* n : {"A", "b", "B", "c", "b", "D"}) h.addRef(n, n);
  EXPECT_EQ(h.remove("B"), 3u);
  EXPECT_EQ(h.remove("B"), 0u);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].name, "A");
  EXPECT_EQ(h[1].name, "c");
  EXPECT_EQ(h[2].name, "D");
}

TEST(HeaderListTest, RemoveAnyTakesEveryNamedFieldInOnePassAndKeepsTheOrder) {
  HeaderList h;
  for (const char* n : {"Server", "date", "X-Powered-By", "server", "Vary", "X-POWERED-BY"}) {
    h.addRef(n, n);
  }
  const std::vector<std::string> hidden = {"server", "x-powered-by"};
  EXPECT_EQ(h.removeAny(hidden), 4u);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].name, "date");
  EXPECT_EQ(h[1].name, "Vary");
  constexpr std::string_view none[] = {"Server", "Missing"};
  EXPECT_EQ(h.removeAny(none), 0u);
  EXPECT_EQ(h.removeAny(std::vector<std::string>{}), 0u);
  EXPECT_EQ(h.size(), 2u);
}

TEST(HeaderListTest, AddCopiesIntoTheArena) {
  StringArena arena;
  HeaderList h(&arena);
  std::string name = "X-Request-ID";
  std::string value = "abc-123";
  h.add(name, value);
  EXPECT_FALSE(pointsInto(h[0].name, name));
  EXPECT_FALSE(pointsInto(h[0].value, value));
  name.assign(name.size(), '#');  // the caller's memory is reused
  value.assign(value.size(), '#');
  EXPECT_EQ(h.get("x-request-id"), "abc-123");
  EXPECT_EQ(h[0].name, "X-Request-ID");
}

TEST(HeaderListTest, SetCopiesIntoTheArena) {
  StringArena arena;
  HeaderList h(&arena);
  std::string value = "first";
  h.set("X-A", value);
  value = "#####";
  EXPECT_EQ(h.get("x-a"), "first");
}

TEST(HeaderListTest, AddRefAndSetRefKeepTheCallersViews) {
  StringArena arena;
  HeaderList h(&arena);
  const std::string head = "Host: example.com";
  std::string_view name(head.data(), 4);
  std::string_view value(head.data() + 6, 11);
  h.addRef(name, value);
  EXPECT_EQ(h[0].name.data(), head.data());
  EXPECT_EQ(h[0].value.data(), head.data() + 6);
  EXPECT_EQ(arena.capacity(), 0u);  // nothing copied
  static const std::string kConfigValue = "from-config";
  h.setRef("host", kConfigValue);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].value.data(), kConfigValue.data());
}

TEST(HeaderListTest, AddWithoutAnArenaKeepsViews) {
  HeaderList h;
  static const std::string kValue = "v";
  h.add("X", kValue);
  EXPECT_EQ(h[0].value.data(), kValue.data());
}

TEST(HeaderListTest, KeepsInsertionOrderAndClears) {
  HeaderList h;
  EXPECT_TRUE(h.empty());
  h.addRef("Z", "1");
  h.addRef("A", "2");
  h.addRef("M", "3");
  std::string order;
  for (const Header& f : h) order += std::string(f.name) + "=" + std::string(f.value) + ";";
  EXPECT_EQ(order, "Z=1;A=2;M=3;");
  h.clear();
  EXPECT_TRUE(h.empty());
  EXPECT_FALSE(h.has("z"));
}

}  // namespace
}  // namespace gw
