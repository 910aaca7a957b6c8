// A map with a fixed maximum number of entries that forgets the least
// recently used one to make room: for every in-memory cache or table keyed
// by what clients send (peers, tokens, model paths), so that no stream of
// new keys can grow the process without bound.
//
// Not thread-safe: the owner holds its own lock around every call.  Keys are
// kept in a std::map (ordered, O(log n)) rather than a hash table, so keys an
// attacker chooses cannot degrade it by colliding.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <optional>
#include <utility>

namespace diablo {

template <typename Key, typename Value>
class LruCache {
 public:
  // REQUIRES: max_entries > 0.
  explicit LruCache(size_t max_entries) : max_entries_(max_entries > 0 ? max_entries : 1) {}

  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;

  // The value under `key`, which becomes the most recently used; nullptr when
  // absent.  The pointer is valid until the next call that inserts or erases.
  Value* Get(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);  // to the front
    return &it->second->second;
  }

  // The value under `key` without making it more recent; nullptr when absent.
  const Value* Peek(const Key& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &it->second->second;
  }

  bool Contains(const Key& key) const { return index_.count(key) != 0; }

  // Inserts or replaces the value under `key`, which becomes the most
  // recently used; a new key in a full cache first evicts the least recently
  // used entry.  Returns the stored value (valid as Get's).
  Value& Put(const Key& key, Value value) {
    if (Value* existing = Get(key)) {
      *existing = std::move(value);
      return *existing;
    }
    if (index_.size() >= max_entries_) EraseOldest();
    order_.emplace_front(key, std::move(value));
    index_.emplace(key, order_.begin());
    return order_.front().second;
  }

  // True when `key` was there.
  bool Erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    order_.erase(it->second);
    index_.erase(it);
    return true;
  }

  // Removes and returns the least recently used entry for which
  // `evictable(key, value)` holds (entries in use can say no); nullopt when
  // none does.  For caches bounded by something other than a count (bytes).
  template <typename Predicate>
  std::optional<std::pair<Key, Value>> PopOldestIf(Predicate evictable) {
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
      if (!evictable(it->first, it->second)) continue;
      std::pair<Key, Value> entry = std::move(*it);
      index_.erase(entry.first);
      order_.erase(std::next(it).base());
      return entry;
    }
    return std::nullopt;
  }

  // Calls `visit(key, value)` from the least to the most recently used,
  // without changing the order.
  template <typename Visitor>
  void ForEachOldestFirst(Visitor visit) const {
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) visit(it->first, it->second);
  }

  size_t size() const { return index_.size(); }
  bool empty() const { return index_.empty(); }
  size_t max_entries() const { return max_entries_; }
  void Clear() {
    index_.clear();
    order_.clear();
  }

 private:
  using Order = std::list<std::pair<Key, Value>>;  // most recently used first

  void EraseOldest() {
    index_.erase(order_.back().first);
    order_.pop_back();
  }

  const size_t max_entries_;
  Order order_;
  std::map<Key, typename Order::iterator> index_;
};

}  // namespace diablo
