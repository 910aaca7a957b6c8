// The bounded LRU map every client-keyed cache uses: it never holds more
// than its maximum, forgets the least recently used key first, and lets an
// owner skip entries that are in use when it evicts for its own reasons.
#include "common/lru_cache.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace diablo {
namespace {

std::vector<std::string> KeysOldestFirst(const LruCache<std::string, int>& cache) {
  std::vector<std::string> keys;
  cache.ForEachOldestFirst([&](const std::string& key, int) { keys.push_back(key); });
  return keys;
}

TEST(LruCache, NeverHoldsMoreThanItsMaximumWhateverIsInserted) {
  LruCache<std::string, int> cache(3);
  for (int i = 0; i < 10000; ++i) cache.Put("key-" + std::to_string(i), i);
  EXPECT_EQ(cache.size(), 3u);
  // The three newest survive.
  EXPECT_EQ(KeysOldestFirst(cache), (std::vector<std::string>{"key-9997", "key-9998", "key-9999"}));
  EXPECT_EQ(cache.Get("key-0"), nullptr);
}

TEST(LruCache, AReadMakesAKeyRecentSoTheOtherOneGoes) {
  LruCache<std::string, int> cache(2);
  cache.Put("a", 1);
  cache.Put("b", 2);
  ASSERT_NE(cache.Get("a"), nullptr);  // a is now the most recent
  cache.Put("c", 3);
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_FALSE(cache.Contains("b"));
  EXPECT_TRUE(cache.Contains("c"));
}

TEST(LruCache, PeekDoesNotRefresh) {
  LruCache<std::string, int> cache(2);
  cache.Put("a", 1);
  cache.Put("b", 2);
  ASSERT_NE(cache.Peek("a"), nullptr);
  EXPECT_EQ(*cache.Peek("a"), 1);
  cache.Put("c", 3);
  EXPECT_FALSE(cache.Contains("a")) << "Peek must not have made a recent";
}

TEST(LruCache, PutReplacesWithoutGrowingAndRefreshes) {
  LruCache<std::string, int> cache(2);
  cache.Put("a", 1);
  cache.Put("b", 2);
  cache.Put("a", 10);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(*cache.Get("a"), 10);
  cache.Put("c", 3);
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_FALSE(cache.Contains("b"));
}

TEST(LruCache, EraseForgetsAndFreesRoom) {
  LruCache<std::string, int> cache(2);
  cache.Put("a", 1);
  cache.Put("b", 2);
  EXPECT_TRUE(cache.Erase("a"));
  EXPECT_FALSE(cache.Erase("a"));
  cache.Put("c", 3);
  EXPECT_TRUE(cache.Contains("b")) << "erasing made room: nothing else is evicted";
  EXPECT_EQ(cache.size(), 2u);
}

TEST(LruCache, PopOldestIfSkipsEntriesInUse) {
  LruCache<std::string, int> cache(10);
  cache.Put("old-in-use", 1);  // odd values are "in use"
  cache.Put("old-free", 2);
  cache.Put("new-free", 4);
  auto free_only = [](const std::string&, int value) { return value % 2 == 0; };
  auto first = cache.PopOldestIf(free_only);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->first, "old-free");
  EXPECT_EQ(first->second, 2);
  auto second = cache.PopOldestIf(free_only);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->first, "new-free");
  EXPECT_FALSE(cache.PopOldestIf(free_only).has_value());
  EXPECT_EQ(KeysOldestFirst(cache), (std::vector<std::string>{"old-in-use"}));
  // The index agrees with the order after popping from the middle.
  EXPECT_FALSE(cache.Contains("old-free"));
  EXPECT_EQ(cache.Get("new-free"), nullptr);
}

TEST(LruCache, AZeroMaximumStillHoldsOneEntry) {
  LruCache<int, int> cache(0);
  cache.Put(1, 1);
  cache.Put(2, 2);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(cache.Contains(2));
}

}  // namespace
}  // namespace diablo
